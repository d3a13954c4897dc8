// The service's Prometheus metrics, on a registry of their own. Other parts
// report through small interfaces (CallObserver, ServiceCounters) and never
// import prom-client. gRPC metrics use go-grpc-prometheus's names and labels,
// so existing dashboards and alerts work unchanged.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { CallObserver, MethodLabels } from "../contract.js";
import type { ServiceCounters } from "./counters.js";
import type { Sql } from "../db/connect.js";
import { metricsScrape, type MetricsScrape } from "../store/metrics.js";
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
  sql: Sql;
  version: string;
}

export class Metrics implements CallObserver, ServiceCounters {
  readonly registry = new Registry();
  private readonly startedTotal: Counter<(typeof GRPC_LABELS)[number]>;
  private readonly handledTotal: Counter<(typeof GRPC_LABELS)[number] | "grpc_code">;
  private readonly msgReceived: Counter<(typeof GRPC_LABELS)[number]>;
  private readonly msgSent: Counter<(typeof GRPC_LABELS)[number]>;
  private readonly handling: Histogram<(typeof GRPC_LABELS)[number]>;
  private readonly watchStreams: Gauge<"kind">;
  private readonly watchEvents: Counter<"kind">;
  private readonly appended: Counter;
  private readonly buildData: Counter;
  /** The watch path's and the leadership RPCs' counters (watchMetrics.ts). */
  readonly watch: WatchMetrics;

  constructor(o: MetricsOptions) {
    const registers = [this.registry];
    // The database gauges: one query per scrape, shared by all of them
    // (index-only on status for the counts, the queued index for the
    // oldest). A scrape while the database is down leaves them empty.
    let pending: Promise<MetricsScrape | undefined> | undefined;
    const scrape = () =>
      (pending ??= metricsScrape(o.sql)
        .catch(() => undefined)
        // Shared by the collectors of this scrape (prom-client runs them in
        // one chain of promises), not by the next scrape.
        .finally(() => setImmediate(() => (pending = undefined))));
    let pgVersion = "unknown";
    collectDefaultMetrics({ register: this.registry });
    this.startedTotal = new Counter({ name: "grpc_server_started_total", help: "RPCs started on the server.", labelNames: GRPC_LABELS, registers });
    this.handledTotal = new Counter({
      name: "grpc_server_handled_total",
      help: "RPCs completed on the server, regardless of success or failure.",
      labelNames: [...GRPC_LABELS, "grpc_code"],
      registers,
    });
    this.msgReceived = new Counter({ name: "grpc_server_msg_received_total", help: "Stream messages received by the server.", labelNames: GRPC_LABELS, registers });
    this.msgSent = new Counter({ name: "grpc_server_msg_sent_total", help: "Stream messages sent by the server.", labelNames: GRPC_LABELS, registers });
    this.handling = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Response latency of RPCs handled by the server, in seconds.",
      labelNames: GRPC_LABELS,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.watchStreams = new Gauge({ name: "statemgmt_watch_streams", help: "Watch streams open now, by kind.", labelNames: ["kind"], registers });
    this.watchEvents = new Counter({ name: "statemgmt_watch_events_sent_total", help: "Events sent on watch streams, by kind.", labelNames: ["kind"], registers });
    this.appended = new Counter({ name: "statemgmt_result_messages_appended_total", help: "Result messages appended.", registers });
    this.buildData = new Counter({ name: "statemgmt_build_data_stored_total", help: "Build data records stored.", registers });
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
      help: "Tasks by status.",
      labelNames: ["status"],
      registers,
      collect: async function () {
        const s = await scrape();
        this.reset();
        for (const [status, n] of s?.tasksByStatus ?? []) this.set({ status: status.toUpperCase() }, n);
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
      help: "Current term of each election with a live lease.",
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
  }

  // CallObserver
  started(m: MethodLabels): void {
    this.startedTotal.inc(m);
    const kind = WATCH_KINDS.get(`${m.grpc_service}/${m.grpc_method}`);
    if (kind) this.watchStreams.inc({ kind });
  }

  received(m: MethodLabels): void {
    this.msgReceived.inc(m);
  }

  sent(m: MethodLabels): void {
    this.msgSent.inc(m);
    const kind = WATCH_KINDS.get(`${m.grpc_service}/${m.grpc_method}`);
    if (kind) this.watchEvents.inc({ kind });
  }

  handled(m: MethodLabels, code: string, seconds: number): void {
    this.handledTotal.inc({ ...m, grpc_code: code });
    this.handling.observe(m, seconds);
    const kind = WATCH_KINDS.get(`${m.grpc_service}/${m.grpc_method}`);
    if (kind) this.watchStreams.dec({ kind });
  }

  // ServiceCounters
  messagesAppended(n: number): void {
    this.appended.inc(n);
  }

  buildDataStored(): void {
    this.buildData.inc();
  }
}
