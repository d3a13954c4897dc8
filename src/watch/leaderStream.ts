// One WatchLeader stream's events: the current leader (or none), then every
// change as it happens: each term's start, and its end (expiry or
// resignation) as "no leader".
//
// Contract:
// - replays lease_history from the last term seen rather than comparing
//   snapshots, so terms that follow each other faster than it reads are
//   still each an event;
// - wakes on the election's lease notifications, on every reconnect of the
//   LISTEN connection ("*"), and when the live lease would lapse (expiry
//   sends no notification), measured on the injected clock.
import { once, type EventEmitter } from "node:events";
import type { Clock } from "../core/clock.js";
import type { Queryable } from "../db/connect.js";
import type { Lease } from "../core/domain.js";
import { leasesHistorySince } from "../store/leases.js";
import type { WatchSignals } from "./signals.js";

export interface LeaderStreamParams {
  election: string;
  signal: AbortSignal;
}

/** Yields the leader, or undefined while there is none. */
export async function* leaderStream(
  signals: EventEmitter<WatchSignals>,
  sql: Queryable,
  clock: Clock,
  p: LeaderStreamParams,
): AsyncGenerator<Lease | undefined> {
  const { election, signal } = p;
  const wakeups = new EventTarget();
  const wake = () => wakeups.dispatchEvent(new Event("wake"));
  const onLease = (changed: string) => (changed === election || changed === "*") && wake();
  signals.on("lease", onLease);
  let expiry: AbortController | undefined;
  try {
    let lastTerm = 0n;
    let leading = false;
    let first = true;
    for (;;) {
      // Before the read: a change while it runs is read again after it.
      const woken = once(wakeups, "wake", { signal });
      woken.catch(() => {}); // awaited below, unless the read fails first
      const { terms, live, now } = await leasesHistorySince(sql, { election, fromTerm: lastTerm, now: clock.sqlNow(), signal });
      if (first) {
        first = false;
        lastTerm = live?.term ?? terms[terms.length - 1]?.term ?? 0n;
        leading = live !== null;
        yield live ?? undefined;
      } else {
        for (const term of terms) {
          if (term.term > lastTerm) {
            if (leading) yield undefined;
            yield term;
            lastTerm = term.term;
            leading = true;
          }
          if (leading && term.term === lastTerm && live?.term !== term.term) {
            yield undefined;
            leading = false;
          }
        }
      }
      expiry?.abort();
      expiry = undefined;
      if (live) {
        // Plus a little, so the database agrees the lease has lapsed.
        const ms = Math.max(0, Number((live.expiresAt - now) / 1000n) + 5);
        expiry = new AbortController();
        clock.sleep(ms, expiry.signal).then(wake, () => {});
      }
      try {
        await woken;
      } catch {
        return; // the call is over
      }
    }
  } finally {
    expiry?.abort();
    signals.off("lease", onLease);
  }
}
