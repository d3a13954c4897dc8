// Prometheus metrics and the HTTP probes, scraped over HTTP as Prometheus would.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import pg from "pg";
import type { WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { DEFAULT_TIMEOUTS } from "../src/db/connect.js";
import { createLogger } from "../src/core/log.js";
import { createTestDatabase, eventually, expectError, lockWaiters, startTestServer, useServer, type Harness } from "./kit/index.js";
import { startSource } from "./fakes.js";
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
const queries = (statement: string) => key("statemgmt_db_query_duration_seconds_count", { statement });
const pool = (name: "statements" | "transactions", state: "in_use" | "idle") => key("statemgmt_db_pool_connections", { pool: name, state });
const waiting = (name: "statements" | "transactions") => key("statemgmt_db_pool_waiting", { pool: name });

/**
 * Holds the row lock of a task from a connection of its own while `fn` runs
 * (not h.pg: inside a transaction, pg_stat_activity keeps showing its first read).
 */
async function withRowLocked<T>(h: Harness, taskId: string, fn: () => Promise<T>): Promise<T> {
  const holder = new pg.Client({ connectionString: h.dbUrl });
  await holder.connect();
  try {
    await holder.query("begin");
    await holder.query("select 1 from tasks where task_id = $1 for update", [taskId]);
    return await fn();
  } finally {
    await holder.query("rollback").catch(() => {});
    await holder.end();
  }
}

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
    const mid = await scrape(address);

    // Statements by name, between the two scrapes; the first scrape's own
    // statements (it counted the finished tasks too) settled after it was
    // written, so they are in the second.
    expect(delta(before, mid, queries("tasks.insert"))).to.equal(2);
    expect(delta(before, mid, queries("tasks.get"))).to.equal(1);
    expect(delta(before, mid, queries("tasks.claim"))).to.equal(1);
    expect(delta(before, mid, queries("messages.append"))).to.equal(1);
    expect(delta(before, mid, queries("metrics.scrape"))).to.equal(1);
    expect(delta(before, mid, queries("metrics.finished_counts"))).to.equal(1);
    expect(delta(before, mid, key("statemgmt_db_query_duration_seconds_bucket", { statement: "tasks.insert", le: "+Inf" }))).to.equal(2);
    // Nothing in use between calls (this scrape's own statement is not counted: the pools are read first).
    expect([mid.get(pool("statements", "in_use")), mid.get(pool("statements", "idle")), mid.get(waiting("statements"))]).to.deep.equal([0, 10, 0]);
    expect([mid.get(pool("transactions", "in_use")), mid.get(pool("transactions", "idle")), mid.get(waiting("transactions"))]).to.deep.equal([0, 5, 0]);
    expect(mid.get(key("statemgmt_db_timeouts_total", { kind: "lock" }))).to.equal(0);
    expect(mid.get(key("statemgmt_db_timeouts_total", { kind: "statement" }))).to.equal(0);

    const watch = h.client.watchTask({ taskId: a!.taskId });
    const it = (watch as AsyncIterable<WatchTaskResponse>)[Symbol.asyncIterator]();
    for (let i = 0; i < 4; i++) await it.next(); // the snapshot and three messages
    const during = await scrape(address);
    watch.cancel();

    expect(delta(before, during, key("grpc_server_started_total", unary("CreateTask")))).to.equal(2);
    expect(delta(before, during, key("grpc_server_handled_total", { ...unary("CreateTask"), grpc_code: "OK" }))).to.equal(2);
    expect(delta(before, during, key("grpc_server_handled_total", { ...unary("GetTask"), grpc_code: "NotFound" }))).to.equal(1);
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
    expect(during.get(key("statemgmt_tasks", { status: "QUEUED" }))).to.equal(0);
    expect(during.get(key("statemgmt_tasks", { status: "TERMINATING" }))).to.equal(0);
    expect(during.get(key("statemgmt_tasks", { status: "COMPLETE" }))).to.equal(0);
    expect(during.get(key("statemgmt_queue_oldest_age_seconds"))).to.equal(0);
    expect(during.get(key("statemgmt_election_term", { election: "metrics" }))).to.equal(1);
    expect(during.get(key("statemgmt_database_up"))).to.equal(1);
    expect([...during.keys()].some((k) => k.startsWith("statemgmt_build_info{") && k.includes('version="0.'))).to.equal(true);
    expect(during.has(key("process_cpu_seconds_total"))).to.equal(true);

    // The stream gauge falls once the server has seen the cancel.
    let after = await scrape(address);
    await eventually(
      async () => {
        after = await scrape(address);
        return after.get(key("statemgmt_watch_streams", { kind: "task" })) === 0;
      },
      5000,
      "the stream gauge back to 0",
    ).catch(() => {}); // the expect below says what it was
    expect(after.get(key("statemgmt_watch_streams", { kind: "task" }))).to.equal(0);
    expect(delta(before, after, key("grpc_server_handled_total", { ...watchLabels, grpc_code: "Canceled" }))).to.equal(1);
  });

  it("writes grpc_code as go-grpc-prometheus does (Go's code names), not grpc-js's enum names", async () => {
    const address = h.server.metricsAddress!;
    const before = await scrape(address);
    await expectError(h.client.getTask({ taskId: "not-a-uuid" }), grpc.status.INVALID_ARGUMENT);
    await expectError(h.client.getTask({ taskId: "00000000-0000-4000-8000-000000000001" }), grpc.status.NOT_FOUND);
    const after = await scrape(address);
    const codes = (s: Samples) =>
      new Map(
        [...s]
          .filter(([k]) => k.startsWith("grpc_server_handled_total{") && k.includes('grpc_method="GetTask"'))
          .map(([k, v]) => [/grpc_code="([^"]*)"/.exec(k)![1]!, v]),
      );
    expect(delta(before, after, key("grpc_server_handled_total", { ...unary("GetTask"), grpc_code: "InvalidArgument" }))).to.equal(1);
    expect(delta(before, after, key("grpc_server_handled_total", { ...unary("GetTask"), grpc_code: "NotFound" }))).to.equal(1);
    // Every GetTask series of the scrape, none spelled the grpc-js way (INVALID_ARGUMENT, NOT_FOUND).
    expect([...codes(after).keys()].sort()).to.deep.equal(["InvalidArgument", "NotFound"]);
  });

  it("reuses the COMPLETE and TERMINATED counts for up to their maximum age (5 minutes by default); unfinished counts are exact", async () => {
    const address = h.server.metricsAddress!;
    const before = await scrape(address);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    await h.client.updateTask({ task: { taskId: task!.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const after = await scrape(address);
    expect(delta(before, after, queries("metrics.finished_counts"))).to.equal(0);
    expect(after.get(key("statemgmt_tasks", { status: "COMPLETE" }))).to.equal(before.get(key("statemgmt_tasks", { status: "COMPLETE" })));
    const { task: other } = await h.client.createTask({ action: "deploy_nodes" });
    const again = await scrape(address);
    expect(delta(after, again, key("statemgmt_tasks", { status: "REQUESTED" }))).to.equal(1);
    await h.client.updateTask({ task: { taskId: other!.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
  });

  it("counts design fetches by scheme and outcome, their bytes and duration, and cache hits", async function () {
    this.timeout(20_000);
    const body = "site: metrics\nnodes: [a, b]\n";
    const source = await startSource({
      "/site.yaml": (_q, r) => void r.writeHead(200, { "content-type": "application/x-yaml" }).end(body),
    });
    try {
      const address = h.server.metricsAddress!;
      const http = (labels: Record<string, string> = {}) => ({ scheme: "http", ...labels });
      const before = await scrape(address);
      const first = await h.client.getDesignDocuments({ designRef: `${source.base}/site.yaml` });
      expect(first.fromCache).to.equal(false);
      const second = await h.client.getDesignDocuments({ designRef: `${source.base}/site.yaml` });
      expect(second.fromCache).to.equal(true);
      await expectError(h.client.getDesignDocuments({ designRef: `${source.base}/missing.yaml` }), grpc.status.NOT_FOUND);
      const after = await scrape(address);
      expect(source.hits("/site.yaml")).to.equal(1);
      expect(delta(before, after, key("statemgmt_design_fetches_total", http({ outcome: "ok" })))).to.equal(1);
      expect(delta(before, after, key("statemgmt_design_fetches_total", http({ outcome: "DESIGN_NOT_FOUND" })))).to.equal(1);
      expect(delta(before, after, key("statemgmt_design_fetched_bytes_total", http()))).to.equal(Buffer.byteLength(body));
      expect(delta(before, after, key("statemgmt_design_cache_hits_total", http()))).to.equal(1);
      expect(delta(before, after, key("statemgmt_design_fetch_duration_seconds_count", http()))).to.equal(2);
      expect([...after.keys()].filter((k) => k.startsWith("statemgmt_design_") && !k.includes('scheme="http"'))).to.deep.equal([]);
    } finally {
      await source.close();
    }
  });

  it("answers /healthz, and /readyz while the database answers; anything else is 404", async () => {
    const address = h.server.metricsAddress!;
    expect((await fetch(`http://${address}/healthz`)).status).to.equal(200);
    expect((await fetch(`http://${address}/readyz`)).status).to.equal(200);
    expect((await fetch(`http://${address}/nope`)).status).to.equal(404);
  });

  it("names in docs/metrics.md's metrics table exactly the metrics the server exposes (besides Node's process metrics)", async () => {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const section = await readFile(path.resolve(here, "../../docs/metrics.md"), "utf8");
    const rows = [...section.matchAll(/^\| `((?:grpc_server|statemgmt)_[a-z_]+)` \| [a-z]+ \|([^|]*)\|/gm)];
    const documented = new Set(rows.map((m) => m[1]));
    const registry = h.server.metrics!.registry;
    const exposed = new Set(
      registry
        .getMetricsAsArray()
        .map((m) => m.name)
        .filter((n) => n.startsWith("grpc_server_") || n.startsWith("statemgmt_")),
    );
    expect([...documented].sort()).to.deep.equal([...exposed].sort());
    // Each row's labels column names exactly the metric's labels: the `code` words outside
    // parentheses (inside them: example values); "the same + ..." adds to the row above's.
    let previous: string[] = [];
    for (const [, name, cell] of rows) {
      const named = [...cell!.replace(/\([^)]*\)/g, "").matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!);
      const labels = cell!.trim().startsWith("the same") ? [...previous, ...named] : named;
      previous = labels;
      const metric = registry.getSingleMetric(name!) as unknown as { labelNames: readonly string[] };
      expect([...labels].sort(), `labels of ${name} in docs/metrics.md`).to.deep.equal([...metric.labelNames].sort());
    }
  });
});

/** Reads one metric from the server's registry without a scrape (a scrape's own statement needs a pool connection). */
async function gauge(h: Harness, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const m = await h.server.metrics!.registry.getSingleMetric(name)!.get();
  return m.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;
}

const timeouts = (kind: "lock" | "statement") => key("statemgmt_db_timeouts_total", { kind });

describe("metrics: lock timeouts", function () {
  this.timeout(30_000);
  const h = useServer({ metrics: true, dbTimeouts: { ...DEFAULT_TIMEOUTS, lockTimeoutMs: 300 } });

  it("counts each statement that hit lock_timeout once, in a transaction and alone (ABORTED LOCK_TIMEOUT)", async () => {
    const address = h.server.metricsAddress!;
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const before = await scrape(address);
    await withRowLocked(h, task!.taskId, async () => {
      const update = await expectError(
        h.client.updateTask({ task: { taskId: task!.taskId, retry: 1 }, updateMask: { paths: ["retry"] } }),
        grpc.status.ABORTED,
      );
      expect(update.errorInfo!.reason).to.equal("LOCK_TIMEOUT");
      const mid = await scrape(address);
      expect(delta(before, mid, timeouts("lock"))).to.equal(1);
      expect(delta(before, mid, queries("tasks.update.lock"))).to.equal(1);
      // It waited out the lock timeout: no observation under 0.25 s.
      expect(delta(before, mid, key("statemgmt_db_query_duration_seconds_bucket", { statement: "tasks.update.lock", le: "0.25" }))).to.equal(0);
      const append = await expectError(h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "x" }] }), grpc.status.ABORTED);
      expect(append.errorInfo!.reason).to.equal("LOCK_TIMEOUT");
      const after = await scrape(address);
      expect(delta(mid, after, timeouts("lock"))).to.equal(1);
      // Two appends: the coalesced statement skipped the locked row (it never waits for a lock),
      // then the append alone waited it out.
      expect(delta(mid, after, queries("messages.append"))).to.equal(2);
      expect(delta(before, after, timeouts("statement"))).to.equal(0);
    });
  });
});

