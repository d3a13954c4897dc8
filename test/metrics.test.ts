// Prometheus metrics and the HTTP probes, scraped over HTTP as Prometheus would.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import type { WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { connect, DEFAULT_TIMEOUTS } from "../src/db/connect.js";
import { createLogger } from "../src/log.js";
import { startServer } from "../src/server/server.js";
import { createTransactor } from "../src/store/transactions.js";
import { createTestDatabase, expectError, useServer } from "./harness.js";
import { TcpProxy } from "./proxy.js";
import * as grpc from "@grpc/grpc-js";

type Samples = Map<string, number>;

/** Scrapes /metrics and parses the text format into `name{label="v",...}` → value (labels sorted). */
async function scrape(address: string): Promise<Samples> {
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).to.equal(200);
  expect(res.headers.get("content-type")).to.contain("text/plain");
  const out: Samples = new Map();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(m, `a sample line: ${line}`).to.not.equal(null);
    const labels = (m![2] ?? "").match(/[a-zA-Z_]+="(?:[^"\\]|\\.)*"/g) ?? [];
    out.set(`${m![1]}{${labels.sort().join(",")}}`, Number(m![3]));
  }
  return out;
}

const key = (name: string, labels: Record<string, string> = {}) =>
  `${name}{${Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(",")}}`;
const unary = (method: string) => ({ grpc_method: method, grpc_service: "drydock.statemgmt.v1.StateService", grpc_type: "unary" });
const delta = (before: Samples, after: Samples, k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);

describe("metrics", () => {
  const h = useServer({ metrics: true });

  it("counts a known sequence of calls exactly, with go-grpc-prometheus's names and labels", async function () {
    this.timeout(20_000);
    const address = h.server.metricsAddress!;
    const before = await scrape(address);
    const { task: a } = await h.client.createTask({ action: "deploy_nodes", initialStatus: TaskStatus.QUEUED });
    await h.client.createTask({ action: "deploy_nodes" });
    await expectError(h.client.getTask({ taskId: "00000000-0000-4000-8000-000000000000" }), grpc.status.NOT_FOUND);
    const { task: claimed } = await h.client.claimNextTask({ instanceId: "orch-1", actions: ["deploy_nodes"] });
    expect(claimed!.taskId).to.equal(a!.taskId);
    await h.client.appendResultMessages({ taskId: a!.taskId, messages: [{ message: "1" }, { message: "2" }, { message: "3", error: true }] });
    await h.client.claimLeadership({ election: "metrics", instanceId: "orch-1", ttl: { seconds: 60n } });

    const watch = h.client.watchTask({ taskId: a!.taskId });
    const it = (watch as AsyncIterable<WatchTaskResponse>)[Symbol.asyncIterator]();
    for (let i = 0; i < 4; i++) await it.next(); // the snapshot and three messages
    const during = await scrape(address);
    watch.cancel();

    expect(delta(before, during, key("grpc_server_started_total", unary("CreateTask")))).to.equal(2);
    expect(delta(before, during, key("grpc_server_handled_total", { ...unary("CreateTask"), grpc_code: "OK" }))).to.equal(2);
    expect(delta(before, during, key("grpc_server_handled_total", { ...unary("GetTask"), grpc_code: "NOT_FOUND" }))).to.equal(1);
    expect(delta(before, during, key("grpc_server_handling_seconds_count", unary("CreateTask")))).to.equal(2);
    expect(delta(before, during, key("grpc_server_handling_seconds_bucket", { ...unary("CreateTask"), le: "+Inf" }))).to.equal(2);
    expect(delta(before, during, key("grpc_server_msg_received_total", unary("ClaimNextTask")))).to.equal(1);
    expect(delta(before, during, key("grpc_server_msg_sent_total", unary("ClaimNextTask")))).to.equal(1);
    const watchLabels = { grpc_method: "WatchTask", grpc_service: "drydock.statemgmt.v1.StateService", grpc_type: "server_stream" };
    expect(delta(before, during, key("grpc_server_started_total", watchLabels))).to.equal(1);
    expect(delta(before, during, key("grpc_server_msg_sent_total", watchLabels))).to.equal(4);
    expect(during.get(key("statemgmt_watch_streams", { kind: "task" }))).to.equal(1);
    expect(delta(before, during, key("statemgmt_watch_events_sent_total", { kind: "task" }))).to.equal(4);
    expect(delta(before, during, key("statemgmt_result_messages_appended_total"))).to.equal(3);
    // Database gauges: this file's database holds exactly these tasks and this lease.
    expect(during.get(key("statemgmt_tasks", { status: "RUNNING" }))).to.equal(1);
    expect(during.get(key("statemgmt_tasks", { status: "REQUESTED" }))).to.equal(1);
    expect(during.get(key("statemgmt_queue_oldest_age_seconds"))).to.equal(0);
    expect(during.get(key("statemgmt_election_term", { election: "metrics" }))).to.equal(1);
    expect(during.get(key("statemgmt_database_up"))).to.equal(1);
    expect([...during.keys()].some((k) => k.startsWith("statemgmt_build_info{") && k.includes('version="0.'))).to.equal(true);
    expect(during.has(key("process_cpu_seconds_total"))).to.equal(true);

    // The stream gauge falls once the server has seen the cancel.
    let after = await scrape(address);
    for (let i = 0; i < 100 && after.get(key("statemgmt_watch_streams", { kind: "task" })) !== 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = await scrape(address);
    }
    expect(after.get(key("statemgmt_watch_streams", { kind: "task" }))).to.equal(0);
    expect(delta(before, after, key("grpc_server_handled_total", { ...watchLabels, grpc_code: "CANCELLED" }))).to.equal(1);
  });

  it("answers /healthz, and /readyz while the database answers; anything else is 404", async () => {
    const address = h.server.metricsAddress!;
    expect((await fetch(`http://${address}/healthz`)).status).to.equal(200);
    expect((await fetch(`http://${address}/readyz`)).status).to.equal(200);
    expect((await fetch(`http://${address}/nope`)).status).to.equal(404);
  });

  it("names in README's metrics table exactly the metrics the server exposes (besides Node's process metrics)", async () => {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const readme = await readFile(path.resolve(here, "../../README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Metrics"), readme.indexOf("\n## ", readme.indexOf("## Metrics") + 1));
    const documented = new Set([...section.matchAll(/^\| `((?:grpc_server|statemgmt)_[a-z_]+)` \|/gm)].map((m) => m[1]));
    const exposed = new Set(
      (await h.server.metrics!.registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => n.startsWith("grpc_server_") || n.startsWith("statemgmt_")),
    );
    expect([...documented].sort()).to.deep.equal([...exposed].sort());
  });
});

