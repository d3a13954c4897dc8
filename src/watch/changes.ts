// Task changes for WatchTasks: the snapshots of every task that changed,
// pushed to each WatchTasks subscriber (who filters).
//
// Contract:
// - changed() queues the ids of tasks notified as changed; one read at a
//   time turns them into snapshots (1000 a query) for every subscriber;
// - reconnected(since) also re-reads the tasks changed since `since`
//   (notifications may have been lost while nobody listened);
// - a failed read keeps its ids, and the re-read, pending for the shared
//   RetryTimer: a failure delays snapshots but never drops them while
//   anyone subscribes. With no subscriber, nothing is kept: a new one reads
//   its initial set itself.
import type { Sql } from "../db/connect.js";
import type { Micros } from "../core/time.js";
import type { Task } from "../core/domain.js";
import type { Logger } from "../core/log.js";
import type { WatchCounters } from "../metrics/watchCounters.js";
import { tasksChangedSince, tasksGetByIds } from "../store/tasks.js";
import { READ_BATCH } from "./feeds.js";
import { BoundedQueue } from "./queue.js";
import { bounded, type RetryTimer } from "./reads.js";

export interface ChangesSubscription {
  events: BoundedQueue<Task>;
  close(): void;
}

export interface ChangesOptions {
  sql: Sql;
  log: Logger;
  bufferLimit: number;
  retries: RetryTimer;
  counters: WatchCounters;
}

export class TaskChanges {
  private readonly queues = new Set<BoundedQueue<Task>>();
  private readonly pending = new Set<string>();
  /** Re-read the tasks changed since this time (after a reconnect). */
  private since: Micros | undefined;
  private reading = false;
  private failed = false;
  private readonly retry = () => {
    this.failed = false;
    void this.read();
  };

  constructor(private readonly o: ChangesOptions) {}

  get subscribed(): boolean {
    return this.queues.size > 0;
  }

  subscribe(): ChangesSubscription {
    const events = new BoundedQueue<Task>(this.o.bufferLimit);
    this.queues.add(events);
    return { events, close: () => this.queues.delete(events) };
  }

  changed(taskIds: Iterable<string>): void {
    if (!this.subscribed) return;
    for (const id of taskIds) this.pending.add(id);
    void this.read();
  }

  reconnected(since: Micros): void {
    if (!this.subscribed) return;
    this.rereadSince(since);
    void this.read();
  }

  private rereadSince(since: Micros | undefined): void {
    if (since !== undefined && (this.since === undefined || since < this.since)) this.since = since;
  }

  private async read(): Promise<void> {
    if (this.reading || this.failed) return;
    this.reading = true;
    let ids: string[] = [];
    let since: Micros | undefined;
    try {
      while (this.subscribed) {
        since = this.since;
        this.since = undefined;
        if (since !== undefined) {
          const from = since;
          for (const id of await bounded((signal) => tasksChangedSince(this.o.sql, { since: from, signal }))) this.pending.add(id);
          since = undefined;
        }
        if (this.pending.size === 0) break;
        ids = [...this.pending].slice(0, READ_BATCH);
        for (const id of ids) this.pending.delete(id);
        const taskIds = ids;
        this.o.counters.feedRead();
        const tasks = await bounded((signal) => tasksGetByIds(this.o.sql, { taskIds, signal }));
        ids = [];
        for (const queue of this.queues) queue.push(tasks);
        this.o.retries.succeeded();
      }
      if (!this.subscribed) {
        this.pending.clear();
        this.since = undefined;
      }
    } catch (err) {
      for (const id of ids) this.pending.add(id);
      this.rereadSince(since);
      this.failed = true;
      this.o.log.warn({ err, attempt: this.o.retries.attempt }, "reading changed tasks for WatchTasks failed; retrying");
      this.o.retries.later(this.retry);
    } finally {
      this.reading = false;
    }
  }
}
