import { randomUUID } from "node:crypto";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService, type WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { LISTENER_APPLICATION_NAME } from "../src/watch/listener.js";
import { createTestDatabase, decodeError, eventually, quietPeriod, range, setStatus, startTestServer, useServer, type Harness } from "./kit/index.js";
import { TcpProxy } from "./proxy.js";

type Stream = AsyncIterable<WatchTaskResponse> & grpc.ClientReadableStream<WatchTaskResponse>;

/** Collects a WatchTask stream until it ends; returns sequences, snapshots and the final status. */
async function collect(stream: Stream, onMessage?: (seq: bigint) => void) {
  const seqs: bigint[] = [];
  const statuses: TaskStatus[] = [];
  let error: unknown;
  try {
    for await (const ev of stream) {
      if (ev.event.case === "message") {
        seqs.push(ev.event.value.sequence);
        onMessage?.(ev.event.value.sequence);
      } else if (ev.event.case === "task") statuses.push(ev.event.value.status);
    }
  } catch (err) {
    error = err;
  }
  return { seqs, statuses, error };
}

/**
 * Terminates the hub's LISTEN connection and waits until it listens again.
 * If the hub is replacing it at that moment (a heartbeat it did not hear in
 * time), there may briefly be none to kill: try again.
 */
async function killListener(h: Harness) {
  let relistened: Promise<unknown> = Promise.resolve();
  await eventually(
    async () => {
      relistened = once(h.server.hub, "listening");
      const { rows } = await h.pg.query(
        `select pg_terminate_backend(pid) ok from pg_stat_activity where datname = current_database() and application_name = $1`,
        [LISTENER_APPLICATION_NAME],
      );
      return rows.length >= 1;
    },
    5000,
    "a LISTEN connection of the hub to kill",
  );
  await relistened;
}

/** Resolves when the server's hub has at least `n` subscriptions of the task. */
const watchers = (h: Harness, taskId: string, n = 1) => h.probe.watchers(taskId, n);

