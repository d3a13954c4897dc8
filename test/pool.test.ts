// The database connection layer under connection failures: the pools open
// to their size at start-up, a query that never reached PostgreSQL (its
// connection could not be opened in time) is sent again, a watch feed's
// opening read is retried, and a call that still could not connect says so.
//
// The server reaches PostgreSQL through test/proxy.ts; a connection the proxy
// blackholes is never answered, as when this process's event loop stalls
// past the connect timeout or PostgreSQL leaves it in its listen backlog.
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import pg from "pg";
import type { WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { connect, DEFAULT_TIMEOUTS, openPool, type Sql } from "../src/db/connect.js";
import type { StateServer } from "../src/server/server.js";
import { createTransactor, type Transactor } from "../src/store/transactions.js";
import { createTestDatabase, decodeError, startTestServer, type StateClient, type TestServer, type WatchProbe } from "./kit/index.js";
import { TcpProxy } from "./proxy.js";

const POOL = 4;
const SLOTS = 2;
/** Short, so that unanswered connection attempts time out quickly. */
const CONNECT_TIMEOUT_MS = 1000;

describe("database connections", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let proxy: TcpProxy;
  let sql: Sql;
  let tx: Transactor;
  let started: TestServer;
  let server: StateServer;
  let client: StateClient;
  let admin: pg.Client;
  let probe: WatchProbe;
  /** Connections of the pool and the slots that closed so far, and who waits for a count. */
  let closed = 0;
  const closeWaiters = new Set<() => void>();

  before(async function () {
    this.timeout(60_000);
    db = await createTestDatabase();
    const target = new URL(db.url);
    proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432));
    target.port = String(proxy.port);
    const onClose = () => {
      closed++;
      for (const w of [...closeWaiters]) w();
    };
    sql = connect({ url: target.toString(), max: POOL, connectTimeoutMs: CONNECT_TIMEOUT_MS, onClose });
    tx = createTransactor({ url: target.toString(), slots: SLOTS, timeouts: DEFAULT_TIMEOUTS, connectTimeoutMs: CONNECT_TIMEOUT_MS, onClose });
    // The LISTEN connection goes straight to the database: only the pools meet the faults.
    started = await startTestServer(
      { url: target.toString(), listenUrl: db.url, pools: { sql, tx } },
      {
        healthIntervalMs: 600_000,
        // Nor heartbeats of the LISTEN connection: they are sent through the pool.
        heartbeatMs: 600_000,
        watchFinishLingerMs: 0,
      },
    );
    ({ server, client, probe } = started);
    // No health probes during the tests: each would take one of the
    // connection attempts they count (a probe bypasses the pool's permits).
    server.health.stop();
    admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
  });
  after(async function () {
    this.timeout(30_000);
    await started?.stop(1000);
    await sql?.end({ timeout: 1 });
    await tx?.end({ timeout: 1 });
    await admin?.end();
    await proxy?.close();
    await db?.drop();
  });

  /** Backends of the server's pool and transaction slots now, by application_name. */
  const backends = async () => {
    const { rows } = await admin.query<{ application_name: string; n: number }>(
      `select application_name, count(*)::int as n from pg_stat_activity
       where datname = current_database() and backend_type = 'client backend' and application_name like 'drydock-statemgmt%'
       group by 1`,
    );
    return Object.fromEntries(rows.map((r) => [r.application_name, r.n]));
  };

  /**
   * Closes every connection of the pool and the slots (opened first, then
   * the proxy drops them) and resolves once the driver has seen each close:
   * the next query of each must open a connection.
   */
  const dropConnections = async () => {
    await Promise.all([openPool(sql), tx.open()]);
    const want = closed + POOL + SLOTS;
    const all = new Promise<void>((resolve) => {
      const check = () => {
        if (closed >= want) {
          closeWaiters.delete(check);
          resolve();
        }
      };
      closeWaiters.add(check);
      check();
    });
    proxy.cut();
    await all;
    proxy.resume();
  };

  /** The next `n` connection attempts through the proxy are never answered; later ones are. */
  const swallowNext = (n: number) => {
    const start = proxy.blackholed;
    proxy.blackhole = true;
    const swallowed = new Promise<void>((resolve) => {
      proxy.onBlackholed = () => {
        if (proxy.blackholed - start < n) return;
        proxy.blackhole = false;
        proxy.onBlackholed = undefined;
        resolve();
      };
    });
    return swallowed;
  };

  it("opens the pool and every transaction slot to their size at start-up", async () => {
    // Nothing has been asked of the server yet: start-up opened them.
    expect(await backends()).to.deep.include({ "drydock-statemgmt": POOL, "drydock-statemgmt-tx": SLOTS });
  });

  it("calls whose connection attempt goes unanswered past the connect timeout are sent again, writes too, and succeed within their deadline", async function () {
    this.timeout(30_000);
    const { task } = await client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    const calls: [string, () => Promise<unknown>][] = [
      ["GetTask", () => client.getTask({ taskId }, { deadlineMs: 5000 })],
      ["CreateTask", () => client.createTask({ action: "deploy_nodes" }, { deadlineMs: 5000 })],
      ["AppendResultMessages", () => client.appendResultMessages({ taskId, messages: [{ message: "after a connect timeout" }] }, { deadlineMs: 5000 })],
      // A transaction: its BEGIN is sent again.
      ["UpdateTask", () => client.updateTask({ task: { taskId, retry: 2 }, updateMask: { paths: ["retry"] } }, { deadlineMs: 5000 })],
    ];
    const outcomes: Record<string, string> = {};
    for (const [name, call] of calls) {
      await dropConnections();
      const swallowed = swallowNext(1);
      outcomes[name] = await call().then(
        () => "OK",
        (e: unknown) => `${grpc.status[decodeError(e).code]}: ${decodeError(e).message}`,
      );
      await swallowed;
    }
    expect(outcomes).to.deep.equal(Object.fromEntries(calls.map(([name]) => [name, "OK"])));
    // The writes happened, once each.
    const { messages } = await client.listResultMessages({ taskId });
    expect(messages.map((m) => m.message)).to.deep.equal(["after a connect timeout"]);
    expect((await client.getTask({ taskId })).task!.retry).to.equal(2);
  });

  it("a call that still cannot connect says it could not connect within the connect timeout (UNAVAILABLE, DATABASE_CONNECT_TIMEOUT)", async function () {
    this.timeout(30_000);
    await dropConnections();
    // Every attempt of the call: after a second connect timeout it is not sent again.
    const swallowed = swallowNext(2);
    const d = await client.getTask({ taskId: randomUUID() }, { deadlineMs: 10_000 }).then(
      () => null,
      (e: unknown) => decodeError(e),
    );
    await swallowed;
    expect({ code: d && grpc.status[d.code], reason: d?.errorInfo?.reason, message: d?.message, metadata: d?.errorInfo?.metadata }).to.deep.equal({
      code: "UNAVAILABLE",
      reason: "DATABASE_CONNECT_TIMEOUT",
      message: `could not connect to the database within ${CONNECT_TIMEOUT_MS} ms (2 attempts); nothing was sent, retry with backoff`,
      metadata: { connect_timeout_ms: String(CONNECT_TIMEOUT_MS), attempts: "2" },
    });
  });

  it("a watch feed's opening read that fails is retried: every watcher of the task gets its events, none UNAVAILABLE", async function () {
    this.timeout(30_000);
    const { task } = await client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    await dropConnections();
    // More unanswered attempts than one query makes (2): the feed's first read fails.
    const swallowed = swallowNext(3);
    let readFailures = 0;
    const onReadFailed = (what: string) => void (what === taskId && readFailures++);
    server.hub.on("readFailed", onReadFailed);
    const watchers = [0, 1, 2].map(() => client.watchTask({ taskId }, { deadlineMs: 20_000 }));
    const streams = watchers.map((w) => w[Symbol.asyncIterator]());
    const first = (it: AsyncIterator<WatchTaskResponse>) =>
      it.next().then(
        (r) => (r.done ? "ended" : r.value.event.case),
        (e: unknown) => `${grpc.status[decodeError(e).code]}: ${decodeError(e).message}`,
      );
    const firsts = Promise.all(streams.map(first));
    expect(await firsts).to.deep.equal(["task", "task", "task"]);
    await swallowed;
    server.hub.off("readFailed", onReadFailed);
    expect(readFailures, "opening reads that failed and were retried").to.be.greaterThan(0);
    expect(probe.subscribers(taskId)).to.equal(3);
    // And they follow the task from there.
    await client.appendResultMessages({ taskId, messages: [{ message: "m" }] });
    expect(await Promise.all(streams.map(first))).to.deep.equal(["message", "message", "message"]);
    watchers.forEach((w) => w.cancel());
  });
});
