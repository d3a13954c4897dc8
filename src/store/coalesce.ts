// Coalesced statements: concurrent calls of one kind served by one statement
// (one round trip; for writes, one commit), each caller getting its own
// outcome. Used for CreateTask's insert, appends (store/writers.ts) and
// GetTask's read (store/readers.ts).
//
// A call starts a batch at once when fewer than `maxInFlight` batches are
// running, so a lone call waits for nothing; calls arriving while the
// running batches are busy queue, and the next batch takes every queued call
// (at most `maxBatch`), never waiting for a batch to fill. A batch never
// waits for a row lock (its statements skip locked rows): the calls whose
// rows another transaction holds are written on their own, outside the
// batch's slot, so one locked task cannot hold up the others. A queued call
// whose signal aborts is withdrawn and never written. Once its batch runs, a
// call's outcome is whatever the batch's statement did, as for any single
// statement (see store/sql.ts run).
//
// `batch` receives the batch's items and returns one outcome per item, in
// order: a value, or an Error for that caller alone. When the database
// refuses the statement for its data (SQLSTATE class 22 or 23: nothing was
// written), every item is written again on its own (`single`), so that one
// item we did not foresee a refusal of cannot fail the others. Any other
// failure (a lost connection: the outcome is unknown) fails every caller of
// the batch with it, as it would have failed each alone: writing again
// could store an append twice.
import { abortable } from "../util/abortable.js";
import { abortError } from "../core/errors.js";
import { pgCode } from "./sql.js";

/** The statement failed on its data, so nothing was written: data exception or integrity violation. */
const refusedForData = (err: unknown) => /^2[23][0-9A-Z]{3}$/.test(pgCode(err) ?? "");

export interface CoalescerOptions {
  /** Most calls in one batch. */
  maxBatch: number;
  /** Batches running at once (each holds one pool connection while it runs). */
  maxInFlight: number;
}

// One batch in flight: appends to 16 tasks at c=16 measured 0.89 × the raw ceiling with 1, 0.73 × with 2
// (two batches of overlapping tasks wait on each other's row locks); creates and reads the same (BENCHMARKS.md).
export const DEFAULT_COALESCING: CoalescerOptions = { maxBatch: 100, maxInFlight: 1 };

interface Pending<I, O> {
  item: I;
  signal: AbortSignal | undefined;
  resolve(value: O | PromiseLike<O>): void;
  reject(err: unknown): void;
  onAbort?: () => void;
}

/**
 * A batch item's outcome: its value, its error, or the promise of a write
 * of its own (on a connection of its own, outside the batch's slot), e.g.
 * for a row the batch skipped because another transaction held its lock.
 */
export type Outcome<O> = O | Error | Promise<O>;

/** How a batch gets and gives back the database connection it is written on. */
export interface Connections<H> {
  acquire(): Promise<H>;
  release(held: H): void;
}

export class Coalescer<I, O, H = unknown> {
  private readonly queue: Pending<I, O>[] = [];
  /** Batches started: waiting for a connection or being written. */
  private running = 0;
  /** Of those, the ones still waiting for a connection (they have taken no call yet). */
  private reserving = 0;

  constructor(
    private readonly options: CoalescerOptions,
    private readonly connections: Connections<H>,
    private readonly batch: (items: I[], held: H) => Promise<Outcome<O>[]>,
    /** One item alone, after the database refused its batch for its data. */
    private readonly single: (item: I, held: H) => Promise<O>,
    /** Items that may not share a batch (e.g. the same task id) wait for a later one. */
    private readonly key?: (item: I) => string,
  ) {}

  /**
   * The item's outcome. When `signal` aborts, a queued item is withdrawn; one
   * already being written is left to its statement, and the caller stops
   * waiting (its outcome is unknown, as for any statement cut short).
   */
  submit(item: I, signal?: AbortSignal): Promise<O> {
    if (signal?.aborted) return Promise.reject(abortError(signal, signal.reason));
    const outcome = new Promise<O>((resolve, reject) => {
      const pending: Pending<I, O> = { item, signal, resolve, reject };
      if (signal) {
        pending.onAbort = () => {
          const at = this.queue.indexOf(pending);
          if (at >= 0) {
            this.queue.splice(at, 1);
            reject(abortError(signal, signal.reason));
          }
        };
        signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      this.queue.push(pending);
      this.drain();
    });
    return abortable(outcome, signal);
  }

  private drain(): void {
    // A batch per free slot, but no more waiting for a connection than there are calls to take.
    while (this.running < this.options.maxInFlight && this.reserving < this.queue.length) {
      this.running++;
      this.reserving++;
      void this.next().finally(() => {
        this.running--;
        this.drain();
      });
    }
  }

  /**
   * A connection first, then the calls still queued: until their statement
   * can be sent, queued calls stay withdrawable.
   */
  private async next(): Promise<void> {
    let held: H;
    try {
      held = await this.connections.acquire();
    } catch (err) {
      // The pool is closing: nothing queued can be written.
      for (const p of this.queue.splice(0)) p.reject(err);
      return;
    } finally {
      this.reserving--;
    }
    try {
      const batch = this.take();
      if (batch.length > 0) await this.run(batch, held);
    } finally {
      this.connections.release(held);
    }
  }

  /** The oldest queued calls, at most maxBatch, none sharing a key. */
  private take(): Pending<I, O>[] {
    const batch: Pending<I, O>[] = [];
    const keys = new Set<string>();
    for (let i = 0; i < this.queue.length && batch.length < this.options.maxBatch; ) {
      const pending = this.queue[i]!;
      const key = this.key?.(pending.item);
      if (key !== undefined && keys.has(key)) {
        i++;
        continue;
      }
      if (key !== undefined) keys.add(key);
      this.queue.splice(i, 1);
      if (pending.onAbort) pending.signal!.removeEventListener("abort", pending.onAbort);
      batch.push(pending);
    }
    return batch;
  }

  private async run(batch: Pending<I, O>[], held: H): Promise<void> {
    let outcomes: Outcome<O>[];
    try {
      outcomes = await this.batch(
        batch.map((p) => p.item),
        held,
      );
    } catch (err) {
      if (!refusedForData(err)) {
        batch.forEach((p) => p.reject(err));
        return;
      }
      // One connection: one item after another.
      for (const p of batch) await this.single(p.item, held).then(p.resolve, p.reject);
      return;
    }
    batch.forEach((p, i) => {
      const outcome = outcomes[i]!;
      if (outcome instanceof Error) p.reject(outcome);
      else p.resolve(outcome);
    });
  }
}
