// Leader election RPCs: leases decided on the database's clock.
import { once } from "node:events";
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { Db } from "../store/transactions.js";
import { leasesClaim, leasesGet, leasesHistorySince, leasesRenew, leasesResign } from "../store/leases.js";
import type { WatchHub } from "../watch/hub.js";
import { leaderToPb } from "./convert.js";
import type { StateImpl } from "./tasks.js";
import { LIMITS, Validator } from "./validate.js";

const TTL_MIN_MS = 1000;
const TTL_MAX_MS = 3_600_000;

function ttlMs(v: Validator, field: string, d: Duration | undefined): number {
  if (!d) {
    v.add(field, "is required (between 1s and 3600s)");
    return 0;
  }
  const ms = Number(d.seconds) * 1000 + d.nanos / 1e6;
  if (!Number.isInteger(ms)) v.add(field, "must be whole milliseconds");
  else if (ms < TTL_MIN_MS || ms > TTL_MAX_MS) v.add(field, "must be between 1s and 3600s");
  return ms;
}

export function leadershipRpcs(db: Db, hub: WatchHub): StateImpl {
  const { sql } = db;
  return {
    async claimLeadership(req, { signal, deadline }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.text("instance_id", req.instanceId, LIMITS.name, true);
      const ttl = ttlMs(v, "ttl", req.ttl);
      v.check();
      const r = await leasesClaim(db.tx, { election, holder: req.instanceId, ttlMs: ttl, signal, deadline });
      return { isLeader: r.isLeader, leader: leaderToPb(r.lease) };
    },

    async renewLeadership(req, { signal }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.text("instance_id", req.instanceId, LIMITS.name, true);
      if (req.term < 1n) v.add("term", "must be a term returned by ClaimLeadership (≥ 1)");
      v.check();
      return { leader: leaderToPb(await leasesRenew(sql, { election, holder: req.instanceId, term: req.term, signal })) };
    },

    async resignLeadership(req, { signal, deadline }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.text("instance_id", req.instanceId, LIMITS.name, true);
      if (req.term < 1n) v.add("term", "must be a term returned by ClaimLeadership (≥ 1)");
      v.check();
      return { resigned: await leasesResign(db.tx, { election, holder: req.instanceId, term: req.term, signal, deadline }) };
    },

    async getLeader(req, { signal }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.check();
      const lease = await leasesGet(sql, { election, signal });
      return { leader: lease ? leaderToPb(lease) : undefined };
    },

    async *watchLeader(req, { signal }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.check();
      // Wake on this election's notifications and on every listener reconnect.
      const wake = new EventTarget();
      const onLease = (e: string) => (e === election || e === "*") && wake.dispatchEvent(new Event("wake"));
      hub.on("lease", onLease);
      let timer: NodeJS.Timeout | undefined;
      try {
        // Replaying lease_history rather than comparing snapshots makes every
        // change an event, however fast they follow each other: each term's
        // start, then its end (expiry or resignation) as "no leader".
        let lastTerm = 0n;
        let leading = false;
        let first = true;
        for (;;) {
          const woken = once(wake, "wake", { signal });
          const { terms, live, now } = await leasesHistorySince(sql, { election, fromTerm: lastTerm, signal });
          if (first) {
            // Start from the current state, not from the beginning of history.
            first = false;
            lastTerm = live?.term ?? terms[terms.length - 1]?.term ?? 0n;
            leading = live !== null;
            yield { leader: live ? leaderToPb(live) : undefined };
          } else {
            for (const t of terms) {
              if (t.term > lastTerm) {
                if (leading) yield { leader: undefined };
                yield { leader: leaderToPb(t) };
                lastTerm = t.term;
                leading = true;
              }
              if (leading && t.term === lastTerm && live?.term !== t.term) {
                yield { leader: undefined };
                leading = false;
              }
            }
          }
          // Expiry needs no notification: look again when the lease would lapse
          // (database clock), plus a little so the database agrees it has.
          clearTimeout(timer);
          if (live) {
            const ms = Number((live.expiresAt - now) / 1000n) + 5;
            timer = setTimeout(() => wake.dispatchEvent(new Event("wake")), Math.max(0, ms));
          }
          try {
            await woken;
          } catch {
            return; // the call is over
          }
        }
      } finally {
        clearTimeout(timer);
        hub.off("lease", onLease);
      }
    },
  };
}
