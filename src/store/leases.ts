// All SQL of the leases and lease_history tables. Every time comes from the
// database's now(): the application's clock never decides who leads.
import type { Queryable, Sql } from "../db/connect.js";
import type { Micros } from "../db/time.js";
import type { Lease } from "../domain.js";
import { FailedPreconditionError } from "../errors.js";
import { LEASE_CHANNEL } from "./notify.js";
import { interpretError, run } from "./sql.js";

interface LeaseRow {
  election: string;
  holder: string | null;
  term: bigint;
  acquired_at: Micros;
  renewed_at: Micros;
  expires_at: Micros;
  /** expires_at > now() and holder is not null, evaluated by the database. */
  live: boolean;
}

const toLease = (r: LeaseRow): Lease | null =>
  r.live && r.holder !== null
    ? { election: r.election, holder: r.holder, term: r.term, acquiredAt: r.acquired_at, renewedAt: r.renewed_at, expiresAt: r.expires_at }
    : null;

export interface ClaimResult {
  isLeader: boolean;
  /** The caller's lease when isLeader, else the other holder's. */
  lease: Lease;
}

/**
 * Claims or renews in one statement: the upsert only takes the row when it
 * is free, lapsed, or already ours; otherwise the same statement returns the
 * current holder. The term goes up whenever the lease is acquired rather
 * than renewed, so it identifies one continuous tenure.
 */
export async function leasesClaim(
  sql: Sql,
  p: { election: string; holder: string; ttlMs: number; signal?: AbortSignal },
): Promise<ClaimResult> {
  const ttl = `${p.ttlMs} milliseconds`;
  return sql.begin(async (tx) => {
    const [row] = await run(
      p.signal,
      tx<(LeaseRow & { is_leader: boolean; renewal: boolean })[]>`
        with claimed as (
          insert into leases as l (election, holder, term, ttl, acquired_at, renewed_at, expires_at)
          values (${p.election}, ${p.holder}, 1, ${ttl}::interval, now(), now(), now() + ${ttl}::interval)
          on conflict (election) do update set
            holder = excluded.holder,
            term = case when l.holder = excluded.holder and l.expires_at > now() then l.term else l.term + 1 end,
            acquired_at = case when l.holder = excluded.holder and l.expires_at > now() then l.acquired_at else now() end,
            ttl = excluded.ttl,
            renewed_at = now(),
            expires_at = now() + excluded.ttl
          where l.holder is null or l.expires_at <= now() or l.holder = excluded.holder
          returning l.*
        ), history as (
          insert into lease_history (election, term, holder, acquired_at, ends_at)
          select election, term, holder, acquired_at, expires_at from claimed
          on conflict (election, term) do update set ends_at = excluded.ends_at
        )
        select true as is_leader, c.acquired_at <> c.renewed_at as renewal, c.*, true as live from claimed c
        union all
        select false, false, l.*, l.holder is not null and l.expires_at > now()
        from leases l where l.election = ${p.election} and not exists (select 1 from claimed)`,
    );
    if (row!.is_leader && !row!.renewal) await run(p.signal, tx`select pg_notify(${LEASE_CHANNEL}, ${p.election})`);
    return { isLeader: row!.is_leader, lease: toLease(row!)! };
  }).catch((err) => {
    throw interpretError(err, p.signal);
  });
}

/** Extends the lease of this holder's term; LEADERSHIP_LOST when it is not current. */
export async function leasesRenew(
  sql: Queryable,
  p: { election: string; holder: string; term: bigint; signal?: AbortSignal },
): Promise<Lease> {
  const [row] = await run(
    p.signal,
    sql<LeaseRow[]>`
      with renewed as (
        update leases set renewed_at = now(), expires_at = now() + ttl
        where election = ${p.election} and holder = ${p.holder} and term = ${p.term.toString()}::bigint and expires_at > now()
        returning *
      ), history as (
        update lease_history h set ends_at = r.expires_at from renewed r where h.election = r.election and h.term = r.term
      )
      select *, true as live from renewed`,
  );
  if (row) return toLease(row)!;
  const current = await leasesGet(sql, { election: p.election, signal: p.signal });
  throw new FailedPreconditionError(
    "LEADERSHIP_LOST",
    `${p.holder} no longer holds term ${p.term} of election ${p.election}` +
      (current ? `; ${current.holder} leads with term ${current.term}` : "; the lease is free: claim it again"),
    { election: p.election, term: p.term.toString(), leader: current?.holder ?? "", leader_term: current?.term.toString() ?? "" },
  );
}

/** Frees the lease now if this holder's term is current; returns whether it was. */
export async function leasesResign(
  sql: Sql,
  p: { election: string; holder: string; term: bigint; signal?: AbortSignal },
): Promise<boolean> {
  return sql.begin(async (tx) => {
    const rows = await run(
      p.signal,
      tx`
        with resigned as (
          update leases set holder = null, expires_at = now(), renewed_at = now()
          where election = ${p.election} and holder = ${p.holder} and term = ${p.term.toString()}::bigint and expires_at > now()
          returning *
        ), history as (
          update lease_history h set ends_at = r.expires_at from resigned r where h.election = r.election and h.term = r.term
        )
        select 1 from resigned`,
    );
    if (rows.length) await run(p.signal, tx`select pg_notify(${LEASE_CHANNEL}, ${p.election})`);
    return rows.length > 0;
  }).catch((err) => {
    throw interpretError(err, p.signal);
  });
}

/** The live lease of an election, or null; with the database's clock reading. */
export async function leasesGet(sql: Queryable, p: { election: string; signal?: AbortSignal }): Promise<Lease | null> {
  return (await leasesGetWithNow(sql, p)).lease;
}

export async function leasesGetWithNow(
  sql: Queryable,
  p: { election: string; signal?: AbortSignal },
): Promise<{ lease: Lease | null; now: Micros }> {
  const rows = await run(
    p.signal,
    sql<(LeaseRow & { now: Micros })[]>`
      select n.now, l.*, l.holder is not null and l.expires_at > n.now as live
      from (select now() as now) n left join leases l on l.election = ${p.election}`,
  );
  const r = rows[0]!;
  return { lease: r.election ? toLease(r) : null, now: r.now };
}

/**
 * Fencing: inside a transaction, holds the election's lease row (FOR SHARE,
 * so no new term can begin until the transaction ends) and throws NOT_LEADER
 * unless `term` is current and unexpired.
 */
export async function leasesCheckFence(
  tx: Queryable,
  p: { election: string; term: bigint; signal?: AbortSignal },
): Promise<void> {
  const [row] = await run(
    p.signal,
    tx<LeaseRow[]>`
      select *, holder is not null and expires_at > now() as live
      from leases where election = ${p.election} for share`,
  );
  if (row && row.live && row.term === p.term) return;
  const current = row ? toLease(row) : null;
  throw new FailedPreconditionError(
    "NOT_LEADER",
    `term ${p.term} of election ${p.election} is not the current leadership` +
      (current ? `; ${current.holder} leads with term ${current.term}` : "; no one leads"),
    { election: p.election, term: p.term.toString(), leader: current?.holder ?? "", leader_term: current?.term.toString() ?? "" },
  );
}
