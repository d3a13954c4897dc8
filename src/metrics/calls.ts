// What the calls do: gRPC calls with go-grpc-prometheus's names and labels
// (so existing dashboards and alerts work unchanged), reported by the edge
// through CallObserver, and what the handlers count through ServiceCounters.
// The watch streams open and their events are counted here too: they are
// calls of the watch methods (health's Watch included), seen by the same
// observer; the watch path's own counters are in watches.ts.
import { Counter, Gauge, type Registry } from "prom-client";
import { FastCounter, FastHistogram, type CounterChild, type HistogramChild } from "./fast.js";
import type { CallObserver, MethodLabels } from "../contract/contract.js";
import type { ServiceCounters } from "./callCounters.js";

const GRPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"] as const;

/** Streaming methods whose open calls are watch streams, by kind. */
const WATCH_KINDS = new Map([
  ["drydock.statemgmt.v1.StateService/WatchTask", "task"],
  ["drydock.statemgmt.v1.StateService/WatchTasks", "tasks"],
  ["drydock.statemgmt.v1.StateService/WatchLeader", "leader"],
  ["grpc.health.v1.Health/Watch", "health"],
]);

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

export class CallMetrics implements CallObserver, ServiceCounters {
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

  constructor(registry: Registry) {
    const registers = [registry];
    this.startedTotal = new FastCounter(registry, "grpc_server_started_total", "RPCs started on the server.", GRPC_LABELS);
    this.handledTotal = new FastCounter(registry, "grpc_server_handled_total", "RPCs completed on the server, regardless of success or failure.", [
      ...GRPC_LABELS,
      "grpc_code",
    ]);
    this.msgReceived = new FastCounter(registry, "grpc_server_msg_received_total", "Stream messages received by the server.", GRPC_LABELS);
    this.msgSent = new FastCounter(registry, "grpc_server_msg_sent_total", "Stream messages sent by the server.", GRPC_LABELS);
    this.handling = new FastHistogram(
      registry,
      "grpc_server_handling_seconds",
      "Response latency of RPCs handled by the server, in seconds.",
      GRPC_LABELS,
      [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    );
    this.watchStreams = new Gauge({ name: "statemgmt_watch_streams", help: "Watch streams open now, by kind.", labelNames: ["kind"], registers });
    // Counted once per event per stream (1,000 watchers: 1,000 times an event), so resolved once per method.
    this.watchEvents = new FastCounter(registry, "statemgmt_watch_events_sent_total", "Events sent on watch streams, by kind.", ["kind"]);
    this.appended = new Counter({ name: "statemgmt_result_messages_appended_total", help: "Result messages appended.", registers });
    this.buildData = new Counter({ name: "statemgmt_build_data_stored_total", help: "Build data records stored.", registers });
    this.rateLimited = new Counter({
      name: "statemgmt_node_calls_rate_limited_total",
      help: "Key-authorized calls (ReportBootActionStatus, VerifyBootActionKey) refused by the per-address rate limit.",
      registers,
    });
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
          if (!h) {
            h = this.handledTotal.child({ ...m, grpc_code: code });
            handled.set(code, h);
          }
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
