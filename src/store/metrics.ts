// The queries behind the metrics' database gauges, one statement per scrape.
import type { Sql } from "../db/connect.js";
import { run } from "./sql.js";

export interface MetricsScrape {
  tasksByStatus: [string, number][];
  oldestQueuedAgeSeconds: number;
  electionTerms: [string, bigint][];
  /** Every election with a lease row, and whether its lease is live. */
  electionsHeld: [string, boolean][];
  postgresVersion: string;
}

/**
 * Counts by status (an index-only scan of tasks_status_created_idx), the
 * oldest QUEUED task (first entry of tasks_queued_idx), live leases and the
 * server version, in one round trip.
 */
export async function metricsScrape(sql: Sql): Promise<MetricsScrape> {
  const [row] = await run(
    sql,
    AbortSignal.timeout(5000),
    sql<{ by_status: [string, number][] | null; oldest_age: number | null; terms: [string, string][] | null; held: [string, boolean][] | null; version: string }[]>`
      select
        (select json_agg(json_build_array(status, n)) from (select status, count(*)::int as n from tasks group by status) s) as by_status,
        (select extract(epoch from now() - min(created))::float8 from tasks where status = 'queued') as oldest_age,
        (select json_agg(json_build_array(election, term::text)) from leases where holder is not null and expires_at > clock_timestamp()) as terms,
        (select json_agg(json_build_array(election, holder is not null and expires_at > clock_timestamp())) from leases) as held,
        current_setting('server_version') as version`,
  );
  return {
    tasksByStatus: row!.by_status ?? [],
    oldestQueuedAgeSeconds: Math.max(0, row!.oldest_age ?? 0),
    electionTerms: (row!.terms ?? []).map(([e, t]) => [e, BigInt(t)]),
    electionsHeld: row!.held ?? [],
    postgresVersion: row!.version,
  };
}
