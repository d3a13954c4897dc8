// The service's clock. In production the database's clock decides every
// lease (sqlNow() is undefined, so lease SQL reads clock_timestamp()), and
// in-process waits are real timers. Tests start a server with a clock they
// set (test/clock.ts), so lease expiry and failover need no real waiting;
// clients can never set it.
import { setTimeout as sleep } from "node:timers/promises";

export interface Clock {
  /** The instant lease SQL takes as now: coalesce(sqlNow, clock_timestamp()). */
  sqlNow(): Date | undefined;
  /** Epoch milliseconds, for in-memory expiry (the design cache, tokens). */
  nowMs(): number;
  /** Resolves `ms` later on this clock; rejects (AbortError) when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

export const SYSTEM_CLOCK: Clock = {
  sqlNow: () => undefined,
  nowMs: () => Date.now(),
  sleep: (ms, signal) => sleep(ms, undefined, { signal }),
};
