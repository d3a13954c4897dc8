// The queries behind the metrics' database gauges.
//
// Measured with 1,000,000 tasks (BENCHMARKS.md, "Scrape cost"): counting
// every status in one GROUP BY is a parallel sequential scan of the whole
// table, about 190 ms and three busy backends per scrape. Unfinished tasks
// (REQUESTED, QUEUED, RUNNING, TERMINATING) are the few that move, and the
// ones operators alert on, so each scrape counts them exactly, each with an
// index-only range scan of tasks_status_created_idx (cost grows with the
// unfinished tasks, not the table). Finished ones (COMPLETE, TERMINATED) are
// most of the table and only grow until a purge: they are counted by a
// separate statement that src/metrics runs at most once per its maximum age.
import type { Fragment } from "postgres";
import type { Sql } from "../db/connect.js";
import { DEFAULT_ELECTION, type TaskStatus } from "../core/domain.js";
import { run, SQLSTATE } from "./sql.js";

export const UNFINISHED: readonly TaskStatus[] = ["requested", "queued", "running", "terminating"];

/**
 * Elections with series of their own (statemgmt_election_term and _held):
 * the default election first, then the others by name. Any orchestrator may
 * name new elections, and each name was a label value: 5,000 of them made a
 * scrape 1.5 MB and slowed every call. The rest are counted together.
 */
export const MAX_ELECTION_SERIES = 20;

export interface MetricsScrape {
  /** Every unfinished status, 0 when none. */
  unfinished: [TaskStatus, number][];
  oldestQueuedAgeSeconds: number;
  /** The live terms of the listed elections (MAX_ELECTION_SERIES). */
  electionTerms: [string, bigint][];
  /** The listed elections (at most MAX_ELECTION_SERIES, default first, then by name), and whether each lease is live. */
  electionsHeld: [string, boolean][];
  /** Elections beyond the listed ones, and how many of them have a live lease. */
  otherElections: { count: number; held: number };
  postgresVersion: string;
}

/** The per-scrape statement (exported for bench/run.ts's EXPLAIN ANALYZE). */
export function scrapeQuery(sql: Sql): Fragment {
  // One literal subquery per status, so the planner sees each status's own
  // frequency (an index-only scan for the few, as it should).
  const counts = UNFINISHED.map((s) => sql`(select count(*)::int from tasks where status = ${sql.unsafe(`'${s}'`)})`);
  return sql`
    select
      json_build_array(${counts.reduce((a, c) => sql`${a}, ${c}`)}) as unfinished,
      (select extract(epoch from now() - min(created))::float8 from tasks where status = 'queued') as oldest_age,
      (select json_agg(json_build_array(election, term::text, live) order by first desc, election)
         from (select election, term, holder is not null and expires_at > clock_timestamp() as live, election = ${DEFAULT_ELECTION} as first
               from leases order by first desc, election limit ${MAX_ELECTION_SERIES}) l) as listed,
      (select count(*)::int from leases) as elections,
      (select count(*)::int from leases where holder is not null and expires_at > clock_timestamp()) as live,
      current_setting('server_version') as version`;
}

/** The counts of finished tasks: a scan of the whole table (exported for bench/run.ts). */
export function finishedCountsQuery(sql: Sql): Fragment {
  return sql`
    select
      count(*) filter (where status = 'complete')::int as complete,
      count(*) filter (where status = 'terminated')::int as terminated
    from tasks where status in ('complete', 'terminated')`;
}

/** Unfinished counts, the oldest QUEUED task, live leases and the server version, in one round trip. */
export async function metricsScrape(sql: Sql): Promise<MetricsScrape> {
  const [row] = await run(
    sql,
    AbortSignal.timeout(5000),
    "metrics.scrape",
    sql<
      { unfinished: number[]; oldest_age: number | null; listed: [string, string, boolean][] | null; elections: number; live: number; version: string }[]
    >`${scrapeQuery(sql)}`,
  );
  const listed = row!.listed ?? [];
  const listedLive = listed.filter(([, , live]) => live).length;
  return {
    unfinished: UNFINISHED.map((s, i) => [s, row!.unfinished[i] ?? 0]),
    oldestQueuedAgeSeconds: Math.max(0, row!.oldest_age ?? 0),
    electionTerms: listed.filter(([, , live]) => live).map(([e, t]) => [e, BigInt(t)]),
    electionsHeld: listed.map(([e, , live]) => [e, live]),
    // Counted in the same statement as the list: the two cannot disagree.
    otherElections: { count: Math.max(0, row!.elections - listed.length), held: Math.max(0, row!.live - listedLive) },
    postgresVersion: row!.version,
  };
}

/** COMPLETE and TERMINATED counts (expensive on a large table: see above). */
export async function metricsFinishedCounts(sql: Sql): Promise<[TaskStatus, number][]> {
  const [row] = await run(
    sql,
    AbortSignal.timeout(30_000),
    "metrics.finished_counts",
    sql<{ complete: number; terminated: number }[]>`${finishedCountsQuery(sql)}`,
  );
  return [
    ["complete", row!.complete],
    ["terminated", row!.terminated],
  ];
}

/** Why the database ended a statement at its time limit: the `kind` label of statemgmt_db_timeouts_total. */
export type MetricsTimeoutKind = "lock" | "statement";

const TIMEOUT_KINDS = new Map<string, MetricsTimeoutKind>([
  [SQLSTATE.lockNotAvailable, "lock"],
  [SQLSTATE.queryCanceled, "statement"],
]);

/** Every timeout kind (lock_timeout, then statement_timeout). */
export const METRICS_TIMEOUT_KINDS: readonly MetricsTimeoutKind[] = [...TIMEOUT_KINDS.values()];

/** The timeout a failed statement's SQLSTATE names (55P03: lock, 57014: statement), if any. */
export function metricsTimeoutKind(errorCode: string | undefined): MetricsTimeoutKind | undefined {
  return errorCode === undefined ? undefined : TIMEOUT_KINDS.get(errorCode);
}