describe("watching tasks", () => {
  // A heartbeat of 1 s: short enough for the tests, long enough that a busy
  // event loop (500 streams opening) does not make the hub replace its
  // connection in the middle of one.
  const h = useServer({ dbPoolSize: 12, heartbeatMs: 1000 });

  it("delivers 2,000 concurrently appended messages exactly once, in order, then ends OK on COMPLETE", async function () {
    this.timeout(60_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    const watch = collect(h.client.watchTask({ taskId }) as Stream);
    await watchers(h, taskId);
    const clients = Array.from({ length: 8 }, () => createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }));
    await Promise.all(
      clients.map(async (c, w) => {
        for (let i = 0; i < 25; i++) {
          await c.appendResultMessages({ taskId, messages: Array.from({ length: 10 }, (_, k) => ({ message: `w${w} ${i}.${k}` })) });
        }
      }),
    );
    clients.forEach((c) => c.close());
    await setStatus(h.client, taskId, TaskStatus.COMPLETE);
    const { seqs, statuses, error } = await watch;
    expect(error).to.equal(undefined);
    expect(seqs).to.deep.equal(range(1, 2000));
    expect(statuses[0]).to.equal(TaskStatus.REQUESTED);
    expect(statuses[statuses.length - 1]).to.equal(TaskStatus.COMPLETE);
  });

  it("resumes after a disconnect at message k with exactly k+1..n", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    await h.client.appendResultMessages({ taskId, messages: Array.from({ length: 30 }, (_, i) => ({ message: `m${i + 1}` })) });
    const first = h.client.watchTask({ taskId }) as Stream;
    const got: bigint[] = [];
    for await (const ev of first) {
      if (ev.event.case !== "message") continue;
      got.push(ev.event.value.sequence);
      if (got.length === 17) break; // disconnect (cancels the call)
    }
    expect(got).to.deep.equal(range(1, 17));
    await h.client.appendResultMessages({ taskId, messages: Array.from({ length: 20 }, (_, i) => ({ message: `n${i + 1}` })) });
    const again = collect(h.client.watchTask({ taskId, afterSequence: 17n }) as Stream);
    await h.client.appendResultMessages({ taskId, messages: [{ message: "last" }] });
    await setStatus(h.client, taskId, TaskStatus.COMPLETE);
    const { seqs, error } = await again;
    expect(error).to.equal(undefined);
    expect(seqs).to.deep.equal(range(18, 51));
  });

  it("ends at once for a finished task after sending what it has", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    await h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "a" }, { message: "b" }] });
    await setStatus(h.client, task!.taskId, TaskStatus.COMPLETE);
    const { seqs, statuses, error } = await collect(h.client.watchTask({ taskId: task!.taskId }) as Stream);
    expect(error).to.equal(undefined);
    expect(seqs).to.deep.equal([1n, 2n]);
    expect(statuses).to.deep.equal([TaskStatus.COMPLETE]);
  });

  it("sends a snapshot on status, result and termination changes, and ends on TERMINATED", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes", initialStatus: TaskStatus.QUEUED });
    const taskId = task!.taskId;
    const stream = h.client.watchTask({ taskId }) as Stream;
    const events: string[] = [];
    const done = (async () => {
      for await (const ev of stream) {
        events.push(ev.event.case === "task" ? `task:${TaskStatus[ev.event.value.status]}:${ev.event.value.terminate}` : `msg:${ev.event.value!.sequence}`);
      }
    })();
    await watchers(h, taskId);
    await h.client.claimNextTask({ instanceId: "o1" });
    await h.client.appendResultMessages({ taskId, messages: [{ message: "working" }] });
    await h.client.terminateTask({ taskId, terminatedBy: "op" });
    await setStatus(h.client, taskId, TaskStatus.TERMINATED);
    await done;
    // Snapshots may coalesce when changes come faster than reads, but order holds
    // and the last one is TERMINATED.
    expect(events[0]).to.equal("task:QUEUED:false");
    expect(events).to.include("msg:1");
    expect(events[events.length - 1]).to.equal("task:TERMINATED:true");
  });

  it("answers NOT_FOUND for an unknown task and INVALID_ARGUMENT for a bad request", async () => {
    const err = await collect(h.client.watchTask({ taskId: randomUUID() }) as Stream);
    expect(decodeError(err.error).code).to.equal(grpc.status.NOT_FOUND);
    const bad = await collect(h.client.watchTask({ taskId: "x" }) as Stream);
    expect(decodeError(bad.error).code).to.equal(grpc.status.INVALID_ARGUMENT);
  });

  it("keeps every message in order when the LISTEN connection is killed while messages arrive", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    const watch = collect(h.client.watchTask({ taskId }) as Stream);
    await watchers(h, taskId);
    /** The appends come this far apart, and the kills this far apart: the kills fall among the appends. */
    const APPEND_EVERY_MS = 5;
    const KILL_EVERY_MS = 60;
    const writer = (async () => {
      for (let i = 0; i < 60; i++) {
        await h.client.appendResultMessages({ taskId, messages: [{ message: `m${i}` }] });
        await quietPeriod(APPEND_EVERY_MS, "paces the appends, so that messages arrive while the LISTEN connection is killed");
      }
    })();
    for (let k = 0; k < 3; k++) {
      await quietPeriod(KILL_EVERY_MS, "paces the kills among the appends");
      await killListener(h);
    }
    await writer;
    await setStatus(h.client, taskId, TaskStatus.COMPLETE);
    const { seqs, error } = await watch;
    expect(error).to.equal(undefined);
    expect(seqs).to.deep.equal(range(1, 60));
  });

  it("fans out to 500 watchers of one task over exactly one LISTEN connection", async function () {
    this.timeout(60_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    const clients = Array.from({ length: 4 }, () => createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }));
    const watches = Array.from({ length: 500 }, (_, i) => collect(clients[i % 4]!.watchTask({ taskId }) as Stream));
    await watchers(h, taskId, 500);
    // Exactly one (500 streams open no connection of their own). Should the
    // event loop stalled by 500 streams opening miss a heartbeat, the hub
    // replaces its connection, and for a moment there may be none or two:
    // wait for one.
    const seen: number[] = [];
    await eventually(
      async () => {
        const { rows } = await h.pg.query(`select count(*)::int n from pg_stat_activity where datname = current_database() and application_name = $1`, [
          LISTENER_APPLICATION_NAME,
        ]);
        seen.push(rows[0].n);
        return rows[0].n === 1;
      },
      5000,
      () => `one LISTEN connection (seen: ${seen.join(",")})`,
    ).catch(() => {}); // the expect below says what was seen
    expect(seen[seen.length - 1], `LISTEN connections seen: ${seen.join(",")}`).to.equal(1);
    for (let i = 0; i < 10; i++) {
      await h.client.appendResultMessages({ taskId, messages: Array.from({ length: 10 }, (_, k) => ({ message: `${i}.${k}` })) });
    }
    await setStatus(h.client, taskId, TaskStatus.COMPLETE);
    const results = await Promise.all(watches);
    clients.forEach((c) => c.close());
    for (const r of results) {
      expect(r.error).to.equal(undefined);
      expect(r.seqs).to.deep.equal(range(1, 100));
    }
  });

  it("ends a reader that stops reading with RESOURCE_EXHAUSTED while another keeps up", async function () {
    this.timeout(60_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    const slowClient = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
    const slow = slowClient.watchTask({ taskId }) as Stream;
    let slowError: unknown;
    slow.on("error", (e) => (slowError = e));
    const slowStatus = new Promise<grpc.StatusObject>((resolve) => slow.on("status", resolve));
    // Reads the first event (the snapshot), then stops reading. (A grpc-js
    // client that never starts reading buffers everything on its side instead
    // of applying HTTP/2 flow control, which would hide the server's bound.)
    const firstEvent = new Promise<void>((resolve) =>
      slow.once("data", () => {
        slow.pause();
        resolve();
      }),
    );
    await firstEvent;
    const fast = collect(h.client.watchTask({ taskId }) as Stream);
    await watchers(h, taskId, 2);
    const big = "x".repeat(1000);
    // 15,000 messages of 1 kB: more than the HTTP/2 windows and the stream's 10,000-event buffer.
    for (let i = 0; i < 15; i++) {
      await h.client.appendResultMessages({ taskId, messages: Array.from({ length: 1000 }, () => ({ message: big })) });
    }
    await setStatus(h.client, taskId, TaskStatus.COMPLETE);
    const f = await fast;
    expect(f.error).to.equal(undefined);
    expect(f.seqs.length).to.equal(15_000);
    // The server ended the stream; the client learns it after draining what was already in flight.
    let received = 0;
    slow.on("data", () => received++);
    slow.resume();
    const status = await slowStatus;
    slowClient.close();
    expect(grpc.status[status.code]).to.equal("RESOURCE_EXHAUSTED");
    expect(received).to.be.lessThan(15_000);
    const d = decodeError(slowError);
    expect(grpc.status[d.code]).to.equal("RESOURCE_EXHAUSTED");
    expect(d.errorInfo!.reason).to.equal("WATCH_BUFFER_FULL");
    await h.probe.until(() => h.probe.subscribers(taskId) === 0, "both streams unsubscribed");
  });

  it("WatchTasks sends the initial set, then every change of a matching task, newest version last", async function () {
    this.timeout(20_000);
    const action = `wt_${Math.random().toString(36).slice(2, 8)}`;
    const { task: a } = await h.client.createTask({ action, initialStatus: TaskStatus.QUEUED });
    await h.client.createTask({ action: "other_action", initialStatus: TaskStatus.QUEUED });
    const stream = h.client.watchTasks({ actions: [action], sendInitial: true });
    const seen: { id: string; version: bigint; status: TaskStatus; initial: boolean }[] = [];
    const reading = (async () => {
      for await (const ev of stream) {
        seen.push({ id: ev.task!.taskId, version: ev.task!.version, status: ev.task!.status, initial: ev.initial });
        if (ev.task!.status === TaskStatus.COMPLETE) break;
      }
    })();
    await eventually(() => seen.length > 0, 10_000, "the initial set");
    const { task: b } = await h.client.createTask({ action });
    await h.client.claimNextTask({ instanceId: "o", actions: [action] });
    await setStatus(h.client, b!.taskId, TaskStatus.COMPLETE);
    await reading;
    expect(seen[0]).to.deep.include({ id: a!.taskId, initial: true, status: TaskStatus.QUEUED });
    expect(seen.filter((s) => s.initial)).to.have.length(1);
    expect(seen.some((s) => s.id === a!.taskId && s.status === TaskStatus.RUNNING && !s.initial)).to.equal(true);
    expect(seen[seen.length - 1]).to.deep.include({ id: b!.taskId, status: TaskStatus.COMPLETE });
    // Per task, versions only go up.
    for (const id of [a!.taskId, b!.taskId]) {
      const vs = seen.filter((s) => s.id === id).map((s) => s.version);
      expect([...vs].sort((x, y) => (x < y ? -1 : 1))).to.deep.equal(vs);
      expect(new Set(vs).size).to.equal(vs.length);
    }
    expect(seen.every((s) => s.id === a!.taskId || s.id === b!.taskId)).to.equal(true);
  });

  it("sees writes made through another server process on the same database", async function () {
    this.timeout(60_000);
    const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/main.js");
    const child = spawn(process.execPath, [main, "--listen", "127.0.0.1:0"], {
      env: { ...process.env, DATABASE_URL: h.dbUrl, STATEMGMT_LOG_LEVEL: "info" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      const address = await new Promise<string>((resolve, reject) => {
        let buf = "";
        child.stdout!.on("data", (d: Buffer) => {
          buf += d.toString();
          const m = /"address":"([^"]+)","startupMs"/.exec(buf);
          if (m) resolve(m[1]!);
        });
        child.on("exit", (code) => reject(new Error(`replica exited ${code}`)));
      });
      const b = createClient(StateService, address);
      const { task } = await b.createTask({ action: "deploy_nodes" });
      const taskId = task!.taskId;
      const watch = collect(h.client.watchTask({ taskId }) as Stream); // through replica A (this process)
      await watchers(h, taskId);
      for (let i = 0; i < 20; i++) await b.appendResultMessages({ taskId, messages: [{ message: `via B ${i}` }] });
      await setStatus(b, taskId, TaskStatus.COMPLETE);
      const { seqs, statuses, error } = await watch;
      b.close();
      expect(error).to.equal(undefined);
      expect(seqs).to.deep.equal(range(1, 20));
      expect(statuses[statuses.length - 1]).to.equal(TaskStatus.COMPLETE);
    } finally {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
  });

  it("releases the feed when watchers go away", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const s = h.client.watchTask({ taskId: task!.taskId }) as Stream;
    for await (const ev of s) {
      expect(ev.event.case).to.equal("task");
      break;
    }
    await h.probe.until(() => h.probe.closedFeeds.includes(task!.taskId), "the feed closed");
    expect(h.probe.subscribers(task!.taskId)).to.equal(0);
    expect(h.probe.feeds).to.equal(0);
  });
});

