// The server as an operator runs it: a process with an embedded PostgreSQL in
// a data directory, started, stopped with SIGTERM, restarted.
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb.js";
import { createClient } from "../src/client/client.js";
import { connect, DEFAULT_TIMEOUTS } from "../src/db/connect.js";
import { createTransactor, type Transactor } from "../src/store/transactions.js";
import { loadMigrations, migrate } from "../src/db/migrate.js";
import { createLogger } from "../src/core/log.js";
import { startServer } from "../src/server/server.js";
import { activeResources, beyond } from "./kit/handles.js";
import { createTestDatabase, decodeError, eventually, startTestServer } from "./kit/index.js";
import { logLine, startProcess } from "./process.js";

describe("server process with an embedded database", function () {
  this.timeout(120_000);
  let dataDir: string;
  before(async () => (dataDir = await mkdtemp(path.join(tmpdir(), "statemgmt-life-"))));
  after(async () => rm(dataDir, { recursive: true, force: true }));

  it("starts, refuses a second server on the same data directory, stops on SIGTERM and keeps its data", async () => {
    const first = startProcess(["--listen", "127.0.0.1:0", "--data-dir", dataDir]);
    try {
      const ready = await logLine(first, "ready");
      expect(ready.embedded).to.equal(true);
      expect(ready.startupMs).to.be.a("number");
      const address = ready.address as string;
      const client = createClient(StateService, address);
      const { task } = await client.createTask({ action: "survive_restart", requestContext: { user: "op" } });
      client.close();

      const second = startProcess(["--listen", "127.0.0.1:0", "--data-dir", dataDir]);
      expect(await second.exited).to.equal(1);
      const fatal = second.lines.find((l) => l.level === 60);
      expect(String((fatal?.err as unknown) ?? "")).to.match(/data directory .* is in use by another drydock-statemgmt server \(pid \d+\)/);

      // The first server is unharmed.
      const again = createClient(StateService, address);
      expect((await again.getTask({ taskId: task!.taskId })).task!.action).to.equal("survive_restart");
      again.close();

      first.child.kill("SIGTERM");
      expect(await first.exited).to.equal(0);
      expect(first.lines.map((l) => l.msg)).to.include.members(["shutting down", "embedded PostgreSQL stopped", "stopped"]);

      const third = startProcess(["--listen", "127.0.0.1:0", "--data-dir", dataDir]);
      try {
        const r3 = await logLine(third, "ready");
        const c3 = createClient(StateService, r3.address as string);
        const { task: kept } = await c3.getTask({ taskId: task!.taskId });
        expect(kept!.requestContext).to.deep.equal({ user: "op" });
        c3.close();
      } finally {
        third.child.kill("SIGTERM");
        expect(await third.exited).to.equal(0);
      }
    } finally {
      if (first.child.exitCode === null) first.child.kill("SIGKILL");
    }
  });

  it("exits with a clear message on bad configuration", async () => {
    const p = startProcess(["--listen", "nonsense"]);
    expect(await p.exited).to.equal(2);
    expect(p.stderr).to.contain("STATEMGMT_LISTEN / --listen");
    const q = startProcess([], { env: { STATEMGMT_LOG_LEVEL: "loud" } });
    expect(await q.exited).to.equal(2);
    expect(q.stderr).to.contain("STATEMGMT_LOG_LEVEL");
  });
});

describe("migrations", () => {
  it("applies each migration once when 10 instances start at the same time", async function () {
    this.timeout(60_000);
    const db = await createTestDatabase();
    // A fresh, empty database (the template is already migrated).
    const sql = connect({ url: db.url, max: 1 });
    await sql.unsafe("drop schema public cascade; create schema public");
    await sql.end();
    const pools = Array.from({ length: 10 }, () => createTransactor({ url: db.url, slots: 1, timeouts: DEFAULT_TIMEOUTS }));
    try {
      const all = (await loadMigrations()).map((m) => m.version);
      expect(all.length).to.be.at.least(2);
      const applied = await Promise.all(pools.map((p) => migrate(p)));
      expect(applied.flat().sort()).to.deep.equal(all);
      const [{ n }] = await pools[0]!.unbounded(
        (tx: Parameters<Parameters<Transactor["unbounded"]>[0]>[0]) => tx<{ n: number }[]>`select count(*)::int n from schema_migrations`,
      );
      expect(n).to.equal(all.length);
      // And again: nothing to do.
      expect(await migrate(pools[0]!)).to.deep.equal([]);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
      await db.drop();
    }
  });
});

