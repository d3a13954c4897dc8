// What watchers see around a task's finish, what WatchTasks sends for
// appends, and how the LISTEN connection rides out a stalled event loop.
import { expect } from "chai";
import type { WatchTaskResponse, WatchTasksResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { once } from "node:events";
import { createTestDatabase, startTestServer, useServer } from "./kit/index.js";
import { TcpProxy } from "./proxy.js";

const LINGER_MS = 1000;

describe("watch without a finish linger (STATEMGMT_WATCH_FINISH_LINGER_MS=0)", () => {
  const h = useServer({ watchFinishLingerMs: 0 });
  const label = (ev: WatchTaskResponse) => (ev.event.case === "message" ? ev.event.value.message : `task ${TaskStatus[ev.event.value!.status]}`);

  it("ends a live watch OK as soon as it has sent the finished snapshot, with every message before it", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const id = task!.taskId;
    const got: string[] = [];
    const stream = h.client.watchTask({ taskId: id }) as AsyncIterable<WatchTaskResponse>;
    const it = stream[Symbol.asyncIterator]();
    got.push(label((await it.next()).value)); // subscribed
    await h.client.appendResultMessages({ taskId: id, messages: [{ message: "a" }, { message: "b" }] });
    await h.client.updateTask({ task: { taskId: id, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const completed = Date.now();
    for (let r = await it.next(); !r.done; r = await it.next()) got.push(label(r.value));
    expect(got).to.deep.equal(["task REQUESTED", "a", "b", "task COMPLETE"]);
    expect(Date.now() - completed, "no linger").to.be.below(1000);
  });

  it("ends a watch opened on a finished task once it has sent everything", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const id = task!.taskId;
    await h.client.appendResultMessages({ taskId: id, messages: [{ message: "a" }, { message: "b" }] });
    await h.client.updateTask({ task: { taskId: id, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const started = Date.now();
    const got: string[] = [];
    for await (const ev of h.client.watchTask({ taskId: id }) as AsyncIterable<WatchTaskResponse>) got.push(label(ev));
    expect(got).to.deep.equal(["task COMPLETE", "a", "b"]);
    expect(Date.now() - started).to.be.below(1000);
  });
});

describe("watch semantics", () => {
  const h = useServer({ watchFinishLingerMs: LINGER_MS });

  it("a live WatchTask watcher receives the summary posted right after the task completes, then the stream ends OK", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const id = task!.taskId;
    await h.client.appendResultMessages({ taskId: id, messages: [{ message: "working" }] });
    const events: string[] = [];
    const stream = h.client.watchTask({ taskId: id }) as AsyncIterable<WatchTaskResponse>;
    const it = stream[Symbol.asyncIterator]();
    const next = async () => {
      const r = await it.next();
      if (r.done) return "end";
      const ev = r.value.event;
      return ev.case === "message" ? `message ${ev.value.message}` : `task ${TaskStatus[ev.value!.status]}`;
    };
    events.push(await next(), await next()); // the snapshot, the first message
    // Drydock's orchestrator: complete the task, then post its summary.
    await h.client.updateTask({ task: { taskId: id, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    await h.client.appendResultMessages({ taskId: id, messages: [{ message: "summary: 3 nodes deployed" }] });
    const started = Date.now();
    for (;;) {
      const e = await next();
      events.push(e);
      if (e === "end") break;
    }
    // Messages in order, the COMPLETE snapshot (a snapshot and the messages
    // read with it may arrive in either order), then the end.
    expect(events.filter((e) => e.startsWith("message"))).to.deep.equal(["message working", "message summary: 3 nodes deployed"]);
    expect(events.filter((e) => e.startsWith("task"))).to.deep.equal(["task REQUESTED", "task COMPLETE"]);
    expect(events[events.length - 1]).to.equal("end");
    expect(Date.now() - started, "ends once the linger is over").to.be.below(LINGER_MS + 1500);
  });

  it("a watch opened on a finished task sends everything, then ends after the linger", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const id = task!.taskId;
    await h.client.appendResultMessages({ taskId: id, messages: [{ message: "a" }, { message: "b" }] });
    await h.client.updateTask({ task: { taskId: id, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const started = Date.now();
    const got: string[] = [];
    for await (const ev of h.client.watchTask({ taskId: id }) as AsyncIterable<WatchTaskResponse>) {
      got.push(ev.event.case === "message" ? ev.event.value.message : `task ${TaskStatus[ev.event.value!.status]}`);
    }
    expect(got).to.deep.equal(["task COMPLETE", "a", "b"]);
    expect(Date.now() - started).to.be.within(LINGER_MS - 100, LINGER_MS + 1500);
  });

  it("1,000 appends send no WatchTasks snapshot; a status change sends exactly one, with the current error count", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "chatty" });
    const id = task!.taskId;
    const stream = h.client.watchTasks({ actions: ["chatty"] });
    const received: WatchTasksResponse[] = [];
    const it = (stream as AsyncIterable<WatchTasksResponse>)[Symbol.asyncIterator]();
    // The stream is live once it relays a change: use a first status change as the marker.
    await h.client.updateTask({ task: { taskId: id, status: TaskStatus.QUEUED }, updateMask: { paths: ["status"] } });
    // (The creation's snapshot may still arrive first: the stream subscribed just after it.)
    let first = await it.next();
    if (first.value.task.status === TaskStatus.REQUESTED) first = await it.next();
    expect(first.value.task.status).to.equal(TaskStatus.QUEUED);
    for (let i = 0; i < 10; i++) {
      await h.client.appendResultMessages({
        taskId: id,
        messages: Array.from({ length: 100 }, (_, j) => ({ message: `m${i}-${j}`, error: j === 0 })),
      });
    }
    await h.client.updateTask({ task: { taskId: id, status: TaskStatus.RUNNING }, updateMask: { paths: ["status"] } });
    // Everything the stream sends until the RUNNING snapshot.
    for (;;) {
      const r = await it.next();
      received.push(r.value);
      if (r.value.task.status === TaskStatus.RUNNING) break;
    }
    stream.cancel();
    expect(received.map((r) => TaskStatus[r.task!.status])).to.deep.equal(["RUNNING"]);
    expect(received[0]!.task!.result!.errorCount).to.equal(10);
  });

  it("finds the tasks changed since a time by an index (WatchTasks' catch-up after a reconnect)", async () => {
    await h.pg.query("begin");
    try {
      await h.pg.query("set local enable_seqscan = off");
      const { rows } = await h.pg.query("explain (format json) select task_id from tasks where updated >= now() - interval '1 minute'");
      expect(JSON.stringify(rows[0]["QUERY PLAN"])).to.contain("tasks_updated_idx");
    } finally {
      await h.pg.query("rollback");
    }
  });
});

describe("the LISTEN connection's heartbeat", () => {
  const HEARTBEAT_MS = 200;

  it("does not replace a connection whose notifications arrive late (a busy database or event loop), up to three intervals", async function () {
    this.timeout(30_000);
    const db = await createTestDatabase();
    const target = new URL(db.url);
    const proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432));
    target.port = String(proxy.port);
    // Only the LISTEN connection goes through the proxy.
    const started = await startTestServer({ url: db.url, listenUrl: target.toString() }, { dbPoolSize: 2, dbTxPoolSize: 1, heartbeatMs: HEARTBEAT_MS });
    const { server } = started;
    let replaced = 0;
    const onListening = () => replaced++;
    server.hub.on("listening", onListening);
    try {
      await once(server.hub, "heartbeat");
      // Every notification now arrives 1.5 intervals late. With the timeout
      // equal to the interval, each heartbeat was taken for a hung connection.
      proxy.latencyMs = 1.5 * HEARTBEAT_MS;
      for (let i = 0; i < 5; i++) await once(server.hub, "heartbeat", { signal: AbortSignal.timeout(10 * HEARTBEAT_MS) });
      expect(replaced).to.equal(0);
      expect(proxy.accepted).to.equal(1);
    } finally {
      server.hub.off("listening", onListening);
      await started.stop(1000);
      await proxy.close();
      await db.drop();
    }
  });

  it("does not replace a connection because the event loop stalled past the timeout while its heartbeat came back", async function () {
    this.timeout(30_000);
    const db = await createTestDatabase();
    const started = await startTestServer({ url: db.url }, { dbPoolSize: 2, dbTxPoolSize: 1, heartbeatMs: HEARTBEAT_MS });
    const { server } = started;
    let replacing = 0;
    const onReplacing = () => replacing++;
    server.hub.on("replacing", onReplacing);
    try {
      await once(server.hub, "heartbeat");
      // As the next heartbeat is sent (its timeout armed), block the event
      // loop for longer than the timeout (3 intervals): the heartbeat comes
      // back during the stall and waits in the socket, unread, while the
      // timeout is already due when the loop runs again.
      const stalled = new Promise<void>((resolve) =>
        server.hub.once("heartbeatSent", () => {
          const until = Date.now() + 5 * HEARTBEAT_MS;
          while (Date.now() < until); // the stall
          resolve();
        }),
      );
      await stalled;
      await once(server.hub, "heartbeat", { signal: AbortSignal.timeout(10 * HEARTBEAT_MS) });
      expect(replacing).to.equal(0);
    } finally {
      server.hub.off("replacing", onReplacing);
      await started.stop(1000);
      await db.drop();
    }
  });
});
