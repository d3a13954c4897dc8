// Test harness: a fresh database per test file (cloned from the migrated
// template) and a real server on an ephemeral port, called through the
// generated client over a socket.
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { fromBinary, createRegistry } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import pg from "pg";
import postgres from "postgres";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { BadRequestSchema, ErrorInfoSchema, type BadRequest, type ErrorInfo } from "../gen/google/rpc/error_details_pb.js";
import { createClient, tlsCredentials, type Client } from "../src/client/client.js";
import type { Sql } from "../src/db/connect.js";
import type { Transactor } from "../src/store/transactions.js";
import { createLogger, type Logger } from "../src/core/log.js";
import { startServer, type StateServer } from "../src/server/server.js";
import { connectDb, settingsWith, type Settings } from "../src/server/settings.js";
import type { Clock } from "../src/core/clock.js";
import { WatchProbe } from "./kit/watchProbe.js";
import { ConnectionProbe } from "./kit/connectionProbe.js";

export const TEMPLATE_DB = "statemgmt_template";
export const shared: { adminUrl: string } = { adminUrl: "" };

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export type StateClient = Client<(typeof StateService)["method"]>;

/** A database of its own (cloned from the template) for one test file. */
export async function createTestDatabase(): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `statemgmt_test_${randomBytes(6).toString("hex")}`;
  const admin = postgres(shared.adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name} template ${TEMPLATE_DB}`);
  await admin.end();
  return {
    name,
    url: withDatabase(shared.adminUrl, name),
    async drop() {
      const a = postgres(shared.adminUrl, { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}

export interface Harness {
  client: StateClient;
  server: StateServer;
  sql: Sql;
  tx: Transactor;
  /** An independent pg client on the same database, to check what really landed. */
  pg: pg.Client;
  dbName: string;
  dbUrl: string;
  /** The server's watch feeds as its hub signals them. */
  probe: WatchProbe;
  /** The server's connections and calls as its listener signals them. */
  connections: ConnectionProbe;
}

/** A server started by startTestServer, its pools and a client of it. */
export type TestServer = Pick<Harness, "client" | "server" | "sql" | "tx" | "probe" | "connections"> & {
  /** Closes the client, shuts the server down (giving calls graceMs, default 2000), and ends the pools it opened. */
  stop(graceMs?: number): Promise<void>;
};

/** Where startTestServer's server finds its database. */
export interface TestDatabase {
  /** The database of the pools (a proxy's address, a multi-host URL). */
  url: string;
  /** The LISTEN connection's, when not `url`. */
  listenUrl?: string;
  /** Pools of the caller's (who ends them), instead of pools on `url` made from the options. */
  pools?: { sql: Sql; tx: Transactor };
}

/**
 * Settings of the test's server on top of the harness's (HARNESS_SETTINGS),
 * which are on top of the server's defaults (src/server/settings.ts); and
 * what only a test has.
 */
export interface HarnessOptions extends Partial<Settings> {
  /** Session TimeZone of the server's pool (default UTC). */
  timeZone?: string;
  /** CA and client certificate h.client uses when tls is set. */
  tlsClientCa?: string;
  tlsClient?: { certFile: string; keyFile: string };
  /** Serve metrics on an ephemeral port (metricsListen 127.0.0.1:0). */
  metrics?: boolean;
  /** Longest a scrape reuses the finished-task counts (default: the server's, 5 minutes). */
  metricsFinishedCountMaxAgeMs?: number;
  /** The server's logger (default: silent, or TEST_LOG_LEVEL). */
  log?: Logger;
  /** The server's clock of leases and the design cache (test/clock.ts; default: the database's). */
  clock?: Clock;
}

/** Where the harness's servers differ from the server's defaults. */
const HARNESS_SETTINGS: Partial<Settings> = {
  listen: { host: "127.0.0.1", port: 0 },
  healthIntervalMs: 1000,
  // Short, so the suite's finished watches end quickly (the default is 3 s).
  watchFinishLingerMs: 300,
  // Key-authorized calls per client address: off (the server's default is
  // 50/s, bursts of 100). Every test client calls from 127.0.0.1, so suites of
  // many nodes reporting at once would otherwise be limited.
  nodeCallLimit: { ratePerSecond: 0, burst: 1 },
};

/** Sets up before/after hooks in the calling describe(); the returned object fills in before tests run. */
export function useServer(opts: HarnessOptions = {}): Harness {
  const h = {} as Harness;
  let started: TestServer | undefined;
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  before(async function () {
    this.timeout(60_000);
    db = await createTestDatabase();
    h.dbName = db.name;
    h.dbUrl = db.url;
    started = await startTestServer({ url: db.url }, opts);
    Object.assign(h, started);
    h.pg = new pg.Client({ connectionString: db.url });
    await h.pg.connect();
  });
  after(async function () {
    this.timeout(60_000);
    await started?.stop();
    await h.pg?.end();
    await db?.drop();
  });
  return h;
}

/**
 * The tests' one server starter (useServer's, and every test's that needs a
 * server of its own): pools on `db.url` (or the caller's), a server with the
 * suite's settings (HARNESS_SETTINGS, then `opts`) on an ephemeral port, its
 * probes, and a client of it.
 */
export async function startTestServer(db: TestDatabase, opts: HarnessOptions = {}): Promise<TestServer> {
  const h = {} as TestServer;
  const settings = settingsWith(HARNESS_SETTINGS, opts.metrics ? { metricsListen: { host: "127.0.0.1", port: 0 } } : {}, opts);
  ({ sql: h.sql, tx: h.tx } = db.pools ?? connectDb(db.url, settings, { timeZone: opts.timeZone }));
  const endPools = async () => {
    if (db.pools) return;
    await h.sql.end({ timeout: 5 });
    await h.tx.end();
  };
  try {
    h.server = await startServer({
      ...settings,
      db: { sql: h.sql, tx: h.tx },
      databaseUrl: db.listenUrl ?? db.url,
      log: opts.log ?? createLogger((process.env.TEST_LOG_LEVEL as never) ?? "silent"),
      clock: opts.clock,
      metricsFinishedCountMaxAgeMs: opts.metricsFinishedCountMaxAgeMs,
    });
  } catch (err) {
    await endPools();
    throw err;
  }
  h.probe = new WatchProbe(h.server.hub);
  h.connections = new ConnectionProbe(h.server.connections);
  h.client = createClient(StateService, h.server.address, opts.tls ? tlsCredentials({ caFile: opts.tlsClientCa, ...opts.tlsClient }) : undefined);
  h.stop = async (graceMs = 2000) => {
    h.client.close();
    await h.server.shutdown(graceMs);
    await endPools();
  };
  return h;
}

const detailRegistry = createRegistry(ErrorInfoSchema, BadRequestSchema);

export interface DecodedError {
  code: grpc.status;
  message: string;
  errorInfo?: ErrorInfo;
  badRequest?: BadRequest;
}

/** Decodes a gRPC error and its google.rpc.Status details. */
export function decodeError(err: unknown): DecodedError {
  const e = err as grpc.ServiceError;
  expect(e, "expected a gRPC error").to.have.property("code");
  const out: DecodedError = { code: e.code, message: e.details };
  const bin = e.metadata?.get("grpc-status-details-bin")?.[0];
  if (bin instanceof Buffer) {
    const status = fromBinary(StatusSchema, bin);
    expect(status.code).to.equal(e.code);
    for (const any of status.details) {
      const msg = anyUnpack(any, detailRegistry);
      if (msg?.$typeName === ErrorInfoSchema.typeName) out.errorInfo = msg as ErrorInfo;
      if (msg?.$typeName === BadRequestSchema.typeName) out.badRequest = msg as BadRequest;
    }
  }
  return out;
}

/** Awaits a call that must fail; returns the decoded error. */
export async function expectError(p: Promise<unknown>, code: grpc.status): Promise<DecodedError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err, `expected the call to fail with ${grpc.status[code]}`).to.exist;
  const d = decodeError(err);
  expect(grpc.status[d.code], d.message).to.equal(grpc.status[code]);
  expect(d.errorInfo?.domain).to.equal("statemgmt.drydock.airshipit.org");
  return d;
}

/** Asserts INVALID_ARGUMENT naming `field` in the BadRequest details; nothing else. */
export async function expectInvalid(p: Promise<unknown>, field: string): Promise<DecodedError> {
  const d = await expectError(p, grpc.status.INVALID_ARGUMENT);
  const fields = d.badRequest?.fieldViolations.map((v) => v.field) ?? [];
  expect(fields, d.message).to.include(field);
  expect(d.message).to.contain(field);
  return d;
}
