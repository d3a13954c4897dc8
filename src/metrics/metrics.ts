// The service's Prometheus metrics, on a registry of their own. Other parts
// report through small interfaces (CallObserver, ServiceCounters,
// QueryObserver, DesignObserver) and never import prom-client. gRPC metrics use go-grpc-prometheus's names and labels,
// so existing dashboards and alerts work unchanged.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { FastCounter, FastHistogram, type CounterChild, type HistogramChild } from "./fast.js";
import type { CallObserver, MethodLabels } from "../contract/contract.js";
import type { ServiceCounters } from "./counters.js";
import { observeQueries, poolUsage, type QueryObserver } from "../db/connect.js";
import type { DesignObserver } from "../design/fetcher.js";
import type { TaskStatus } from "../core/domain.js";
import { MAX_ELECTION_SERIES, METRICS_TIMEOUT_KINDS, metricsFinishedCounts, metricsScrape, metricsTimeoutKind, type MetricsScrape } from "../store/metrics.js";
import type { Db } from "../store/transactions.js";
import { WatchMetrics } from "./watchMetrics.js";


const GRPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"] as const;
/** Streaming methods whose open calls are watch streams, by kind. */
const WATCH_KINDS = new Map([
  ["drydock.statemgmt.v1.StateService/WatchTask", "task"],
  ["drydock.statemgmt.v1.StateService/WatchTasks", "tasks"],
  ["drydock.statemgmt.v1.StateService/WatchLeader", "leader"],
  ["grpc.health.v1.Health/Watch", "health"],
]);

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

interface MethodChildren {
  started: CounterChild;
  received: CounterChild;
  sent: CounterChild;
  handling: HistogramChild;
  handled(code: string): CounterChild;
  /** Its watch stream kind, for watch methods. */
  kind: string | undefined;
  /** statemgmt_watch_events_sent_total's child for a watch method. */
  watchEvents: CounterChild | undefined;
}

export class Metrics implements CallObserver, ServiceCounters, QueryObserver, DesignObserver {
  readonly registry = new Registry();
  private readonly startedTotal: FastCounter;
  private readonly handledTotal: FastCounter;
  private readonly msgReceived: FastCounter;
  private readonly msgSent: FastCounter;
  private readonly handling: FastHistogram;
  /** Each method's children, resolved at its first call (MethodLabels objects are made once per method). */
  private readonly byMethod = new WeakMap<MethodLabels, MethodChildren>();
  private readonly watchStreams: Gauge<"kind">;
  private readonly watchEvents: FastCounter;
  private readonly appended: Counter;
  private readonly buildData: Counter;
  private readonly rateLimited: Counter;
  /** The watch path's and the leadership RPCs' counters (watchMetrics.ts). */
  readonly watch: WatchMetrics;
  private readonly queryDuration: FastHistogram;
  private readonly queryDurationByName = new Map<string, HistogramChild>();
  private readonly dbTimeouts: Counter<"kind">;
  private readonly designFetches: Counter<"scheme" | "outcome">;
  private readonly designBytes: Counter<"scheme">;
  private readonly designHits: Counter<"scheme">;
  private readonly designDuration: Histogram<"scheme">;
  /** Keystone's origin and whether it answers, once observeKeystone was called. */
  private keystone: { endpoint: string; up: () => boolean } | undefined;

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
    this.startedTotal = new FastCounter(reg, "grpc_server_started_total", "RPCs started on the server.", GRPC_LABELS);
    this.handledTotal = new FastCounter(reg, "grpc_server_handled_total", "RPCs completed on the server, regardless of success or failure.", [...GRPC_LABELS, "grpc_code"]);
    this.msgReceived = new FastCounter(reg, "grpc_server_msg_received_total", "Stream messages received by the server.", GRPC_LABELS);
    this.msgSent = new FastCounter(reg, "grpc_server_msg_sent_total", "Stream messages sent by the server.", GRPC_LABELS);
    this.handling = new FastHistogram(reg, "grpc_server_handling_seconds", "Response latency of RPCs handled by the server, in seconds.", GRPC_LABELS, [
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]);
    this.watchStreams = new Gauge({ name: "statemgmt_watch_streams", help: "Watch streams open now, by kind.", labelNames: ["kind"], registers });
    // Counted once per event per stream (1,000 watchers: 1,000 times an event), so resolved once per method.
    this.watchEvents = new FastCounter(reg, "statemgmt_watch_events_sent_total", "Events sent on watch streams, by kind.", ["kind"]);
    this.appended = new Counter({ name: "statemgmt_result_messages_appended_total", help: "Result messages appended.", registers });
    this.buildData = new Counter({ name: "statemgmt_build_data_stored_total", help: "Build data records stored.", registers });
    this.rateLimited = new Counter({
      name: "statemgmt_node_calls_rate_limited_total",
      help: "Key-authorized calls (ReportBootActionStatus, VerifyBootActionKey) refused by the per-address rate limit.",
      registers,
    });
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

