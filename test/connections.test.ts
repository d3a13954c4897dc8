// Connection and stream limits: a client that misbehaves cannot take the
// server down, and the others keep working.
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService, type WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client/client.js";
import { DEFAULT_LIMITS } from "../src/server/connections.js";
import { decodeError, useServer, type StateClient } from "./harness.js";
import { eventually, quietPeriod } from "./kit/index.js";

const HANDSHAKE_MS = 500;
const IDLE_MS = 1500;

/** Opens `n` TCP connections; `write` is sent on each once connected. Resolves when all are open. */
async function openSockets(port: number, n: number, write?: Buffer): Promise<{ sockets: net.Socket[]; closed: () => number }> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Socket>((resolve) => {
          const s = net.connect(port, "127.0.0.1", () => {
            if (write) s.write(write);
            resolve(s);
          });
          s.on("error", () => {});
          s.on("close", () => closed++);
        }),
    ),
  );
  return { sockets, closed: () => closed };
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
/** An empty HTTP/2 SETTINGS frame. */
const SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

describe("connection limits", () => {
  const h = useServer({
    limits: { ...DEFAULT_LIMITS, handshakeTimeoutMs: HANDSHAKE_MS, idleTimeoutMs: IDLE_MS, maxConnections: 1500, maxStreams: 20 },
  });

  it("closes 1,000 silent sockets within the handshake timeout while a normal client keeps working", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const silent = await openSockets(h.server.port, 1000);
    let calls = 0;
    let working = true;
    const worker = (async () => {
      while (working) {
        const r = await h.client.getTask({ taskId: task!.taskId }, { deadlineMs: 2000 });
        expect(r.task!.taskId).to.equal(task!.taskId);
        calls++;
      }
    })();
    const ms = await eventually(() => silent.closed() === 1000, HANDSHAKE_MS + 3000, "all silent sockets closed");
    expect(ms).to.be.at.least(HANDSHAKE_MS - 100);
    working = false;
    await worker;
    console.log(`      1,000 silent sockets closed after ${ms} ms; ${calls} calls served meanwhile`);
    expect(calls).to.be.greaterThan(10);
  });

  it("closes sockets that speak something else than HTTP/2 at once", async () => {
    const http1 = await openSockets(h.server.port, 10, Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await eventually(() => http1.closed() === 10, 1000, "HTTP/1.1 sockets closed");
  });

  it("closes HTTP/2 connections that never start a call after the idle timeout, whether or not the peer reads", async function () {
    this.timeout(20_000);
    const baseline = h.connections.open;
    // Peers that read what the server sends get its GOAWAY and the close;
    // peers that never read are destroyed shortly after.
    const reading = await openSockets(h.server.port, 25, Buffer.concat([PREFACE, SETTINGS]));
    reading.sockets.forEach((s) => s.resume());
    const deaf = await openSockets(h.server.port, 25, Buffer.concat([PREFACE, SETTINGS]));
    await h.connections.until(() => h.connections.open >= baseline + 50, "all 50 connections open", 2000);
    const ms = await h.connections.until(() => h.connections.open <= baseline, "idle HTTP/2 connections closed", IDLE_MS + 5000);
    await eventually(() => reading.closed() === 25, 1000, "the reading peers saw the close");
    console.log(`      50 idle HTTP/2 connections closed after ${ms} ms (idle timeout ${IDLE_MS} ms)`);
    expect(ms).to.be.at.least(IDLE_MS - 100);
    deaf.sockets.forEach((s) => s.destroy());
  });
});

describe("connection cap", () => {
  const h = useServer({ limits: { ...DEFAULT_LIMITS, maxConnections: 20, handshakeTimeoutMs: 5000 } });

  it("makes room beyond STATEMGMT_MAX_CONNECTIONS by closing the oldest connections that never made a call; refuses new ones only when every slot has", async function () {
    this.timeout(20_000);
    const hog = await openSockets(h.server.port, 30);
    await eventually(() => hog.closed() === 10, 2000, "10 of the 30 silent connections closed");
    expect(h.connections.open).to.equal(20);
    // A new client connects while silent sockets hold every slot: one of them makes room.
    const clients = Array.from({ length: 20 }, () => createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }));
    try {
      for (const c of clients) expect((await c.getLeader({ election: "x" }, { deadlineMs: 5000 })).leader).to.equal(undefined);
      // Twenty clients that made calls (a server without authentication: any call vouches) now hold every slot.
      await eventually(() => hog.closed() === 30, 2000, "every silent connection closed");
      expect(h.connections.open).to.equal(20);
      const other = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
      const refused = await other.getLeader({ election: "x" }, { deadlineMs: 500 }).then(
        () => null,
        (e: unknown) => decodeError(e).code,
      );
      // grpc-js reports a connection closed at once as UNAVAILABLE, or keeps retrying until the deadline.
      expect(refused === null ? "OK" : grpc.status[refused]).to.be.oneOf(["UNAVAILABLE", "DEADLINE_EXCEEDED"]);
      other.close();
      // The clients that hold the slots are still served.
      for (const c of clients) expect((await c.getLeader({ election: "x" }, { deadlineMs: 5000 })).leader).to.equal(undefined);
    } finally {
      hog.sockets.forEach((s) => s.destroy());
      clients.forEach((c) => c.close());
    }
    // Once they go, new clients connect (a new channel: the old one is in its reconnect backoff).
    await h.connections.until(() => h.connections.open === 0, "clients gone", 3000);
    const later = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
    const r = await later.getLeader({ election: "x" }, { deadlineMs: 5000 });
    expect(r.leader).to.equal(undefined);
    later.close();
  });
});

