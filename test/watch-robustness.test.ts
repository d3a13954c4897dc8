// Watch streams under stress: small buffers and large appends, database
// failures while feeds read, and watchers that leave while a shared feed
// opens. All through real servers and the generated client.
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService, type WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";

import {
  createTestDatabase,
  decodeError,
  eventually,
  quietPeriod,
  range,
  setStatus as setStatusOf,
  startTestServer,
  useServer,
  type HarnessOptions,
  type StateClient,
  type TestServer,
} from "./kit/index.js";

type Stream = AsyncIterable<WatchTaskResponse> & grpc.ClientReadableStream<WatchTaskResponse>;

const messages = (n: number, text = "m") => Array.from({ length: n }, () => ({ message: text }));

interface Watched {
  seqs: bigint[];
  statuses: TaskStatus[];
  /** Resolves with the first event (the snapshot): the server has subscribed by then. */
  subscribed: Promise<void>;
  /** Resolves when the stream ends, with its error if it failed. */
  done: Promise<unknown>;
  ended: boolean;
  stream: Stream;
}

/** Reads a WatchTask stream in the background; `onMessage` runs on every message. */
function watch(stream: Stream, onMessage?: (seq: bigint) => void): Watched {
  const w = { seqs: [] as bigint[], statuses: [] as TaskStatus[], stream, ended: false } as Watched;
  let first!: () => void;
  w.subscribed = new Promise((r) => (first = r));
  w.done = new Promise((resolve) => {
    stream.on("data", (ev: WatchTaskResponse) => {
      first();
      if (ev.event.case === "message") {
        w.seqs.push(ev.event.value.sequence);
        onMessage?.(ev.event.value.sequence);
      } else if (ev.event.case === "task") w.statuses.push(ev.event.value.status);
    });
    stream.on("error", (err) => {
      w.ended = true;
      resolve(err);
    });
    stream.on("end", () => {
      w.ended = true;
      resolve(undefined);
    });
  });
  return w;
}

