// All SQL of the leases and lease_history tables. Every time comes from the
// database's clock, never the application's. We read clock_timestamp() rather
// than now(): now() is the transaction's start, which lies in the past after
// waiting for a row lock, and would let a new term appear to begin before the
// previous one ended. Each function takes an optional `now` that replaces the
// clock (River's coalesce(@now, now())): only tests set it (src/core/clock.ts).
import type { Queryable } from "../db/connect.js";
import type { Micros } from "../core/time.js";
import type { Lease } from "../core/domain.js";
import { AbortedError, FailedPreconditionError, PermissionDeniedError } from "../core/errors.js";
import { LEASE_CHANNEL } from "./notify.js";
import { run } from "./sql.js";
import type { TransactionScope, Transactor } from "./transactions.js";

interface LeaseRow {
  election: string;
  holder: string | null;
  term: bigint;
  acquired_at: Micros;
  renewed_at: Micros;
  expires_at: Micros;
  /** The subject that claimed the term ("" without authentication); null for a term claimed before migration 0006. */
  claimed_by: string | null;
  /** expires_at > now() and holder is not null, evaluated by the database. */
  live: boolean;
}

const toLease = (r: LeaseRow): Lease | null =>
  r.live && r.holder !== null
    ? { election: r.election, holder: r.holder, term: r.term, acquiredAt: r.acquired_at, renewedAt: r.renewed_at, expiresAt: r.expires_at }
    : null;

/**
 * Who acts on a term, for the holder check: null when anyone may (no
 * authentication, or an admin), else the caller's subject, which must be the
 * one that claimed the term. A term claimed before claimants were recorded
 * (claimed_by null) matches no subject.
 */
export type LeaseActor = string | null;

/** PERMISSION_DENIED: the term is current but was claimed by another subject. */
function notLeaseHolder(what: string, p: { election: string; term: bigint; actor: string }, claimedBy: string | null): PermissionDeniedError {
  return new PermissionDeniedError(
    "NOT_LEASE_HOLDER",
    `term ${p.term} of election ${p.election} belongs to the subject that claimed it: only that subject or an admin may ${what}` +
      (claimedBy === null ? " (this term was claimed before claimants were recorded, so only an admin may; it ends at its expiry)" : ""),
    { election: p.election, term: p.term.toString(), subject: p.actor },
  );
}

/** The instant a statement takes as now: `now` when given, else the database's clock. */
const clock = (tx: Queryable, now: Date | undefined) => tx`coalesce(${now?.toISOString() ?? null}::timestamptz, clock_timestamp())`;

export interface ClaimResult {
  isLeader: boolean;
  /** The caller's lease when isLeader, else the other holder's. */
  lease: Lease;
  /** When the claim began a new term: the previous term's holder, if its lease lapsed rather than being resigned. */
  lapsedHolder?: string;
}

/**
 * Claims or renews in one statement: the upsert only takes the row when it
 * is free, lapsed, or already ours. The term goes up whenever the lease is
 * acquired rather than renewed, so it identifies one continuous tenure.
 *
 * When the upsert declines, the current holder is read by a second statement
 * (a fresh snapshot: the first one may predate a concurrent claim). If that
 * holder is already gone, the claim is simply tried again.
 */
