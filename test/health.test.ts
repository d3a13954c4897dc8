import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb.js";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client.js";
import { connect, type Sql } from "../src/db/connect.js";
import { createLogger } from "../src/log.js";
import { startServer, type StateServer } from "../src/server/server.js";
import { createTestDatabase, decodeError, expectError, useServer } from "./harness.js";
import { TcpProxy } from "./proxy.js";

describe("health and database loss", () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let sql: Sql;
  let server: StateServer;
  let proxy: TcpProxy;

  before(async () => {
    db = await createTestDatabase();
    // The server reaches PostgreSQL through a proxy the test can cut, as a
    // network partition or a stopped database would.
    const target = new URL(db.url);
    proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432));
    target.port = String(proxy.port);
    sql = connect({ url: target.toString(), max: 4 });
    server = await startServer({ sql, databaseUrl: target.toString(), log: createLogger("silent"), host: "127.0.0.1", port: 0, healthIntervalMs: 100 });
  });
  after(async () => {
    await server.shutdown(1000);
    await sql.end({ timeout: 1 });
    await proxy.close();
    await db.drop();
  });

  const cutDatabase = async (allow: boolean) => (allow ? proxy.resume() : proxy.cut());

  it("is SERVING while the database answers, NOT_SERVING when it does not, and SERVING again after", async function () {
    this.timeout(30_000);
    const health = createClient(Health, server.address);
    const state = createClient(StateService, server.address);
    try {
      expect((await health.check({})).status).to.equal(Serving.SERVING);
      expect((await health.check({ service: "drydock.statemgmt.v1.StateService" })).status).to.equal(Serving.SERVING);
      await expectError(health.check({ service: "no.such.Service" }), grpc.status.NOT_FOUND);

      const watch = health.watch({});
      const it = watch[Symbol.asyncIterator]();
      expect((await it.next()).value.status).to.equal(Serving.SERVING);

      await cutDatabase(false);
      expect((await it.next()).value.status).to.equal(Serving.NOT_SERVING);
      expect((await health.check({})).status).to.equal(Serving.NOT_SERVING);
      const d = await expectError(state.getTask({ taskId: randomUUID() }), grpc.status.UNAVAILABLE);
      expect(d.errorInfo!.reason).to.equal("DATABASE_UNAVAILABLE");
      expect(d.message).not.to.match(/select|postgres|database ".*"/i);

      await cutDatabase(true);
      expect((await it.next()).value.status).to.equal(Serving.SERVING);
      await expectError(state.getTask({ taskId: randomUUID() }), grpc.status.NOT_FOUND);
      watch.cancel();
    } finally {
      health.close();
      state.close();
    }
  });
});

describe("deadlines", () => {
  const h = useServer();

  it("answers DEADLINE_EXCEEDED on time while the database blocks, and rolls the call's transaction back", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    // Hold the task's row lock from an independent connection, so UpdateTask must wait.
    await h.pg.query("begin");
    await h.pg.query("select 1 from tasks where task_id = $1 for update", [task!.taskId]);
    try {
      const started = Date.now();
      const err = await h.client
        .updateTask({ task: { taskId: task!.taskId, retry: 3 }, updateMask: { paths: ["retry"] } }, { deadlineMs: 300 })
        .then(() => null, (e: unknown) => e);
      expect(decodeError(err).code).to.equal(grpc.status.DEADLINE_EXCEEDED);
      expect(Date.now() - started).to.be.lessThan(5000);
      // The server does not cancel the running statement (a cancel request
      // names a shared connection): it is still waiting for the lock.
      const { rows } = await h.pg.query(
        `select count(*)::int n from pg_stat_activity
         where datname = current_database() and application_name = 'drydock-statemgmt' and wait_event_type = 'Lock'`,
      );
      expect(rows[0].n).to.equal(1);
    } finally {
      await h.pg.query("rollback");
    }
    // Once the lock is free the abandoned transaction rolls back: nothing changed.
    for (let i = 0; i < 50; i++) {
      const { rows } = await h.pg.query(
        `select count(*)::int n from pg_stat_activity
         where datname = current_database() and application_name = 'drydock-statemgmt' and state <> 'idle'`,
      );
      if (rows[0].n === 0) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const { task: got } = await h.client.getTask({ taskId: task!.taskId });
    expect(got!.retry).to.equal(0);
    expect(got!.version).to.equal(1n);
  });

  it("withdraws a query still waiting for a pool connection: it never runs", async function () {
    this.timeout(20_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    // Occupy every pool connection with UpdateTasks blocked on the row lock,
    // then send one more write with a short deadline: it waits for a
    // connection, times out, and must never reach the database.
    await h.pg.query("begin");
    await h.pg.query("select 1 from tasks where task_id = $1 for update", [task!.taskId]);
    const blocked: Promise<unknown>[] = [];
    let extra: unknown;
    try {
      for (let i = 0; i < 10; i++) {
        blocked.push(h.client.updateTask({ task: { taskId: task!.taskId, retry: 1 }, updateMask: { paths: ["retry"] } }, { deadlineMs: 2000 }).catch((e) => e));
      }
      await new Promise((r) => setTimeout(r, 300));
      extra = await h.client.createTask({ action: "never_created" }, { deadlineMs: 300 }).then(() => null, (e: unknown) => e);
    } finally {
      await h.pg.query("rollback");
    }
    expect(decodeError(extra).code).to.equal(grpc.status.DEADLINE_EXCEEDED);
    await Promise.all(blocked);
    await new Promise((r) => setTimeout(r, 300));
    const { rows } = await h.pg.query(`select count(*)::int n from tasks where action = 'never_created'`);
    expect(rows[0].n).to.equal(0);
  });

  it("a storm of calls hitting their deadlines never disturbs other calls on the same pool", async function () {
    this.timeout(30_000);
    // Before: the server sent PostgreSQL a cancel request on each deadline;
    // cancels that arrived late hit other calls' queries on the shared
    // connections (wrong pages, INTERNAL errors). Regression of review finding 2.
    const small = useServerClientOnPool(h);
    const { task } = await h.client.createTask({ action: "storm_target" });
    const outcomes = new Map<string, number>();
    const bump = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    const stop = Date.now() + 3000;
    const victims = Array.from({ length: 8 }, async () => {
      while (Date.now() < stop) {
        try {
          const r = await small.getTask({ taskId: task!.taskId });
          bump(r.task!.taskId === task!.taskId && r.task!.action === "storm_target" ? "ok" : "wrong data");
        } catch (e) {
          bump(`error ${grpc.status[(e as grpc.ServiceError).code]}`);
        }
      }
    });
    const timeouts = Array.from({ length: 8 }, async () => {
      while (Date.now() < stop) {
        await h.client.getTask({ taskId: task!.taskId, view: 2 }, { deadlineMs: 1 + Math.floor(Math.random() * 4) }).catch(() => {});
      }
    });
    await Promise.all([...victims, ...timeouts]);
    small.close();
    expect([...outcomes.keys()]).to.deep.equal(["ok"]);
    expect(outcomes.get("ok")).to.be.greaterThan(50);
  });
});

/** A second channel to the same server, so the two groups of calls do not share one HTTP/2 connection. */
function useServerClientOnPool(h: ReturnType<typeof useServer>) {
  return createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
}
