// The service's Prometheus metrics, on a registry of their own. Other parts
// report through small interfaces (CallObserver, ServiceCounters,
// QueryObserver, DesignObserver) and never import prom-client: calls.ts,
// design.ts and keystone.ts each own the families of what they observe.
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { FastHistogram, type HistogramChild } from "./fast.js";
import { observeQueries, poolUsage, type QueryObserver } from "../db/connect.js";
import type { TaskStatus } from "../core/domain.js";
import { MAX_ELECTION_SERIES, METRICS_TIMEOUT_KINDS, metricsFinishedCounts, metricsScrape, metricsTimeoutKind, type MetricsScrape } from "../store/metrics.js";
import type { Db } from "../store/transactions.js";
import { WatchMetrics } from "./watchMetrics.js";
import { CallMetrics } from "./calls.js";
import { DesignMetrics } from "./design.js";
import { KeystoneMetrics } from "./keystone.js";

export interface MetricsOptions {
  /** The pool and transaction slots: their gauges, and every statement's duration and timeouts. */
  db: Db;
  version: string;
  /**
   * Longest a scrape reuses the COMPLETE and TERMINATED counts (default
   * DEFAULT_FINISHED_COUNT_MAX_AGE_MS; 0: count them on every scrape).
   */
  finishedCountMaxAgeMs?: number;
}

/**
 * The finished counts scan the whole table (190 ms at 1M tasks: BENCHMARKS.md),
 * so a scrape reuses them for up to 5 minutes; the unfinished ones are exact.
 */
export const DEFAULT_FINISHED_COUNT_MAX_AGE_MS = 300_000;

export class Metrics implements QueryObserver {
  readonly registry = new Registry();
  /** The gRPC calls and what their handlers count (calls.ts). */
  readonly calls: CallMetrics;
  /** The design fetches (design.ts). */
  readonly design: DesignMetrics;
  /** Whether Keystone answers (keystone.ts). */
  readonly keystone: KeystoneMetrics;
  /** The watch path's and the leadership RPCs' counters (watchMetrics.ts). */
  readonly watch: WatchMetrics;
  private readonly queryDuration: FastHistogram;
  private readonly queryDurationByName = new Map<string, HistogramChild>();
  private readonly dbTimeouts: Counter<"kind">;

