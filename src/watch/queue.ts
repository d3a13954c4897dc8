// A bounded async queue between a producer that must never block (the
// notification hub) and one consumer (a stream writing to a client).
export class BoundedQueue<T> {
  private items: T[] = [];
  private waiter: (() => void) | undefined;
  overflowed = false;
  /** Called once, when the queue overflows. */
  onOverflow: (() => void) | undefined;

  constructor(readonly limit: number) {}

  get size(): number {
    return this.items.length;
  }

  /** Adds items; past the limit, drops everything and marks the queue overflowed. */
  push(items: readonly T[]): boolean {
    if (this.overflowed) return false;
    if (this.items.length + items.length > this.limit) {
      this.overflowed = true;
      this.items = [];
      this.onOverflow?.();
    } else {
      for (const item of items) this.items.push(item);
    }
    this.waiter?.();
    return !this.overflowed;
  }

  /** Takes everything queued, waiting until something is (or the signal aborts). */
  async takeAll(signal: AbortSignal): Promise<T[]> {
    while (this.items.length === 0 && !this.overflowed) {
      if (signal.aborted) throw signal.reason;
      await new Promise<void>((resolve) => {
        const done = () => {
          this.waiter = undefined;
          signal.removeEventListener("abort", done);
          resolve();
        };
        this.waiter = done;
        signal.addEventListener("abort", done, { once: true });
      });
    }
    const out = this.items;
    this.items = [];
    return out;
  }
}
