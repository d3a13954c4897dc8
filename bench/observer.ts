// What the metrics cost one GetTask in-process, without a network or a
// database: the CallObserver calls a unary call makes (started, received,
// sent, handled) and the one query observation, on a real Metrics.
//   node dist/bench/observer.js
import { connect } from "../src/db/connect.js";
import { Metrics } from "../src/metrics/registry.js";
import type { Transactor } from "../src/store/transactions.js";
import type { MethodLabels } from "../src/contract/contract.js";

// Never connected: the pool only gives Metrics its gauges' source.
const sql = connect({ url: "postgres://bench@127.0.0.1:1/none", max: 10 });
const tx = { usage: () => ({ size: 5, inUse: 0, waiting: 0 }), observe: () => {} } as unknown as Transactor;
const m = new Metrics({ db: { sql, tx }, version: "bench" });
const labels: MethodLabels = { grpc_type: "unary", grpc_service: "drydock.statemgmt.v1.StateService", grpc_method: "GetTask" };
const call = () => {
  m.calls.started(labels);
  m.calls.received(labels);
  m.database.queried("tasks.get", 0.0012, undefined);
  m.calls.sent(labels);
  m.calls.handled(labels, "OK", 0.0031);
};
const N = 300_000;
const rounds: number[] = [];
for (let round = 0; round < 5; round++) {
  const t0 = process.cpuUsage();
  for (let i = 0; i < N; i++) call();
  const d = process.cpuUsage(t0);
  rounds.push((d.user + d.system) / N);
}
const sorted = rounds.slice(1).sort((a, b) => a - b); // the first round warms up
console.log(
  `metrics per GetTask in-process: ${sorted[Math.floor(sorted.length / 2)]!.toFixed(2)} µs CPU (rounds: ${rounds.map((x) => x.toFixed(2)).join(", ")})`,
);
await sql.end({ timeout: 0 });