describe("metrics: statement timeouts and finished counts without a cache", function () {
  this.timeout(30_000);
  const h = useServer({ metrics: true, dbTimeouts: { ...DEFAULT_TIMEOUTS, statementTimeoutMs: 300, lockTimeoutMs: 0 }, metricsFinishedCountMaxAgeMs: 0 });

  it("counts each statement that hit statement_timeout once, in a transaction and alone (DEADLINE_EXCEEDED)", async () => {
    const address = h.server.metricsAddress!;
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const before = await scrape(address);
    await withRowLocked(h, task!.taskId, async () => {
      await expectError(h.client.updateTask({ task: { taskId: task!.taskId, retry: 1 }, updateMask: { paths: ["retry"] } }), grpc.status.DEADLINE_EXCEEDED);
      const mid = await scrape(address);
      expect(delta(before, mid, timeouts("statement"))).to.equal(1);
      await expectError(h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "x" }] }), grpc.status.DEADLINE_EXCEEDED);
      const after = await scrape(address);
      expect(delta(mid, after, timeouts("statement"))).to.equal(1);
      expect(delta(before, after, timeouts("lock"))).to.equal(0);
    });
  });

  it("with a maximum age of 0, counts COMPLETE and TERMINATED on every scrape", async () => {
    const address = h.server.metricsAddress!;
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const before = await scrape(address);
    await h.client.updateTask({ task: { taskId: task!.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const after = await scrape(address);
    expect(delta(before, after, key("statemgmt_tasks", { status: "COMPLETE" }))).to.equal(1);
    expect(delta(before, after, key("statemgmt_tasks", { status: "REQUESTED" }))).to.equal(-1);
    expect(delta(before, after, queries("metrics.finished_counts"))).to.equal(1);
  });
});

describe("metrics: pool gauges", function () {
  this.timeout(30_000);
  // One transaction slot and two pool connections, so that callers wait for them. Coalescing
  // off: each append is its own statement, so that three of them need three connections (with
  // it, the third would wait in the coalescer's queue, not for a connection).
  const h = useServer({ metrics: true, dbTxPoolSize: 1, dbPoolSize: 2, writeCoalescing: null });

  it("show a transaction holding the only slot and one waiting for it, then neither", async () => {
    const address = h.server.metricsAddress!;
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const update = (retry: number) => h.client.updateTask({ task: { taskId: task!.taskId, retry }, updateMask: { paths: ["retry"] } });
    const during = await withRowLocked(h, task!.taskId, async () => {
      const first = update(1);
      await eventually(async () => (await lockWaiters(h.pg)) === 1, 10_000, "the first update waits for the row lock");
      const second = update(2);
      await eventually(async () => (await gauge(h, "statemgmt_db_pool_waiting", { pool: "transactions" })) === 1, 10_000, "the second waits for the slot");
      const samples = await scrape(address);
      return { samples, calls: [first, second] };
    });
    const retries = (await Promise.all(during.calls)).map((r) => r.task!.retry);
    expect(retries).to.deep.equal([1, 2]);
    const d = during.samples;
    expect([d.get(pool("transactions", "in_use")), d.get(pool("transactions", "idle")), d.get(waiting("transactions"))]).to.deep.equal([1, 0, 1]);
    expect([d.get(pool("statements", "in_use")), d.get(pool("statements", "idle")), d.get(waiting("statements"))]).to.deep.equal([0, 2, 0]);
    const after = await scrape(address);
    expect([after.get(pool("transactions", "in_use")), after.get(pool("transactions", "idle")), after.get(waiting("transactions"))]).to.deep.equal([0, 1, 0]);
  });

  it("show statements holding every pool connection and one waiting for a connection, then none", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const append = (m: string) => h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: m }] });
    const seen = await withRowLocked(h, task!.taskId, async () => {
      const blocked = [append("1"), append("2")];
      await eventually(async () => (await lockWaiters(h.pg)) === 2, 10_000, "two appends wait for the row lock");
      const third = append("3");
      await eventually(async () => (await gauge(h, "statemgmt_db_pool_waiting", { pool: "statements" })) === 1, 10_000, "the third waits for a connection");
      const inUse = await gauge(h, "statemgmt_db_pool_connections", { pool: "statements", state: "in_use" });
      const idle = await gauge(h, "statemgmt_db_pool_connections", { pool: "statements", state: "idle" });
      return { inUse, idle, calls: [...blocked, third] };
    });
    expect([seen.inUse, seen.idle]).to.deep.equal([2, 0]);
    expect((await Promise.all(seen.calls)).map((r) => r.sequences.length)).to.deep.equal([1, 1, 1]);
    const after = await scrape(h.server.metricsAddress!);
    expect([after.get(pool("statements", "in_use")), after.get(pool("statements", "idle")), after.get(waiting("statements"))]).to.deep.equal([0, 2, 0]);
  });
});

