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
import type { TaskStatus } from "../domain.js";
import { run } from "./sql.js";

export const UNFINISHED: readonly TaskStatus[] = ["requested", "queued", "running", "terminating"];
export const FINISHED: readonly TaskStatus[] = ["complete", "terminated"];

export interface MetricsScrape {
  /** Every unfinished status, 0 when none. */
  unfinished: [TaskStatus, number][];
  oldestQueuedAgeSeconds: number;
  electionTerms: [string, bigint][];
  /** Every election with a lease row, and whether its lease is live. */
  electionsHeld: [string, boolean][];
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
      (select json_agg(json_build_array(election, term::text)) from leases where holder is not null and expires_at > clock_timestamp()) as terms,
      (select json_agg(json_build_array(election, holder is not null and expires_at > clock_timestamp())) from leases) as held,
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
    sql<{ unfinished: number[]; oldest_age: number | null; terms: [string, string][] | null; held: [string, boolean][] | null; version: string }[]>`${scrapeQuery(sql)}`,
  );
  return {
    unfinished: UNFINISHED.map((s, i) => [s, row!.unfinished[i] ?? 0]),
    oldestQueuedAgeSeconds: Math.max(0, row!.oldest_age ?? 0),
    electionTerms: (row!.terms ?? []).map(([e, t]) => [e, BigInt(t)]),
    electionsHeld: row!.held ?? [],
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
