// The byte budget of watch streams: what each stream holds unsent, and what
// all of them hold together.
//
// Contract:
// - a stream's unsent bytes are the estimated bytes of the events pushed to
//   its queue and not taken yet, plus those it wrote to its call that grpc-js
//   has not yet handed to the HTTP/2 stream's socket (a write's callback,
//   contract/push.ts `Sink.write`). Events a feed pushes to many streams are counted
//   once per stream: the bound is conservative.
// - a push to a stream with nothing unsent is always accepted (the stream
//   keeps up, however large one push is); a push to a stream holding
//   unsent bytes is refused when they are `streamLimit` or more, or when
//   all streams together hold `serverLimit` or more (queue.ts): the stream
//   is ended with RESOURCE_EXHAUSTED WATCH_BUFFER_FULL (endings.ts).
// - close() gives back everything the stream still counts, whatever grpc-js
//   does with the writes it never completes (a cancelled call never calls
//   their callbacks back): memory is given back when streams end.

import type { Task } from "../core/domain.js";

const taskSizes = new WeakMap<Task, number>();

/** Estimated bytes of a task on the wire: its JSON, computed once per task object (the responses' budget, rpc/budget.ts, counts it too). */
export function taskBytes(task: Task): number {
  let n = taskSizes.get(task);
  if (n === undefined) {
    n = JSON.stringify(task, (_k, v) => (typeof v === "bigint" ? v.toString() : v)).length;
    taskSizes.set(task, n);
  }
  return n;
}

export interface WatchByteLimits {
  /** Unsent bytes one stream may hold before its next push is refused. */
  streamBytes: number;
  /** Unsent bytes all streams together may hold before a push to one holding any is refused. */
  serverBytes: number;
}

export const DEFAULT_WATCH_BYTES: WatchByteLimits = { streamBytes: 16 * 1024 * 1024, serverBytes: 256 * 1024 * 1024 };

/** Why a push was refused, when it was refused for bytes. */
export type ByteRefusal = "stream" | "server";

export class WatchBytes {
  /** Unsent bytes of all open streams. */
  used = 0;
  /** Open streams counted. */
  streams = 0;

  constructor(readonly limits: WatchByteLimits = DEFAULT_WATCH_BYTES) {}

  stream(): StreamBytes {
    this.streams++;
    return new StreamBytes(this);
  }
}

export class StreamBytes {
  /** Bytes of the events in the stream's queue. */
  queued = 0;
  /** Bytes written to the call and not yet handed to its socket. */
  written = 0;
  private closed = false;
  private waiter: (() => void) | undefined;

  constructor(private readonly all: WatchBytes) {}

  get unsent(): number {
    return this.queued + this.written;
  }

  get limits(): WatchByteLimits {
    return this.all.limits;
  }

  /** Why a push now would be refused; undefined: it would be accepted. */
  refusal(): ByteRefusal | undefined {
    const unsent = this.unsent;
    if (unsent === 0) return undefined;
    if (unsent >= this.all.limits.streamBytes) return "stream";
    if (this.all.used >= this.all.limits.serverBytes) return "server";
    return undefined;
  }

  queue(bytes: number): void {
    if (this.closed) return;
    this.queued += bytes;
    this.all.used += bytes;
  }

  /** The queue was emptied (taken, or dropped on overflow). */
  dequeueAll(): void {
    this.all.used -= this.queued;
    this.queued = 0;
  }

  /** Counts a write of `bytes`; the returned function, called once the write left, gives them back (once). */
  write(bytes: number): () => void {
    if (this.closed || bytes === 0) return noop;
    this.written += bytes;
    this.all.used += bytes;
    let done = false;
    return () => {
      if (done || this.closed) return;
      done = true;
      this.written -= bytes;
      this.all.used -= bytes;
      if (this.written < this.all.limits.streamBytes / 2) this.waiter?.();
    };
  }

  /**
   * Resolves once what the stream wrote and has not sent is below half its
   * limit (at once if it is), or it closed; rejects with the signal's reason.
   * A stream that reads from the database at its client's pace waits here
   * as well as for the call's "drain" (grpc-js buffers 16 messages whatever
   * their size), leaving the other half for the feed's pushes meanwhile.
   */
  async writable(signal: AbortSignal): Promise<void> {
    while (!this.closed && this.written >= this.all.limits.streamBytes / 2) {
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
    if (signal.aborted) throw signal.reason;
  }

  /** The stream ended: gives back everything it still counts. */
  close(): void {
    if (this.closed) return;
    this.all.used -= this.queued + this.written;
    this.queued = 0;
    this.written = 0;
    this.closed = true;
    this.all.streams--;
    this.waiter?.();
  }
}

const noop = () => {};