  constructor(o: MetricsOptions) {
    const registers = [this.registry];
    const sql = o.db.sql;
    const finishedMaxAge = o.finishedCountMaxAgeMs ?? DEFAULT_FINISHED_COUNT_MAX_AGE_MS;
    // The finished counts, reused while younger than finishedMaxAge (their
    // age counts from when their statement started).
    let finished: { at: number; counts: [TaskStatus, number][] } | undefined;
    const finishedCounts = async () => {
      if (finished && Date.now() - finished.at < finishedMaxAge) return finished.counts;
      const at = Date.now();
      const counts = await metricsFinishedCounts(sql);
      finished = { at, counts };
      return counts;
    };
    // The database gauges: one statement per scrape, shared by all of them
    // (index-only counts of the unfinished statuses, the queued index for
    // the oldest), plus the finished counts when theirs are too old. A
    // scrape while the database is down leaves them empty.
    let pending: Promise<(MetricsScrape & { finished: [TaskStatus, number][] }) | undefined> | undefined;
    const scrape = () =>
      (pending ??= Promise.all([metricsScrape(sql), finishedCounts()])
        .then(([s, f]) => ({ ...s, finished: f }))
        .catch(() => undefined)
        // Shared by the collectors of this scrape (prom-client runs them in
        // one chain of promises), not by the next scrape.
        .finally(() => setImmediate(() => (pending = undefined))));
    let pgVersion = "unknown";
    collectDefaultMetrics({ register: this.registry });
    const reg = this.registry;
    this.calls = new CallMetrics(reg);
    // Database pool: in-use counts are the permits and slots lent now.
    // Registered before the database gauges: prom-client calls the
    // collectors in registration order, synchronously, so these read the
    // pools before this scrape's own statements take a connection.
    new Gauge({
      name: "statemgmt_db_pool_connections",
      help: "Connections of each pool: in_use (running a statement, or lent to a transaction) and idle (the rest of the pool's size).",
      labelNames: ["pool", "state"],
      registers,
      collect: function () {
        for (const [pool, u] of [["statements", poolUsage(sql)], ["transactions", o.db.tx.usage()]] as const) {
          this.set({ pool, state: "in_use" }, u.inUse);
          this.set({ pool, state: "idle" }, u.size - u.inUse);
        }
      },
    });
    new Gauge({
      name: "statemgmt_db_pool_waiting",
      help: "Statements waiting for a connection of the statements pool, transactions waiting for a slot.",
      labelNames: ["pool"],
      registers,
      collect: function () {
        this.set({ pool: "statements" }, poolUsage(sql).waiting);
        this.set({ pool: "transactions" }, o.db.tx.usage().waiting);
      },
    });
    new Gauge({
      name: "statemgmt_build_info",
      help: "Always 1; the labels name this build and its PostgreSQL.",
      labelNames: ["version", "postgres_version"],
      registers,
      collect: async function () {
        this.reset();
        const s = await scrape();
        if (s) pgVersion = s.postgresVersion;
        this.set({ version: o.version, postgres_version: pgVersion }, 1);
      },
    });
    new Gauge({
      name: "statemgmt_tasks",
      help: `Tasks by status: unfinished ones counted at each scrape, COMPLETE and TERMINATED at most ${finishedMaxAge / 1000} s ago.`,
      labelNames: ["status"],
      registers,
      collect: async function () {
        const s = await scrape();
        this.reset();
        if (!s) return;
        for (const [status, n] of [...s.unfinished, ...s.finished]) this.set({ status: status.toUpperCase() }, n);
      },
    });
    new Gauge({
      name: "statemgmt_queue_oldest_age_seconds",
      help: "Age of the oldest QUEUED task (0 when none).",
      registers,
      collect: async function () {
        const s = await scrape();
        this.reset();
        if (s) this.set(s.oldestQueuedAgeSeconds);
      },
    });
    new Gauge({
      name: "statemgmt_election_term",
      help: `Current term of each election with a live lease, among the first ${MAX_ELECTION_SERIES} elections (the default first, then by name).`,
      labelNames: ["election"],
      registers,
      collect: async function () {
        const s = await scrape();
        this.reset();
        for (const [election, term] of s?.electionTerms ?? []) this.set({ election }, Number(term));
      },
    });
    this.watch = new WatchMetrics(registers, scrape);
    new Gauge({
      name: "statemgmt_database_up",
      help: "1 when the scrape's query reached the database.",
      registers,
      collect: async function () {
        this.set((await scrape()) ? 1 : 0);
      },
    });


    this.keystone = new KeystoneMetrics(reg);
    this.queryDuration = new FastHistogram(
      this.registry,
      "statemgmt_db_query_duration_seconds",
      "Duration of database statements from the moment they had a connection, by statement name.",
      ["statement"],
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.dbTimeouts = new Counter({
      name: "statemgmt_db_timeouts_total",
      help: "Statements the database ended at lock_timeout (kind=lock, 55P03) or statement_timeout (kind=statement, 57014).",
      labelNames: ["kind"],
      registers,
    });
    for (const kind of METRICS_TIMEOUT_KINDS) this.dbTimeouts.inc({ kind }, 0);
    observeQueries(sql, this);
    o.db.tx.observe(this);
    this.design = new DesignMetrics(reg);
  }

  // QueryObserver
  queried(statement: string, seconds: number, errorCode: string | undefined): void {
    let h = this.queryDurationByName.get(statement);
    if (!h) this.queryDurationByName.set(statement, (h = this.queryDuration.child({ statement })));
    h.observe(seconds);
    const kind = metricsTimeoutKind(errorCode);
    if (kind) this.dbTimeouts.inc({ kind });
  }
}
