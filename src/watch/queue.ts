// A bounded async queue between a producer that must never block (the
// notification hub) and one consumer (a stream writing to a client).
//
// The limit bounds how far behind the consumer is, measured by the queue
// itself: a push is refused, and the queue overflows, when `limit` or more
// events are already waiting in it (pushed, not yet taken). A push onto a
// queue holding fewer is accepted whole, however large, so a consumer that
// takes what it was given before the next push arrives is never overflowed
// by the size of one push. The producer keeps pushes small (the hub pushes
// one database read, at most 1000 messages and a snapshot, at a time), so
// the queue never holds more than `limit - 1` + one push.
//
// A consumer that keeps up takes pushes as they happen instead
// (`deliverTo`): while nothing is waiting, a push is handed to it at once,
// inside the producer's call, and never queued.
//
// With a byte budget (budget.ts), a push is also refused when the stream
// holds unsent bytes (queued here, or written to its call and not sent) and
// they reach the stream's byte limit, or all streams' reach the server's.
// A stream with nothing unsent accepts any push.
import type { ByteRefusal, StreamBytes } from "./budget.js";

/** Which limit a queue overflowed at: events, or bytes (the stream's, the server's). */
export type OverflowReason = "events" | ByteRefusal;

/** Thrown by take calls on a queue that has overflowed. */
export class QueueOverflowError extends Error {
  constructor(readonly limit: number) {
    super(`the consumer fell ${limit} or more events behind`);
    this.name = "QueueOverflowError";
  }
}

export class BoundedQueue<T> {
  private items: T[] = [];
  private waiter: (() => void) | undefined;
  overflowed = false;
  private boundSignal: AbortSignal | undefined;
  /** Why it overflowed, once it has. */
  overflowReason: OverflowReason | undefined;
  /** Called once, when the queue overflows. */
  onOverflow: ((reason: OverflowReason) => void) | undefined;
  private consumer: ((items: readonly T[]) => void) | undefined;

  /**
   * @param bytes the stream's byte budget (budget.ts), with `sizeOf` the
   *   estimated bytes of one item; without, only `limit` bounds the queue.
   */
  constructor(
    readonly limit: number,
    readonly bytes?: StreamBytes,
    private readonly sizeOf: (item: T) => number = () => 0,
  ) {}

  get size(): number {
    return this.items.length;
  }

  /**
   * Adds items, unless `limit` or more are already waiting: then drops
   * everything, marks the queue overflowed and returns false (as it does for
   * every later push).
   */
  push(items: readonly T[]): boolean {
    if (this.overflowed) return false;
    if (items.length === 0) return true;
    const refused: OverflowReason | undefined = this.items.length >= this.limit ? "events" : this.bytes?.refusal();
    if (refused) {
      this.overflowed = true;
      this.overflowReason = refused;
      this.items = [];
      this.bytes?.dequeueAll();
      this.onOverflow?.(refused);
    } else if (this.consumer && this.items.length === 0) {
      this.consumer(items);
      return true;
    } else {
      let bytes = 0;
      for (const item of items) {
        this.items.push(item);
        bytes += this.sizeOf(item);
      }
      this.bytes?.queue(bytes);
    }
    this.waiter?.();
    return !this.overflowed;
  }

  /**
   * Takes everything queued without waiting (possibly nothing). Throws the
   * signal's reason once it is aborted, and QueueOverflowError once the queue
   * has overflowed, so a consumer loop can never spin on an empty result.
   */
  takeNow(signal: AbortSignal): T[] {
    if (signal.aborted) throw signal.reason;
    if (this.overflowed) throw new QueueOverflowError(this.limit);
    const out = this.items;
    this.items = [];
    this.bytes?.dequeueAll();
    return out;
  }

  /**
   * While `consumer` is set and nothing is waiting, pushes are handed to it
   * synchronously (it must not throw) instead of being queued; undefined
   * queues them again. Set it only when the queue is empty (after takeNow).
   */
  deliverTo(consumer: ((items: readonly T[]) => void) | undefined): void {
    this.consumer = consumer;
  }

  /** Takes everything queued, waiting until something is; throws as takeNow does. */
  async takeAll(signal: AbortSignal): Promise<T[]> {
    // One abort listener per queue and signal, not one per wait: with 1,000
    // watchers of a task, every message meant 1,000 adds and removes.
    if (this.boundSignal !== signal) {
      this.boundSignal = signal;
      signal.addEventListener("abort", () => this.waiter?.(), { once: true });
    }
    for (;;) {
      const out = this.takeNow(signal);
      if (out.length) return out;
      await new Promise<void>((resolve) => {
        this.waiter = () => {
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }
}
