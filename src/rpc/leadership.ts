// Leader election RPCs: leases decided on the database's clock (or the
// clock a test set: src/core/clock.ts).
import type { Duration } from "@bufbuild/protobuf/wkt";
import { leaseActor } from "../auth/roles.js";
import type { Clock } from "../core/clock.js";
import type { ElectionCounters } from "../metrics/watchCounters.js";
import type { Db } from "../store/transactions.js";
import { leasesClaim, leasesGet, leasesRenew, leasesResign } from "../store/leases.js";
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

export function leadershipRpcs(db: Db, hub: WatchHub, clock: Clock, counters: ElectionCounters): StateImpl {
  const { sql } = db;
  return {
    async claimLeadership(req, { signal, deadline, caller }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.text("instance_id", req.instanceId, LIMITS.name, true);
      const ttl = ttlMs(v, "ttl", req.ttl);
      v.check();
      const claim = await leasesClaim(db.tx, {
        election,
        holder: req.instanceId,
        ttlMs: ttl,
        claimedBy: caller.subject,
        actor: leaseActor(caller),
        signal,
        deadline,
        now: clock.sqlNow(),
      });
      if (claim.lapsedHolder !== undefined) {
        counters.leaseExpired();
        if (claim.lapsedHolder !== req.instanceId) counters.takeover();
      }
      return { isLeader: claim.isLeader, leader: leaderToPb(claim.lease) };
    },

    async renewLeadership(req, { signal, caller }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.text("instance_id", req.instanceId, LIMITS.name, true);
      if (req.term < 1n) v.add("term", "must be a term returned by ClaimLeadership (≥ 1)");
      v.check();
      return {
        leader: leaderToPb(
          await leasesRenew(sql, { election, holder: req.instanceId, term: req.term, actor: leaseActor(caller), signal, now: clock.sqlNow() }),
        ),
      };
    },

    async resignLeadership(req, { signal, deadline, caller }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.text("instance_id", req.instanceId, LIMITS.name, true);
      if (req.term < 1n) v.add("term", "must be a term returned by ClaimLeadership (≥ 1)");
      v.check();
      return {
        resigned: await leasesResign(db.tx, {
          election,
          holder: req.instanceId,
          term: req.term,
          actor: leaseActor(caller),
          signal,
          deadline,
          now: clock.sqlNow(),
        }),
      };
    },

    async getLeader(req, { signal }) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.check();
      const lease = await leasesGet(sql, { election, signal, now: clock.sqlNow() });
      return { leader: lease ? leaderToPb(lease) : undefined };
    },

    async *watchLeader(req, ctx) {
      const v = new Validator();
      const election = v.election("election", req.election);
      v.check();
      for await (const lease of hub.leaderChanges(ctx, election)) yield { leader: lease ? leaderToPb(lease) : undefined };
    },
  };
}
