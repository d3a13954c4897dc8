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
import { once } from "node:events";
import { LISTENER_APPLICATION_NAME } from "../src/watch/listener.js";
import { TestClock } from "./clock.js";

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

describe("watch and lease metrics", () => {
  const clock = new TestClock();
  const h = useServer({ metrics: true, heartbeatMs: 500, clock });
  const value = async (name: string, labels: Record<string, string> = {}) =>
    (await h.server.metrics!.registry.getSingleMetric(name)!.get()).values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;

  it("counts notifications, one feed read per wake-up whatever the watchers, and each stream's ending by reason", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    await once(h.server.hub, "heartbeat"); // the creation's notification has been heard: it is not counted below
    const names = [
      ["statemgmt_watch_notifications_total", { channel: "tasks" }],
      ["statemgmt_watch_feed_reads_total", {}],
      ["statemgmt_watch_streams_ended_total", { kind: "task", reason: "task_finished" }],
      ["statemgmt_watch_streams_ended_total", { kind: "task", reason: "cancelled" }],
      ["statemgmt_watch_listen_reconnects_total", {}],
    ] as const;
    const before = await Promise.all(names.map(([n, l]) => value(n, l)));

    const finishing = h.client.watchTask({ taskId });
    const cancelled = h.client.watchTask({ taskId });
    const got = (stream: typeof finishing, messages: number) =>
      new Promise<void>((resolve) => {
        let n = 0;
        stream.on("data", (ev: WatchTaskResponse) => ev.event.case === "message" && ++n === messages && resolve());
      });
    const finishingGot = got(finishing, 3);
    const cancelledGot = got(cancelled, 3);
    const finishingDone = new Promise((resolve) => finishing.on("status", resolve));
    cancelled.on("error", () => {});
    await h.probe.watchers(taskId, 2);
    await h.client.appendResultMessages({ taskId, messages: [{ message: "1" }, { message: "2" }, { message: "3" }] });
    await Promise.all([finishingGot, cancelledGot]);
    const left = h.probe.until(() => h.probe.subscribers(taskId) === 1, "the cancelled stream left");
    cancelled.cancel();
    await left;
    await h.client.updateTask({ task: { taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    await finishingDone;
    await h.probe.until(() => h.probe.closedFeeds.includes(taskId), "the feed closed");
    await new Promise((r) => setImmediate(r)); // the counting runs as the stream's generator finishes

    const after = await Promise.all(names.map(([n, l]) => value(n, l)));
    const deltas = after.map((a, i) => a - before[i]!);
    // Two notifications (the append, the update), each one read for both watchers.
    expect(deltas).to.deep.equal([2, 2, 1, 1, 0]);

    // A LISTEN connection that is cut comes back: one reconnect.
    const relistened = once(h.server.hub, "listening");
    await h.pg.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = $1`, [
      LISTENER_APPLICATION_NAME,
    ]);
    await relistened;
    expect((await value("statemgmt_watch_listen_reconnects_total")) - before[4]!).to.equal(1);
  });

  it("counts lease expiries and takeovers exactly, and shows each election held or not", async function () {
    const address = h.server.metricsAddress!;
    const lease = { seconds: 1n };
    const before = await scrape(address);
    const claim = (instanceId: string) => h.client.claimLeadership({ election: "held", instanceId, ttl: lease });
    expect((await claim("A")).isLeader).to.equal(true);
    expect((await scrape(address)).get(key("statemgmt_election_held", { election: "held" }))).to.equal(1);
    clock.advance(1000);
    const b = await claim("B"); // over A's lapsed lease: an expiry and a takeover
    expect(b.isLeader).to.equal(true);
    clock.advance(1000);
    const again = await claim("B"); // B's own lapsed lease: an expiry, no takeover
    expect(again.leader!.term).to.equal(b.leader!.term + 1n);
    await h.client.resignLeadership({ election: "held", instanceId: "B", term: again.leader!.term });
    const held = await scrape(address);
    expect(held.get(key("statemgmt_election_held", { election: "held" }))).to.equal(0);
    expect((await claim("C")).isLeader).to.equal(true); // after a resignation: neither
    await claim("C"); // a renewal: neither
    const after = await scrape(address);
    expect(delta(before, after, key("statemgmt_election_lease_expiries_total"))).to.equal(2);
    expect(delta(before, after, key("statemgmt_election_takeovers_total"))).to.equal(1);
    clock.reset();
  });
});
