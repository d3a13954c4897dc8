// What the database does and holds: every statement's duration and the
// timeouts that ended them (QueryObserver, for the statements pool and the
// transaction slots), both pools' use, and at scrape time the tasks by
// status, the oldest QUEUED task, whether the database answered and its
// version. The elections read by the same scrape are in watches.ts.
import { Counter, Gauge, type Registry } from "prom-client";
import { FastHistogram, type HistogramChild } from "./fast.js";
import { observeQueries, poolUsage, type QueryObserver } from "../db/connect.js";
import type { TaskStatus } from "../core/domain.js";
import { METRICS_TIMEOUT_KINDS, metricsTimeoutKind, type MetricsScrape } from "../store/metrics.js";
import type { Db } from "../store/transactions.js";

/** What a scrape read: the per-scrape statement's answer and the finished counts (maybe reused). */
export interface DatabaseScrape extends MetricsScrape {
  finished: [TaskStatus, number][];
}

export interface DatabaseMetricsOptions {
  /** The pool and transaction slots: their gauges, and every statement's duration and timeouts. */
  db: Db;
  version: string;
  /** Longest the finished counts are reused (for statemgmt_tasks's help). */
  finishedCountMaxAgeMs: number;
  /** This scrape's read, shared by every gauge that needs it; undefined when the database did not answer. */
  scrape: () => Promise<DatabaseScrape | undefined>;
}

export class DatabaseMetrics implements QueryObserver {
  private readonly queryDuration: FastHistogram;
  private readonly queryDurationByName = new Map<string, HistogramChild>();
  private readonly timeouts: Counter<"kind">;

  constructor(registry: Registry, o: DatabaseMetricsOptions) {
    const registers = [registry];
    // Registered before the scrape's gauges: prom-client calls the
    // collectors in registration order, synchronously, so these read the
    // pools before this scrape's own statements take a connection.
    poolGauges(registers, o.db);
    scrapeGauges(registers, o);
    this.queryDuration = new FastHistogram(
      registry,
      "statemgmt_db_query_duration_seconds",
      "Duration of database statements from the moment they had a connection, by statement name.",
      ["statement"],
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );
    this.timeouts = new Counter({
      name: "statemgmt_db_timeouts_total",
      help: "Statements the database ended at lock_timeout (kind=lock, 55P03) or statement_timeout (kind=statement, 57014).",
      labelNames: ["kind"],
      registers,
    });
    for (const kind of METRICS_TIMEOUT_KINDS) this.timeouts.inc({ kind }, 0);
    observeQueries(o.db.sql, this);
    o.db.tx.observe(this);
  }

  queried(statement: string, seconds: number, errorCode: string | undefined): void {
    let h = this.queryDurationByName.get(statement);
    if (!h) {
      h = this.queryDuration.child({ statement });
      this.queryDurationByName.set(statement, h);
    }
    h.observe(seconds);
    const kind = metricsTimeoutKind(errorCode);
    if (kind) this.timeouts.inc({ kind });
  }
}

/** In-use counts are the permits and slots lent now. */
function poolGauges(registers: Registry[], db: Db): void {
  new Gauge({
    name: "statemgmt_db_pool_connections",
    help: "Connections of each pool: in_use (running a statement, or lent to a transaction) and idle (the rest of the pool's size).",
    labelNames: ["pool", "state"],
    registers,
    collect: function () {
      for (const [pool, u] of [
        ["statements", poolUsage(db.sql)],
        ["transactions", db.tx.usage()],
      ] as const) {
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
      this.set({ pool: "statements" }, poolUsage(db.sql).waiting);
      this.set({ pool: "transactions" }, db.tx.usage().waiting);
    },
  });
}

/** The gauges of the scrape's read; a scrape while the database is down leaves them empty. */
function scrapeGauges(registers: Registry[], o: DatabaseMetricsOptions): void {
  const scrape = o.scrape;
  let pgVersion = "unknown";
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
    help: `Tasks by status: unfinished ones counted at each scrape, COMPLETE and TERMINATED at most ${o.finishedCountMaxAgeMs / 1000} s ago.`,
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
    name: "statemgmt_database_up",
    help: "1 when the scrape's query reached the database.",
    registers,
    collect: async function () {
      this.set((await scrape()) ? 1 : 0);
    },
  });
}