describe("metrics while the database is down", () => {
  it("/readyz answers 503 and /metrics stays available (statemgmt_database_up 0)", async function () {
    this.timeout(30_000);
    const db = await createTestDatabase();
    const target = new URL(db.url);
    const proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432));
    target.port = String(proxy.port);
    const sql = connect({ url: target.toString(), max: 2 });
    const tx = createTransactor({ url: target.toString(), slots: 1, timeouts: DEFAULT_TIMEOUTS });
    const server = await startServer({
      db: { sql, tx },
      databaseUrl: target.toString(),
      log: createLogger("silent"),
      host: "127.0.0.1",
      port: 0,
      healthIntervalMs: 100,
      metricsListen: { host: "127.0.0.1", port: 0 },
    });
    try {
      const address = server.metricsAddress!;
      const notServing = new Promise((resolve) => server.health.once("change", resolve));
      proxy.cut();
      await notServing;
      expect((await fetch(`http://${address}/readyz`)).status).to.equal(503);
      const samples = await scrape(address);
      expect(samples.get(key("statemgmt_database_up"))).to.equal(0);
      const serving = new Promise((resolve) => server.health.once("change", resolve));
      proxy.resume();
      await serving;
      expect((await fetch(`http://${address}/readyz`)).status).to.equal(200);
    } finally {
      await server.shutdown(1000);
      await sql.end({ timeout: 1 });
      await tx.end();
      await proxy.close();
      await db.drop();
    }
  });
});

describe("trace context in the log", () => {
  const lines: string[] = [];
  const h = useServer({ log: createLogger("info", { write: (s: string) => void lines.push(s) }) });

  it("puts the caller's W3C trace id on the call's log line, and a fresh one when there is none", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const metadata = new grpc.Metadata();
    metadata.set("traceparent", `00-${traceId}-00f067aa0ba902b7-01`);
    await h.client.getLeader({ election: "traced" }, { metadata });
    await h.client.getLeader({ election: "untraced" });
    const calls = lines.map((l) => JSON.parse(l) as { msg: string; method?: string; trace_id?: string }).filter((l) => l.msg === "call" && l.method?.endsWith("/GetLeader"));
    expect(calls).to.have.length(2);
    expect(calls[0]!.trace_id).to.equal(traceId);
    expect(calls[1]!.trace_id).to.match(/^[0-9a-f]{32}$/);
    expect(calls[1]!.trace_id).to.not.equal(traceId);
  });
});
