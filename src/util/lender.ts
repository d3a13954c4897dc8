// Lends a fixed set of resources to one borrower at a time each, first come
// first served; a borrower whose call ends while it waits leaves the queue.
import { abortError } from "../core/errors.js";

interface Waiter<T> {
  resolve(x: T): void;
  reject(err: unknown): void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

export class Lender<T> {
  private readonly free: T[];
  private readonly waiting: Waiter<T>[] = [];
  private closed: (() => Error) | undefined;
  /** Items lent and not yet given back plus items free: the size it was made with. */
  readonly size: number;

  constructor(items: Iterable<T>) {
    this.free = [...items];
    this.size = this.free.length;
  }

  /** Items lent now. */
  get lent(): number {
    return this.size - this.free.length;
  }

  /** Borrowers waiting for an item now. */
  get waiters(): number {
    return this.waiting.length;
  }

  /** The next free item; rejects with the call's abort error if the signal aborts first. */
  acquire(signal?: AbortSignal): Promise<T> {
    if (this.closed) return Promise.reject(this.closed());
    if (signal?.aborted) return Promise.reject(abortError(signal, signal.reason));
    const item = this.free.pop();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise<T>((resolve, reject) => {
      const w: Waiter<T> = { resolve, reject, signal };
      if (signal) {
        w.onAbort = () => {
          this.waiting.splice(this.waiting.indexOf(w), 1);
          reject(abortError(signal, signal.reason));
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.waiting.push(w);
    });
  }

  /** Gives an item back: to the longest waiter, or to the free list. */
  release(item: T): void {
    const w = this.waiting.shift();
    if (!w) return void this.free.push(item);
    if (w.onAbort) w.signal!.removeEventListener("abort", w.onAbort);
    w.resolve(item);
  }

  /** Refuses new borrowers and fails the waiting ones with `error()`. */
  close(error: () => Error): void {
    this.closed = error;
    for (const w of this.waiting.splice(0)) {
      if (w.onAbort) w.signal!.removeEventListener("abort", w.onAbort);
      w.reject(error());
    }
  }
}