describe("stream limits", () => {
  const MAX = 5;
  const h = useServer({ limits: { ...DEFAULT_LIMITS, maxStreams: MAX } });

  it("answers RESOURCE_EXHAUSTED (STREAM_LIMIT, with the limit) beyond the server-wide stream cap; unary calls and other streams go on", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const clients: StateClient[] = Array.from({ length: MAX + 1 }, () =>
      createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }),
    );
    const open: grpc.ClientReadableStream<WatchTaskResponse>[] = [];
    try {
      for (let i = 0; i < MAX; i++) {
        const st = clients[i]!.watchTask({ taskId: task!.taskId }) as grpc.ClientReadableStream<WatchTaskResponse> & AsyncIterable<WatchTaskResponse>;
        open.push(st);
        const first = await st[Symbol.asyncIterator]().next();
        expect(first.value.event.case).to.equal("task");
      }
      const extra = clients[MAX]!.watchTask({ taskId: task!.taskId }) as AsyncIterable<WatchTaskResponse>;
      let err: unknown;
      try {
        for await (const _ of extra) break;
      } catch (e) {
        err = e;
      }
      const d = decodeError(err);
      expect(grpc.status[d.code]).to.equal("RESOURCE_EXHAUSTED");
      expect(d.errorInfo!.reason).to.equal("STREAM_LIMIT");
      expect(d.errorInfo!.metadata.limit).to.equal(String(MAX));
      // Unary calls are not streams.
      await h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "still fine" }] });
      // The open streams are unaffected: each receives the message.
      for (const st of open) {
        const next = await (st as unknown as AsyncIterable<WatchTaskResponse>)[Symbol.asyncIterator]().next();
        expect(next.value.event.case).to.equal("message");
      }
      // One stream ends; a new one is admitted.
      open.pop()!.cancel();
      // Calls in progress: the open streams, and the cancelled one until the server has let it go.
      await h.connections.until(() => h.connections.calls < MAX, "the cancelled stream released", 2000);
      const again = clients[MAX]!.watchTask({ taskId: task!.taskId }) as grpc.ClientReadableStream<WatchTaskResponse> & AsyncIterable<WatchTaskResponse>;
      open.push(again);
      expect((await again[Symbol.asyncIterator]().next()).value.event.case).to.equal("task");
    } finally {
      open.forEach((s) => s.cancel());
      clients.forEach((c) => c.close());
    }
  });
});

describe("connection age", () => {
  const AGE = 1000;
  const GRACE = 1500; // > AGE / 5 + 1 s
  /** Ten appends this far apart span the connection's age: some come after its GOAWAY. */
  const APPEND_EVERY_MS = 100;
  const h = useServer({ limits: { ...DEFAULT_LIMITS, maxAgeMs: AGE, ageGraceMs: GRACE } });

  it("ends a long watch stream cleanly with UNAVAILABLE (CONNECTION_MAX_AGE) after the GOAWAY; the watcher resumes on a new connection and misses nothing", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const watcher = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
    try {
      const started = Date.now();
      const seqs: bigint[] = [];
      let err: unknown;
      const first = watcher.watchTask({ taskId: task!.taskId }) as AsyncIterable<WatchTaskResponse>;
      const appends = (async () => {
        for (let i = 0; i < 10; i++) {
          await h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: `m${i}` }] });
          await quietPeriod(APPEND_EVERY_MS, "paces the appends across the connection's maximum age");
        }
      })();
      try {
        for await (const ev of first) if (ev.event.case === "message") seqs.push(ev.event.value.sequence);
      } catch (e) {
        err = e;
      }
      const ended = Date.now() - started;
      const d = decodeError(err);
      expect(grpc.status[d.code]).to.equal("UNAVAILABLE");
      expect(d.errorInfo!.reason).to.equal("CONNECTION_MAX_AGE");
      expect(ended).to.be.within(0.9 * AGE, 0.9 * AGE + GRACE);
      await appends;
      // Resume after the last sequence seen: the rest arrives, nothing twice.
      const rest = watcher.watchTask({ taskId: task!.taskId, afterSequence: seqs[seqs.length - 1] ?? 0n }) as grpc.ClientReadableStream<WatchTaskResponse> &
        AsyncIterable<WatchTaskResponse>;
      for await (const ev of rest) {
        if (ev.event.case === "message") seqs.push(ev.event.value.sequence);
        if (seqs.length === 10) break;
      }
      rest.cancel();
      expect(seqs).to.deep.equal(Array.from({ length: 10 }, (_, i) => BigInt(i + 1)));
    } finally {
      watcher.close();
    }
  });
});
