// The shared reads of the watch feeds: each query under a bound of its own
// (never a caller's signal), and one retry timer for every read that failed.
import { Backoff } from "../util/backoff.js";
import { UnavailableError } from "../core/errors.js";

/**
 * Bound of one shared query: past it the query is cancelled and abandoned,
 * and retried like any failed read. SentVersions' grace (sent.ts) is sized
 * from it: no read older than this can still deliver.
 */
export const SHARED_QUERY_TIMEOUT_MS = 30_000;

/** Runs one shared query under its own signal, aborted after `ms`; settles by then even if the query does not. */
export async function bounded<T>(query: (signal: AbortSignal) => Promise<T>, ms = SHARED_QUERY_TIMEOUT_MS): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new UnavailableError(`a watch read took longer than ${ms} ms`);
      controller.abort(err);
      reject(err);
    }, ms);
    timer.unref();
  });
  try {
    return await Promise.race([query(controller.signal), late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs failed reads again, all at once, after a backoff (100 ms doubling to
 * 5 s, equal jitter): one timer however many feeds failed on one outage.
 * The backoff starts over once a read succeeds with nothing left to retry.
 */
export class RetryTimer {
  private readonly pending = new Set<() => void>();
  private readonly backoff = new Backoff({ initialMs: 100, maxMs: 5000, jitter: 0.5 });
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  /** Retries so far in the current run of failures (for log lines). */
  get attempt(): number {
    return this.backoff.attempt;
  }

  /** Runs `retry` at the next firing (once, however often it is asked for); false once stopped: it never will. */
  later(retry: () => void): boolean {
    if (this.stopped) return false;
    this.pending.add(retry);
    if (this.timer) return true;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const due = [...this.pending];
      this.pending.clear();
      for (const run of due) run();
    }, this.backoff.next());
    this.timer.unref();
    return true;
  }

  /** Drops a retry nobody needs any more (its feed closed). */
  cancel(retry: () => void): void {
    this.pending.delete(retry);
  }

  succeeded(): void {
    if (!this.timer && this.pending.size === 0) this.backoff.reset();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
  }
}
