// What a WatchTasks stream has sent: the version of each matching task, so
// that a snapshot older than one already sent is dropped, and a key of what
// it showed, so that a snapshot showing nothing new is not sent again.

/**
 * Versions sent per task. Finished tasks are forgotten `graceMs` after they
 * were recorded, and only while the stream's queue is empty: by then no
 * older snapshot of them can still arrive (the grace exceeds any shared
 * read's bound).
 */
export class SentVersions {
  private readonly versions = new Map<string, { version: bigint; key: string }>();
  /** Finished tasks by the time they were recorded, oldest first. */
  private readonly finishedAt = new Map<string, number>();

  constructor(
    private readonly graceMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.versions.size;
  }

  get(taskId: string): { version: bigint; key: string } | undefined {
    return this.versions.get(taskId);
  }

  record(taskId: string, version: bigint, key: string, finished: boolean): void {
    this.versions.set(taskId, { version, key });
    this.finishedAt.delete(taskId); // re-inserted last: the map stays in time order
    if (finished) this.finishedAt.set(taskId, this.now());
  }

  forget(taskId: string): void {
    this.versions.delete(taskId);
    this.finishedAt.delete(taskId);
  }

  /** Forgets finished tasks recorded more than graceMs ago. */
  evictFinished(): void {
    const limit = this.now() - this.graceMs;
    for (const [taskId, at] of this.finishedAt) {
      if (at > limit) break;
      this.finishedAt.delete(taskId);
      this.versions.delete(taskId);
    }
  }
}