describe("shutdown", () => {
  it("ends open streams with UNAVAILABLE and lets unary calls in flight finish", async function () {
    this.timeout(30_000);
    const db = await createTestDatabase();
    const started = await startTestServer({ url: db.url }, { dbPoolSize: 2, dbTxPoolSize: 2 });
    const { server, client: state } = started;
    const health = createClient(Health, server.address);
    // An independent connection that holds a row lock.
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    try {
      const { task } = await state.createTask({ action: "slow" });
      const watch = health.watch({});
      const it = watch[Symbol.asyncIterator]();
      expect((await it.next()).value.status).to.equal(Serving.SERVING);

      // A unary call that is still running when shutdown begins: it waits for a row lock held here.
      await locker.query("begin");
      await locker.query("select 1 from tasks where task_id = $1 for update", [task!.taskId]);
      const update = state.updateTask({ task: { taskId: task!.taskId, retry: 7 }, updateMask: { paths: ["retry"] } });
      // Until the update waits for the lock (PostgreSQL signals lock waits to nobody: ask it).
      const waitsForLock = async () =>
        (await locker.query("select count(*)::int n from pg_locks where not granted and locktype = 'transactionid'")).rows[0].n > 0;
      await eventually(waitsForLock, 10_000, "the update waiting for the lock");

      const shutdown = server.shutdown(10_000);
      const seen: number[] = [];
      let err: unknown;
      for (;;) {
        const r = await it.next().then(
          (v) => v,
          (e: unknown) => {
            err = e;
            return null;
          },
        );
        if (!r || r.done) break;
        seen.push(r.value.status);
      }
      expect(decodeError(err).code).to.equal(grpc.status.UNAVAILABLE);
      expect(seen).to.deep.equal([Serving.NOT_SERVING]);

      await locker.query("rollback");
      const { task: updated } = await update;
      expect(updated!.retry).to.equal(7);
      await shutdown;
      // New calls are refused once the server has stopped.
      const after = await state.getTask({ taskId: task!.taskId }, { deadlineMs: 1000 }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(decodeError(after).code).to.be.oneOf([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);
    } finally {
      health.close();
      await started.stop();
      await locker.end();
      await db.drop();
    }
  });
});

describe("start-up of the gRPC server", () => {
  it("rejects naming the address when the port is taken, and leaves no LISTEN connection, socket or timer behind", async function () {
    this.timeout(30_000);
    const db = await createTestDatabase();
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const port = (busy.address() as AddressInfo).port;
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    const sql = connect({ url: db.url, max: 2 });
    const tx = createTransactor({ url: db.url, slots: 1, timeouts: DEFAULT_TIMEOUTS });
    const listeners = async () =>
      (
        await admin.query<{ n: number }>("select count(*)::int n from pg_stat_activity where datname = $1 and application_name = 'drydock-statemgmt-listen'", [
          db.name,
        ])
      ).rows[0]!.n;
    const before = activeResources();
    try {
      const err = await startServer({
        db: { sql, tx },
        databaseUrl: db.url,
        log: createLogger("silent"),
        listen: { host: "127.0.0.1", port },
        healthIntervalMs: 100,
      }).then(
        () => expect.fail("startServer resolved on a port in use"),
        (e: Error) => e,
      );
      expect(err.message).to.match(new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port}: .*(in use|EADDRINUSE)`));

      // The watch hub's LISTEN connection is closed (PostgreSQL may take a moment to reap the backend).
      await eventually(async () => (await listeners()) === 0, 5000, "no LISTEN connection left").catch(() => {});
      expect(await listeners(), "LISTEN connections left").to.equal(0);

      // With the pools ended, nothing startServer made keeps the process alive.
      await sql.end({ timeout: 5 });
      await tx.end();
      // An fs request in flight (FSReqCallback) is not a leak: give what is under way a moment to settle first.
      await eventually(() => beyond(before, activeResources()).length === 0, 2000, "the handles closing").catch(() => {});
      const after = activeResources();
      for (const kind of new Set([...Object.keys(after), ...Object.keys(before)])) {
        expect(after[kind] ?? 0, `${kind} handles left behind`).to.be.at.most(before[kind] ?? 0);
      }
    } finally {
      await sql.end({ timeout: 5 });
      await tx.end();
      await admin.end();
      busy.close();
      await db.drop();
    }
  });
});