export async function leasesClaim(
  t: Transactor,
  p: TransactionScope & {
    election: string;
    holder: string;
    ttlMs: number;
    /** Recorded with a new term: the caller's subject ("" without authentication). */
    claimedBy: string;
    /** Who may renew the holder's live term by claiming it again (see LeaseActor). */
    actor: LeaseActor;
    now?: Date;
  },
): Promise<ClaimResult> {
  const ttl = `${p.ttlMs} milliseconds`;
  for (let attempt = 0; ; attempt++) {
    const result = await t.transaction(p, async (tx) => {
      // Wait for any other claim, renewal or resignation of this election
      // first, so the time read below is after theirs: now() is the
      // transaction's start, which a lock wait would leave in the past.
      await run(tx, p.signal, "leases.claim.lock", tx`select 1 from leases where election = ${p.election} for update`);
      const [claimed] = await run(
        tx,
        p.signal,
        "leases.claim",
        tx<(LeaseRow & { renewal: boolean; lapsed_holder: string | null })[]>`
            with t as materialized (select ${clock(tx, p.now)} as now),
            previous as (select holder, expires_at from leases where election = ${p.election}),
            claimed as (
              insert into leases as l (election, holder, term, ttl, acquired_at, renewed_at, expires_at, claimed_by)
              select ${p.election}, ${p.holder}, 1, ${ttl}::interval, t.now, t.now, t.now + ${ttl}::interval, ${p.claimedBy} from t
              on conflict (election) do update set
                holder = excluded.holder,
                -- A renewal keeps the term's claimant (an admin may renew someone else's term).
                claimed_by = case when l.holder = excluded.holder and l.expires_at > excluded.renewed_at
                                  then l.claimed_by else excluded.claimed_by end,
                term = case when l.holder = excluded.holder and l.expires_at > excluded.renewed_at then l.term else l.term + 1 end,
                acquired_at = case when l.holder = excluded.holder and l.expires_at > excluded.renewed_at
                                   then l.acquired_at else excluded.renewed_at end,
                ttl = excluded.ttl,
                renewed_at = excluded.renewed_at,
                expires_at = excluded.expires_at
              where l.holder is null or l.expires_at <= excluded.renewed_at
                or (l.holder = excluded.holder and (${p.actor}::text is null or l.claimed_by = ${p.actor}::text))
              returning l.*
            ), history as (
              insert into lease_history (election, term, holder, acquired_at, ends_at, claimed_by)
              select election, term, holder, acquired_at, expires_at, claimed_by from claimed
              on conflict (election, term) do update set ends_at = excluded.ends_at
            )
            select c.*, c.acquired_at <> c.renewed_at as renewal, true as live,
              (select p.holder from previous p, t where p.expires_at <= t.now) as lapsed_holder
            from claimed c`,
      );
      if (claimed) {
        if (!claimed.renewal) await run(tx, p.signal, "leases.notify", tx`select pg_notify(${LEASE_CHANNEL}, ${p.election})`);
        const lapsedHolder = !claimed.renewal && claimed.lapsed_holder !== null ? claimed.lapsed_holder : undefined;
        return { isLeader: true, lease: toLease(claimed)!, ...(lapsedHolder !== undefined && { lapsedHolder }) };
      }
      const row = await liveRow(tx, p);
      const current = row && toLease(row);
      // Declined although the holder's own term is live: another subject claimed it.
      if (current && row.holder === p.holder && p.actor !== null) throw notLeaseHolder("renew it", { ...current, actor: p.actor }, row.claimed_by);
      return current ? { isLeader: false, lease: current } : null;
    });
    if (result) return result;
    // The holder resigned or lapsed between the two statements; bounded
    // because each retry means another instance's term ended meanwhile.
    if (attempt >= 10) {
      throw new AbortedError(
        "CLAIM_CONTENDED",
        `the lease of election ${p.election} changed hands during each of ${attempt + 1} attempts; retry with backoff`,
        {
          election: p.election,
        },
      );
    }
  }
}

/** Extends the lease of this holder's term; LEADERSHIP_LOST when it is not current. */
export async function leasesRenew(
  sql: Queryable,
  p: { election: string; holder: string; term: bigint; actor: LeaseActor; signal?: AbortSignal; now?: Date },
): Promise<Lease> {
  const [row] = await run(
    sql,
    p.signal,
    "leases.renew",
    sql<LeaseRow[]>`
      with t as materialized (select ${clock(sql, p.now)} as now),
      renewed as (
        update leases set renewed_at = t.now, expires_at = t.now + ttl from t
        where election = ${p.election} and holder = ${p.holder} and term = ${p.term.toString()}::bigint
          and expires_at > t.now and (${p.actor}::text is null or claimed_by = ${p.actor}::text)
        returning *
      ), history as (
        update lease_history h set ends_at = r.expires_at from renewed r where h.election = r.election and h.term = r.term
      )
      select *, true as live from renewed`,
  );
  if (row) return toLease(row)!;
  const live = await liveRow(sql, p);
  const current = live && toLease(live);
  if (current && p.actor !== null && current.holder === p.holder && current.term === p.term)
    throw notLeaseHolder("renew it", { ...p, actor: p.actor }, live.claimed_by);
  throw new FailedPreconditionError(
    "LEADERSHIP_LOST",
    `${p.holder} no longer holds term ${p.term} of election ${p.election}` +
      (current ? `; ${current.holder} leads with term ${current.term}` : "; the lease is free: claim it again"),
    { election: p.election, term: p.term.toString(), leader: current?.holder ?? "", leader_term: current?.term.toString() ?? "" },
  );
}

/**
 * Frees the lease now if this holder's term is current; returns whether it
 * was. NOT_LEASE_HOLDER when the term is current but the actor did not claim it.
 */