    const keystone = () => this.keystone;
    new Gauge({
      name: "statemgmt_keystone_up",
      help: "1 while Keystone answers token validations, 0 while it does not (absent without Keystone validation).",
      labelNames: ["endpoint"],
      registers,
      collect: function () {
        this.reset();
        const k = keystone();
        if (k) this.set({ endpoint: k.endpoint }, k.up() ? 1 : 0);
      },
    });

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

    // Design fetches.
    this.designFetches = new Counter({
      name: "statemgmt_design_fetches_total",
      help: "Design documents requested from their sources (cache misses), by scheme and outcome (ok, or the error's reason).",
      labelNames: ["scheme", "outcome"],
      registers,
    });
    this.designBytes = new Counter({ name: "statemgmt_design_fetched_bytes_total", help: "Bytes of design documents fetched from their sources.", labelNames: ["scheme"], registers });
    this.designHits = new Counter({ name: "statemgmt_design_cache_hits_total", help: "Design documents served from the cache.", labelNames: ["scheme"], registers });
    this.designDuration = new Histogram({
      name: "statemgmt_design_fetch_duration_seconds",
      help: "Duration of design fetches from their sources, retries and redirects included, whatever the outcome.",
      labelNames: ["scheme"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
  }

  // QueryObserver
  queried(statement: string, seconds: number, errorCode: string | undefined): void {
    let h = this.queryDurationByName.get(statement);
    if (!h) this.queryDurationByName.set(statement, (h = this.queryDuration.child({ statement })));
    h.observe(seconds);
    const kind = metricsTimeoutKind(errorCode);
    if (kind) this.dbTimeouts.inc({ kind });
  }

  // DesignObserver
  fetched(scheme: string, outcome: string, seconds: number, bytes: number): void {
    this.designFetches.inc({ scheme, outcome });
    this.designDuration.observe({ scheme }, seconds);
    if (bytes > 0) this.designBytes.inc({ scheme }, bytes);
  }

  /** Reports Keystone's health in statemgmt_keystone_up (endpoint: its origin). */
  observeKeystone(endpoint: string, up: () => boolean): void {
    this.keystone = { endpoint, up };
  }

  cacheHit(scheme: string): void {
    this.designHits.inc({ scheme });
  }

  private children(m: MethodLabels): MethodChildren {
    let c = this.byMethod.get(m);
    if (!c) {
      const kind = WATCH_KINDS.get(`${m.grpc_service}/${m.grpc_method}`);
      const handled = new Map<string, CounterChild>();
      c = {
        started: this.startedTotal.child({ ...m }),
        received: this.msgReceived.child({ ...m }),
        sent: this.msgSent.child({ ...m }),
        handling: this.handling.child({ ...m }),
        handled: (code) => {
          let h = handled.get(code);
          if (!h) handled.set(code, (h = this.handledTotal.child({ ...m, grpc_code: code })));
          return h;
        },
        kind,
        watchEvents: kind ? this.watchEvents.child({ kind }) : undefined,
      };
      this.byMethod.set(m, c);
    }
    return c;
  }

  // CallObserver
  started(m: MethodLabels): void {
    const c = this.children(m);
    c.started.inc();
    if (c.kind) this.watchStreams.inc({ kind: c.kind });
  }

  received(m: MethodLabels): void {
    this.children(m).received.inc();
  }

  sent(m: MethodLabels): void {
    const c = this.children(m);
    c.sent.inc();
    c.watchEvents?.inc();
  }

  handled(m: MethodLabels, code: string, seconds: number): void {
    const c = this.children(m);
    c.handled(code).inc();
    c.handling.observe(seconds);
    if (c.kind) this.watchStreams.dec({ kind: c.kind });
  }

  // ServiceCounters
  messagesAppended(n: number): void {
    this.appended.inc(n);
  }

  buildDataStored(): void {
    this.buildData.inc();
  }

  nodeCallRateLimited(): void {
    this.rateLimited.inc();
  }
}