describe("metrics while the database is down", () => {
  it("/readyz answers 503 and /metrics stays available (statemgmt_database_up 0)", async function () {
    this.timeout(30_000);
    const db = await createTestDatabase();
    const target = new URL(db.url);
    const proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432));
    target.port = String(proxy.port);
    const started = await startTestServer({ url: target.toString() }, { dbPoolSize: 2, dbTxPoolSize: 1, healthIntervalMs: 100, metrics: true });
    const { server } = started;
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
      await started.stop(1000);
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
    const calls = lines
      .map((l) => JSON.parse(l) as { msg: string; method?: string; trace_id?: string })
      .filter((l) => l.msg === "call" && l.method?.endsWith("/GetLeader"));
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

  it("counts lease expiries and takeovers exactly, and shows each election held or not", async () => {
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

  it("keeps the election series bounded: the default and the next 19 by name each, the rest counted under (other)", async function () {
    this.timeout(60_000);
    const address = h.server.metricsAddress!;
    const ttl = { seconds: 3600n };
    // Long names (128 characters is the maximum), sorting before "orchestrator", the default.
    const name = (i: number) => `m-${String(i).padStart(4, "0")}-`.padEnd(100, "x");
    const claimMany = async (from: number, to: number) => {
      for (let i = from; i < to; i += 20) {
        await Promise.all(
          Array.from({ length: Math.min(20, to - i) }, (_, j) => h.client.claimLeadership({ election: name(i + j), instanceId: "flood", ttl })),
        );
      }
    };
    expect((await h.client.claimLeadership({ election: "", instanceId: "orch-1", ttl })).isLeader).to.equal(true);
    const body = async () => await (await fetch(`http://${address}/metrics`)).text();
    const electionLines = (text: string) => text.split("\n").filter((l) => /^statemgmt_election_(held|term)\{/.test(l));
    const live = async () =>
      (await h.pg.query<{ n: number }>("select count(*)::int as n from leases where holder is not null and expires_at > clock_timestamp()")).rows[0]!.n;

    await claimMany(0, 100);
    await body(); // the first scrapes add series of their own (the scrape statement's duration)
    const first = await body();
    await claimMany(100, 200);
    const second = await body();
    for (const text of [first, second]) {
      const lines = electionLines(text);
      const held = lines.filter((l) => l.startsWith("statemgmt_election_held{"));
      expect(held, "held series: 20 elections and (other)").to.have.length(21);
      expect(lines.filter((l) => l.startsWith("statemgmt_election_term{")).length).to.be.at.most(20);
      expect(held[0]).to.match(/^statemgmt_election_held\{election="orchestrator"\} 1$/);
      expect(held.filter((l) => l.includes(`election="${name(0)}"`))).to.have.length(1); // by name after the default
    }
    const samples = await scrape(address);
    const heldSum = [...samples].filter(([k]) => k.startsWith("statemgmt_election_held{")).reduce((a, [, v]) => a + v, 0);
    expect(heldSum, "the held series add up to every live lease").to.equal(await live());
    const listedHeld = [...samples].filter(([k]) => k.startsWith("statemgmt_election_held{") && !k.includes('"(other)"')).reduce((a, [, v]) => a + v, 0);
    expect(samples.get(key("statemgmt_election_held", { election: "(other)" }))).to.equal((await live()) - listedHeld);
    // 100 more elections change a number, not the size of a scrape.
    expect(Math.abs(second.length - first.length), `${first.length} → ${second.length} bytes`).to.be.below(300);
  });
});
