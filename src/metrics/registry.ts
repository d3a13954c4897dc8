// The service's Prometheus metrics, on a registry of their own, split by what
// they observe: calls (calls.ts), the database (database.ts), the watch path
// and the elections (watches.ts), design fetches (design.ts) and Keystone
// (keystone.ts). Each module owns its families and implements the observer
// interface of what it observes (CallObserver and ServiceCounters,
// QueryObserver, WatchCounters and ElectionCounters, DesignObserver), so the
// rest of the service never imports prom-client. This module creates them,
// reads the database once per scrape for the gauges that need it, and renders
// the exposition.
import { Registry, collectDefaultMetrics } from "prom-client";
import type { TaskStatus } from "../core/domain.js";
import { SharedWork } from "../util/sharedWork.js";
import { metricsFinishedCounts, metricsScrape } from "../store/metrics.js";
import type { Db } from "../store/transactions.js";
import { CallMetrics } from "./calls.js";
import { DatabaseMetrics, type DatabaseScrape } from "./database.js";
import { DesignMetrics } from "./design.js";
import { KeystoneMetrics } from "./keystone.js";
import { WatchMetrics } from "./watches.js";

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

export class Metrics {
  readonly registry = new Registry();
  /** The gRPC calls and what their handlers count. */
  readonly calls: CallMetrics;
  /** The statements, the pools and the tables. */
  readonly database: DatabaseMetrics;
  /** The watch path's and the leadership RPCs' counters, and the elections. */
  readonly watch: WatchMetrics;
  /** Whether Keystone answers. */
  readonly keystone: KeystoneMetrics;
  /** The design fetches. */
  readonly design: DesignMetrics;

  constructor(o: MetricsOptions) {
    const finishedCountMaxAgeMs = o.finishedCountMaxAgeMs ?? DEFAULT_FINISHED_COUNT_MAX_AGE_MS;
    const scrape = scrapeRead(o.db, finishedCountMaxAgeMs);
    collectDefaultMetrics({ register: this.registry });
    this.calls = new CallMetrics(this.registry);
    // Before the gauges that read the scrape: database.ts reads the pools first.
    this.database = new DatabaseMetrics(this.registry, { db: o.db, version: o.version, finishedCountMaxAgeMs, scrape });
    this.watch = new WatchMetrics(this.registry, scrape);
    this.keystone = new KeystoneMetrics(this.registry);
    this.design = new DesignMetrics(this.registry);
  }

  /** The exposition: every family in Prometheus's text format (contentType). */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/**
 * The database gauges' read: one statement per scrape (index-only counts of
 * the unfinished statuses, the queued index for the oldest, the leases, the
 * server version), shared by all of them, plus the finished counts when
 * theirs are older than finishedMaxAgeMs. Undefined when the database did
 * not answer.
 */
function scrapeRead(db: Db, finishedMaxAgeMs: number): () => Promise<DatabaseScrape | undefined> {
  // The finished counts, reused while younger than finishedMaxAgeMs (their
  // age counts from when their statement started).
  let finished: { at: number; counts: [TaskStatus, number][] } | undefined;
  const finishedCounts = async () => {
    if (finished && Date.now() - finished.at < finishedMaxAgeMs) return finished.counts;
    const at = Date.now();
    const counts = await metricsFinishedCounts(db.sql);
    finished = { at, counts };
    return counts;
  };
  // Shared by the collectors of a scrape (prom-client starts them all in one
  // go) and by scrapes that overlap it, not by the next scrape: the flight
  // is forgotten once it settles. Nobody abandons it (no caller's signal).
  const reads = new SharedWork<"scrape", DatabaseScrape | undefined>({ whenAbandoned: "finish" });
  const read = () =>
    Promise.all([metricsScrape(db.sql), finishedCounts()])
      .then(([s, f]) => ({ ...s, finished: f }))
      .catch(() => undefined);
  return () => reads.wait("scrape", undefined, () => ({ promise: read(), context: undefined }));
}