describe("a LISTEN connection that silently hangs", () => {
  it("is detected by the heartbeat and replaced; watchers lose nothing", async function () {
    this.timeout(30_000);
    const db = await createTestDatabase();
    const target = new URL(db.url);
    const proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432));
    target.port = String(proxy.port);
    // Only the LISTEN connection goes through the proxy.
    const started = await startTestServer({ url: db.url, listenUrl: target.toString() }, { dbPoolSize: 4, dbTxPoolSize: 1, heartbeatMs: 150, metrics: true });
    const { server, client, probe } = started;
    const counted = async (name: string) => (await server.metrics!.registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;
    try {
      const { task } = await client.createTask({ action: "deploy_nodes" });
      const taskId = task!.taskId;
      const watch = collect(client.watchTask({ taskId }) as Stream);
      await probe.watchers(taskId);
      await client.appendResultMessages({ taskId, messages: [{ message: "before" }] });
      expect(proxy.accepted).to.equal(1);
      const replaced = once(server.hub, "listening");
      proxy.stall();
      await client.appendResultMessages({ taskId, messages: [{ message: "during 1" }, { message: "during 2" }] });
      await replaced; // the heartbeat went unheard and the connection was replaced
      await client.appendResultMessages({ taskId, messages: [{ message: "after" }] });
      await setStatus(client, taskId, TaskStatus.COMPLETE);
      const { seqs, error } = await watch;
      expect(error).to.equal(undefined);
      expect(seqs).to.deep.equal(range(1, 4));
      expect(proxy.accepted).to.equal(2); // a new LISTEN connection replaced the hung one
      expect(await counted("statemgmt_watch_heartbeat_replacements_total")).to.equal(1);
      expect(await counted("statemgmt_watch_listen_reconnects_total")).to.equal(1);
    } finally {
      await started.stop(1000);
      await proxy.close();
      await db.drop();
    }
  });
});