export async function leasesResign(
  t: Transactor,
  p: TransactionScope & { election: string; holder: string; term: bigint; actor: LeaseActor; now?: Date },
): Promise<boolean> {
  return t.transaction(p, async (tx) => {
    const rows = await run(
      tx,
      p.signal,
      "leases.resign",
      tx`
        with t as materialized (select ${clock(tx, p.now)} as now),
        resigned as (
          update leases set holder = null, expires_at = t.now, renewed_at = t.now from t
          where election = ${p.election} and holder = ${p.holder} and term = ${p.term.toString()}::bigint
            and expires_at > t.now and (${p.actor}::text is null or claimed_by = ${p.actor}::text)
          returning *
        ), history as (
          update lease_history h set ends_at = r.expires_at from resigned r where h.election = r.election and h.term = r.term
        )
        select 1 from resigned`,
    );
    if (rows.length) {
      await run(tx, p.signal, "leases.notify", tx`select pg_notify(${LEASE_CHANNEL}, ${p.election})`);
      return true;
    }
    if (p.actor !== null) {
      const live = await liveRow(tx, p);
      if (live && live.holder === p.holder && live.term === p.term) throw notLeaseHolder("resign it", { ...p, actor: p.actor }, live.claimed_by);
    }
    return false;
  });
}

/** The election's row while its lease is live (with who claimed it), else null. */
async function liveRow(sql: Queryable, p: { election: string; signal?: AbortSignal; now?: Date }): Promise<LeaseRow | null> {
  const [row] = await run(
    sql,
    p.signal,
    "leases.get_live",
    sql<LeaseRow[]>`
      select *, true as live from leases
      where election = ${p.election} and holder is not null and expires_at > ${clock(sql, p.now)}`,
  );
  return row ?? null;
}

/** The live lease of an election, or null; with the database's clock reading. */
export async function leasesGet(sql: Queryable, p: { election: string; signal?: AbortSignal; now?: Date }): Promise<Lease | null> {
  return (await leasesGetWithNow(sql, p)).lease;
}

export async function leasesGetWithNow(
  sql: Queryable,
  p: { election: string; signal?: AbortSignal; now?: Date },
): Promise<{ lease: Lease | null; now: Micros }> {
  const rows = await run(
    sql,
    p.signal,
    "leases.get",
    sql<(LeaseRow & { now: Micros })[]>`
      select n.now, l.*, l.holder is not null and l.expires_at > n.now as live
      from (select ${clock(sql, p.now)} as now) n left join leases l on l.election = ${p.election}`,
  );
  const r = rows[0]!;
  return { lease: r.election ? toLease(r) : null, now: r.now };
}

/**
 * Fencing: inside a transaction, holds the election's lease row (FOR SHARE,
 * so no new term can begin until the transaction ends) and throws NOT_LEADER
 * unless `term` is current and unexpired, and NOT_LEASE_HOLDER when an actor
 * is given that did not claim it.
 */
export async function leasesCheckFence(
  tx: Queryable,
  p: { election: string; term: bigint; actor?: LeaseActor; signal?: AbortSignal; now?: Date },
): Promise<void> {
  const [row] = await run(
    tx,
    p.signal,
    "leases.check_fence",
    tx<LeaseRow[]>`
      select *, holder is not null and expires_at > ${clock(tx, p.now)} as live
      from leases where election = ${p.election} for share`,
  );
  if (row?.live && row.term === p.term) {
    if (p.actor == null || row.claimed_by === p.actor) return;
    throw notLeaseHolder("fence work with it", { ...p, actor: p.actor }, row.claimed_by);
  }
  const current = row ? toLease(row) : null;
  throw new FailedPreconditionError(
    "NOT_LEADER",
    `term ${p.term} of election ${p.election} is not the current leadership` +
      (current ? `; ${current.holder} leads with term ${current.term}` : "; no one leads"),
    { election: p.election, term: p.term.toString(), leader: current?.holder ?? "", leader_term: current?.term.toString() ?? "" },
  );
}

/** Terms of an election from `fromTerm` on, oldest first, with the live lease and the clock. */
export async function leasesHistorySince(
  sql: Queryable,
  p: { election: string; fromTerm: bigint; signal?: AbortSignal; now?: Date },
): Promise<{ terms: Lease[]; live: Lease | null; now: Micros }> {
  const rows = await run(
    sql,
    p.signal,
    "leases.history",
    sql<{ term: bigint; holder: string; acquired_at: Micros; ends_at: Micros }[]>`
      select term, holder, acquired_at, ends_at from lease_history
      where election = ${p.election} and term >= ${p.fromTerm.toString()}::bigint
      order by term`,
  );
  const { lease, now } = await leasesGetWithNow(sql, p);
  const terms = rows.map((r) =>
    lease && r.term === lease.term
      ? lease
      : { election: p.election, holder: r.holder, term: r.term, acquiredAt: r.acquired_at, renewedAt: r.acquired_at, expiresAt: r.ends_at },
  );
  return { terms, live: lease, now };
}
