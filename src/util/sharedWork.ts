// Single flight: one piece of work per key shared by every caller that asks
// for it while it runs, each caller waiting under its own signal.
import { abortable } from "./abortable.js";

export interface Flight<T, C> {
  promise: Promise<T>;
  /** Callers waiting for it now. */
  waiters: number;
  /** What the starter attached (e.g. a deadline later callers may extend). */
  context: C;
  /** Aborts the work's own signal. */
  controller: AbortController;
}

export interface SharedWorkOptions {
  /**
   * What happens when the last waiting caller gives up: "abort" aborts the
   * work's signal and forgets it (the next caller starts afresh); "finish"
   * lets it run to its end (its own bound), and later callers still join it.
   */
  whenAbandoned: "abort" | "finish";
}

/**
 * Work is started under a signal of its own, never a caller's: a caller
 * that is cancelled abandons only its own wait. A flight is forgotten when
 * it settles, so failures are never shared with later callers.
 */
export class SharedWork<K, T, C = undefined> {
  private readonly flights = new Map<K, Flight<T, C>>();

  constructor(private readonly options: SharedWorkOptions) {}

  /** Flights running now, waited for or not (a bound on work in flight). */
  get size(): number {
    return this.flights.size;
  }

  /** The flight running for key, if any. */
  get(key: K): Flight<T, C> | undefined {
    return this.flights.get(key);
  }

  /** Waits for key's work, starting it with start() when none runs. */
  async wait(key: K, signal: AbortSignal | undefined, start: (signal: AbortSignal) => { promise: Promise<T>; context: C }): Promise<T> {
    let flight = this.flights.get(key);
    if (!flight) {
      const controller = new AbortController();
      const { promise, context } = start(controller.signal);
      const started: Flight<T, C> = { promise, waiters: 0, context, controller };
      const forget = () => void (this.flights.get(key) === started && this.flights.delete(key));
      promise.then(forget, forget);
      this.flights.set(key, started);
      flight = started;
    }
    flight.waiters++;
    try {
      return await abortable(flight.promise, signal);
    } finally {
      if (--flight.waiters === 0 && this.options.whenAbandoned === "abort" && this.flights.get(key) === flight) {
        this.flights.delete(key);
        flight.controller.abort(signal?.reason);
      }
    }
  }
}