/** A server in a child process: a frozen event loop there fails a test here instead of hanging it. */
async function startChild(env: Record<string, string>): Promise<{ child: ChildProcess; address: string }> {
  const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/main.js");
  const child = spawn(process.execPath, [main, "--listen", "127.0.0.1:0"], {
    env: { ...process.env, STATEMGMT_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const address = await new Promise<string>((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = /"address":"([^"]+)","startupMs"/.exec(buf);
      if (m) {
        buf = "";
        resolve(m[1]!);
      }
      if (buf.length > 1 << 20) buf = buf.slice(-4096);
    };
    child.stdout!.on("data", onData);
    child.on("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
  return { child, address };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  // A frozen server never handles SIGTERM.
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

/** Every call below has a deadline, so a server that stops answering fails the test. */
const D = { deadlineMs: 10_000 };

const setStatus = (c: StateClient, taskId: string, status: TaskStatus) => setStatusOf(c, taskId, status, D);

async function expectResponsive(c: StateClient, taskId: string) {
  const { task } = await c.getTask({ taskId }, { deadlineMs: 2000 });
  expect(task!.taskId).to.equal(taskId);
}

describe("watch buffer of 10 events (server in a child process)", function () {
  this.timeout(60_000);
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let child: ChildProcess;
  let client: StateClient;
  before(async () => {
    db = await createTestDatabase();
    const s = await startChild({ DATABASE_URL: db.url, STATEMGMT_WATCH_BUFFER: "10" });
    child = s.child;
    client = createClient(StateService, s.address);
  });
  after(async () => {
    client?.close();
    if (child) await stopChild(child);
    await db?.drop();
  });

  it("gives a reader that keeps up appends of 20 and 1000 messages whole, and the server stays responsive", async () => {
    const { task } = await client.createTask({ action: "deploy_nodes" }, D);
    const taskId = task!.taskId;
    const w = watch(client.watchTask({ taskId }, { deadlineMs: 20_000 }) as Stream);
    await w.subscribed;
    // Before the fix, this one append overflowed the queue and froze the server's event loop.
    await client.appendResultMessages({ taskId, messages: messages(20) }, D);
    await eventually(() => w.seqs.length === 20, 10_000, "20 messages at the watcher");
    // One append larger than the buffer, to a reader that has caught up.
    await client.appendResultMessages({ taskId, messages: messages(1000) }, D);
    await eventually(() => w.seqs.length === 1020, 10_000, "1020 messages at the watcher");
    await setStatus(client, taskId, TaskStatus.COMPLETE);
    const error = await w.done;
    expect(error, String(error)).to.equal(undefined);
    expect(w.seqs).to.deep.equal(range(1, 1020));
    expect(w.statuses[w.statuses.length - 1]).to.equal(TaskStatus.COMPLETE);
    await expectResponsive(client, taskId);
  });

  it("ends a reader that stops reading with RESOURCE_EXHAUSTED WATCH_BUFFER_FULL, while one that keeps up gets everything", async () => {
    const { task } = await client.createTask({ action: "deploy_nodes" }, D);
    const taskId = task!.taskId;
    const slow = watch(client.watchTask({ taskId }, { deadlineMs: 30_000 }) as Stream);
    await slow.subscribed;
    slow.stream.pause(); // reads the snapshot, then nothing: HTTP/2 flow control holds the server back
    const fast = watch(client.watchTask({ taskId }, { deadlineMs: 30_000 }) as Stream);
    await fast.subscribed;
    const big = "x".repeat(1000);
    for (let i = 1; i <= 5; i++) {
      await client.appendResultMessages({ taskId, messages: messages(1000, big) }, D);
      // The fast reader keeps up: it has everything before the next append.
      await eventually(() => fast.seqs.length === i * 1000, 10_000, `${i * 1000} messages at the fast watcher`);
    }
    await setStatus(client, taskId, TaskStatus.COMPLETE);
    expect(await fast.done).to.equal(undefined);
    expect(fast.seqs).to.deep.equal(range(1, 5000));
    slow.stream.resume();
    const d = decodeError(await slow.done);
    expect(grpc.status[d.code]).to.equal("RESOURCE_EXHAUSTED");
    expect(d.errorInfo!.reason).to.equal("WATCH_BUFFER_FULL");
    expect(slow.seqs.length).to.be.lessThan(5000);
    await expectResponsive(client, taskId);
  });

  it("holds a live reader's events while its client is slow, sends them once it reads again, then pushes as they happen", async () => {
    const { task } = await client.createTask({ action: "deploy_nodes" }, D);
    const taskId = task!.taskId;
    const w = watch(client.watchTask({ taskId }, { deadlineMs: 30_000 }) as Stream);
    await w.subscribed;
    w.stream.pause();
    // 300 KB in one push, past the HTTP/2 window of a client that reads
    // nothing: the server's writes back up and the stream stops taking pushes.
    await client.appendResultMessages({ taskId, messages: messages(300, "x".repeat(1000)) }, D);
    // Four more pushes (a message and a snapshot each) wait in the stream's
    // queue: 8 events, under the limit of 10.
    for (let i = 0; i < 4; i++) await client.appendResultMessages({ taskId, messages: messages(1, "queued") }, D);
    expect(w.seqs.length).to.be.lessThan(300);
    w.stream.resume();
    await eventually(() => w.seqs.length === 304, 10_000, "304 messages at the watcher");
    // Caught up, it takes pushes as they happen again: one at a time, each
    // before the next append.
    for (let i = 1; i <= 20; i++) {
      await client.appendResultMessages({ taskId, messages: messages(1, "live") }, D);
      await eventually(() => w.seqs.length === 304 + i, 10_000, `${304 + i} messages at the watcher`);
    }
    await setStatus(client, taskId, TaskStatus.COMPLETE);
    const error = await w.done;
    expect(error, String(error)).to.equal(undefined);
    expect(w.seqs).to.deep.equal(range(1, 324));
    expect(w.statuses[w.statuses.length - 1]).to.equal(TaskStatus.COMPLETE);
  });

  it("does not count a long catch-up from the database as falling behind", async () => {
    /** How long the reader stays paused after each live append. */
    const PAUSED_MS = 50;
    const { task } = await client.createTask({ action: "deploy_nodes" }, D);
    const taskId = task!.taskId;
    const big = "x".repeat(1000);
    for (let i = 0; i < 10; i++) await client.appendResultMessages({ taskId, messages: messages(1000, big) }, D);
    // Halfway through each catch-up read of 1000, the reader pauses while one
    // more message is appended (two events for the feed to queue: the message
    // and a snapshot), then reads on. Ten such appends queue 20 events in all.
    let appends = Promise.resolve();
    const w = watch(client.watchTask({ taskId }, { deadlineMs: 30_000 }) as Stream, (seq) => {
      if (seq % 1000n !== 500n || seq > 10_000n) return;
      w.stream.pause();
      appends = appends.then(async () => {
        await client.appendResultMessages({ taskId, messages: messages(1, "live") }, D);
        await quietPeriod(PAUSED_MS, "the reader stays paused while the feed queues the message and its snapshot");
        w.stream.resume();
      });
    });
    await eventually(() => w.seqs.length >= 10_010 || w.ended, 30_000, "10,010 messages at the watcher, or its end");
    await appends;
    await setStatus(client, taskId, TaskStatus.COMPLETE);
    const error = await w.done;
    expect(error, String(error)).to.equal(undefined);
    expect(w.seqs).to.deep.equal(range(1, 10_010));
    expect(w.statuses[w.statuses.length - 1]).to.equal(TaskStatus.COMPLETE);
  });
});

/**
 * A TCP forwarder to PostgreSQL that can drop every connection and refuse
 * new ones, at once or once a given number of bytes has come back from
 * PostgreSQL (to fail a read in the middle of a wake).
 */
class FaultProxy extends EventEmitter {
  private readonly sockets = new Set<Socket>();
  private open = true;
  private budget = Infinity;
  /** Connections refused while cut. */
  refused = 0;
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {
    super();
  }

  static async start(host: string, port: number): Promise<FaultProxy> {
    let proxy!: FaultProxy;
    const server = createServer((client) => {
      if (!proxy.open) {
        proxy.refused++;
        return void client.destroy();
      }
      const upstream = netConnect(port, host);
      for (const s of [client, upstream]) {
        proxy.sockets.add(s);
        s.on("close", () => proxy.sockets.delete(s));
        s.on("error", () => {});
      }
      upstream.on("data", (d: Buffer) => {
        proxy.budget -= d.length;
        if (proxy.budget <= 0) proxy.cut();
      });
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    proxy = new FaultProxy(server, (server.address() as { port: number }).port);
    return proxy;
  }

  /** Drops every connection and refuses new ones. */
  cut(): void {
    if (this.open) this.emit("cut");
    this.open = false;
    this.budget = Infinity;
    for (const s of this.sockets) s.destroy();
  }

  /** Forwards again; with `bytes`, cuts again once that much has come back from PostgreSQL. */
  resume(bytes = Infinity): void {
    this.budget = bytes;
    this.open = true;
  }

  close(): Promise<void> {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}

describe("watch reads that fail while the database blips", function () {
  this.timeout(60_000);
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let proxy: FaultProxy;
  // Server A: its pool goes through the proxy, its LISTEN connection does not,
  // so it hears every notification while its reads fail. Server B writes.
  let a: TestServer, b: TestServer;
  let ca: StateClient, cb: StateClient;
  before(async () => {
    db = await createTestDatabase();
    const target = new URL(db.url);
    proxy = await FaultProxy.start(target.hostname, Number(target.port || 5432));
    const viaProxy = new URL(db.url);
    viaProxy.port = String(proxy.port);
    const opts: HarnessOptions = { dbPoolSize: 4, dbTxPoolSize: 2, heartbeatMs: 200 };
    a = await startTestServer({ url: viaProxy.toString(), listenUrl: db.url }, opts);
    b = await startTestServer({ url: db.url }, opts);
    ca = a.client;
    cb = b.client;
  });
  after(async () => {
    await a?.stop(1000);
    await b?.stop(1000);
    await proxy?.close();
    await db?.drop();
  });

  it("retries until every message (none twice, none skipped) and every change reach the watchers", async () => {
    /** Long enough for a message to reach the watcher, were it to come: none must. */
    const QUIET_MS = 300;
    const action = `blip_${Math.random().toString(36).slice(2, 8)}`;
    const { task } = await cb.createTask({ action }, D);
    const taskId = task!.taskId;
    const w1 = watch(ca.watchTask({ taskId }, { deadlineMs: 50_000 }) as Stream);
    await w1.subscribed;
    const changes = ca.watchTasks({ actions: [action] }, { deadlineMs: 50_000 });
    const seen: TaskStatus[] = [];
    changes.on("data", (ev) => seen.push(ev.task!.status));
    const changesDone = new Promise((resolve) => changes.on("error", resolve));
    await a.probe.watchers(taskId);
    await cb.appendResultMessages({ taskId, messages: messages(1) }, D);
    await eventually(() => w1.seqs.length === 1 && seen.length === 1, 10_000, "the first message and change at the watchers");

    // Server A's reads now fail while notifications keep coming.
    proxy.cut();
    const big = "x".repeat(1000);
    for (let i = 0; i < 3; i++) await cb.appendResultMessages({ taskId, messages: messages(1000, big) }, D);
    await setStatus(cb, taskId, TaskStatus.QUEUED);
    await eventually(() => proxy.refused > 0, 10_000, "server A refused by the proxy");
    await quietPeriod(QUIET_MS, "proves no message reaches the watcher while server A's reads fail");
    expect(w1.seqs.length).to.equal(1);

    // The retry gets one read (1000 messages or 1 MiB: 950 of these, over
    // 1 MB) through, then fails in the middle of the next: what was read
    // reaches the watcher, nothing is lost.
    const cutAgain = once(proxy, "cut");
    proxy.resume(1_600_000);
    await eventually(cutAgain, 10_000, "a read after the database came back");
    await eventually(() => w1.seqs.length > 900, 10_000, "the read's messages at the watcher");
    expect(w1.seqs).to.deep.equal(range(1, w1.seqs.length));
    await quietPeriod(QUIET_MS, "server A's retries keep meeting the cut proxy for a while before it forwards again");

    proxy.resume();
    await eventually(() => w1.seqs.length === 3001 && seen.includes(TaskStatus.QUEUED), 10_000, "every message and the QUEUED change at the watchers");
    // A watcher joining now gets the fresh snapshot, not the one from before the failures.
    const w2 = watch(ca.watchTask({ taskId }, { deadlineMs: 50_000 }) as Stream);
    await w2.subscribed;
    expect(w2.statuses[0]).to.equal(TaskStatus.QUEUED);

    await setStatus(cb, taskId, TaskStatus.COMPLETE);
    for (const w of [w1, w2]) {
      const error = await w.done;
      expect(error, String(error)).to.equal(undefined);
      expect(w.seqs).to.deep.equal(range(1, 3001));
      expect(w.statuses[w.statuses.length - 1]).to.equal(TaskStatus.COMPLETE);
    }
    expect(w1.statuses).to.include(TaskStatus.QUEUED);
    await eventually(() => seen[seen.length - 1] === TaskStatus.COMPLETE, 10_000, "the COMPLETE change at the watcher");
    expect(seen).to.deep.equal([TaskStatus.REQUESTED, TaskStatus.QUEUED, TaskStatus.COMPLETE]);
    changes.cancel();
    await changesDone;
  });
});

describe("watchers leaving while the shared feed opens", () => {
  const h = useServer();

  it("gives the second watcher the snapshot and the messages when the first cancels", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    await h.pg.query("begin");
    await h.pg.query("lock table tasks in access exclusive mode");
    let unlocked = false;
    try {
      const first = watch(h.client.watchTask({ taskId }, D) as Stream);
      await h.probe.until(() => h.probe.waiting(taskId) === 1, "the first waits"); // for the opening read, which waits for the lock
      const second = watch(h.client.watchTask({ taskId }, D) as Stream);
      await h.probe.until(() => h.probe.waiting(taskId) === 2, "both wait");
      first.stream.cancel();
      expect(grpc.status[decodeError(await first.done).code]).to.equal("CANCELLED");
      await h.probe.until(() => h.probe.waiting(taskId) === 1, "the server let go of the first");
      await h.pg.query("commit");
      unlocked = true;
      // Before the fix the first call's cancellation cancelled the shared opening: CANCELLED here too.
      const failed = await Promise.race([second.subscribed.then(() => undefined), second.done]);
      expect(failed, String(failed)).to.equal(undefined);
      expect(second.statuses[0]).to.equal(TaskStatus.REQUESTED);
      await h.client.appendResultMessages({ taskId, messages: messages(5) });
      await setStatus(h.client, taskId, TaskStatus.COMPLETE);
      const error = await second.done;
      expect(error, String(error)).to.equal(undefined);
      expect(second.seqs).to.deep.equal(range(1, 5));
      expect(second.statuses[second.statuses.length - 1]).to.equal(TaskStatus.COMPLETE);
      await h.probe.until(() => h.probe.feeds === 0, "the feed closed");
    } finally {
      if (!unlocked) await h.pg.query("rollback");
    }
  });

  it("closes a feed whose only watcher left before it opened", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    await h.pg.query("begin");
    await h.pg.query("lock table tasks in access exclusive mode");
    let unlocked = false;
    try {
      const only = watch(h.client.watchTask({ taskId }, { deadlineMs: 300 }) as Stream);
      expect(grpc.status[decodeError(await only.done).code]).to.equal("DEADLINE_EXCEEDED");
      await h.probe.until(() => h.probe.waiting(taskId) === 0, "nobody waits");
      expect(h.probe.closedFeeds).to.not.include(taskId); // still opening, for nobody
      await h.pg.query("commit");
      unlocked = true;
      await h.probe.until(() => h.probe.closedFeeds.includes(taskId), "the feed that opened for nobody closed");
      expect(h.probe.feeds).to.equal(0);
      // A later watcher opens a fresh feed.
      await h.client.appendResultMessages({ taskId, messages: messages(2) });
      await setStatus(h.client, taskId, TaskStatus.COMPLETE);
      const again = watch(h.client.watchTask({ taskId }, D) as Stream);
      expect(await again.done).to.equal(undefined);
      expect(again.seqs).to.deep.equal(range(1, 2));
    } finally {
      if (!unlocked) await h.pg.query("rollback");
    }
  });
});
