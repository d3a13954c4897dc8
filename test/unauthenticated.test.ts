// What a peer without any credential can hold, on a server with
// authentication: health and reflection streams have budgets of their own
// that never use up the StateService's (F1 of the attack run), and
// connections that never authenticate a call are closed first when the
// connection slots run out, so an authenticated client can always connect
// (F2). Scaled down from the attack: 300 streams instead of 20,000, 100
// connection slots instead of 4,096.
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService, type WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Health, type HealthCheckResponse } from "../gen/grpc/health/v1/health_pb.js";
import * as reflV1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import { tokenHash } from "../src/auth/tokenFile.js";
import { createClient, type Client } from "../src/client/client.js";
import { parseKeystoneRoles, type AuthConfig } from "../src/config.js";
import { DEFAULT_LIMITS } from "../src/server/connections.js";
import { startKeystone } from "./fakes.js";
import { decodeError, eventually, quietPeriod, useServer, type StateClient } from "./kit/index.js";

const newToken = () => randomBytes(32).toString("hex");

/** A token file with one admin; the returned config is filled in before the server starts. */
function useAdminToken(): { auth: AuthConfig; token: () => string } {
  const auth: AuthConfig = { tokensFile: undefined, keystone: undefined, reflection: "open" };
  let dir = "";
  const token = newToken();
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "statemgmt-unauth-"));
    auth.tokensFile = path.join(dir, "tokens.json");
    await writeFile(auth.tokensFile, JSON.stringify({ identities: [{ subject: "ops", roles: ["admin"], sha256: tokenHash(token) }] }));
  });
  after(() => rm(dir, { recursive: true, force: true }));
  return { auth, token: () => token };
}

/** The first message of a stream, or the error that ended it. */
async function firstOf<T>(stream: AsyncIterable<T>): Promise<{ value?: T; err?: ReturnType<typeof decodeError> }> {
  try {
    const r = await stream[Symbol.asyncIterator]().next();
    return { value: r.value as T };
  } catch (e) {
    return { err: decodeError(e) };
  }
}

describe("unauthenticated peers: stream budgets", () => {
  const STREAMS = 300;
  const HEALTH = 40;
  const REFLECTION = 20;
  const { auth, token } = useAdminToken();
  const h = useServer({ auth, limits: { ...DEFAULT_LIMITS, maxStreams: STREAMS, maxHealthStreams: HEALTH, maxReflectionStreams: REFLECTION } });
  let health: Client<(typeof Health)["method"]>;
  let admin: StateClient;
  before(() => {
    health = createClient(Health, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
    admin = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }, { token: token() });
  });
  after(() => {
    health.close();
    admin.close();
  });

  /** An authenticated WatchTask and WatchLeader still open and send their first message. */
  async function authenticatedWatchesWork(): Promise<void> {
    const { task } = await admin.createTask({ action: "deploy_nodes" });
    const w = admin.watchTask({ taskId: task!.taskId });
    const first = await firstOf<WatchTaskResponse>(w);
    expect(first.err?.message, "WatchTask refused").to.equal(undefined);
    expect(first.value!.event.case).to.equal("task");
    w.cancel();
    const l = admin.watchLeader({ election: "orchestrator" });
    const lf = await firstOf(l);
    expect(lf.err?.message, "WatchLeader refused").to.equal(undefined);
    l.cancel();
  }

  it(`${STREAMS} health Watch streams without a token: ${HEALTH} served, the rest refused with STREAM_LIMIT naming STATEMGMT_MAX_HEALTH_STREAMS; authenticated watches unaffected`, async function () {
    this.timeout(30_000);
    const streams = Array.from({ length: STREAMS }, () => health.watch({}));
    try {
      const firsts = await Promise.all(streams.map((s) => firstOf<HealthCheckResponse>(s)));
      const served = firsts.filter((f) => f.value !== undefined);
      const refused = firsts.filter((f) => f.err !== undefined);
      expect(served.length).to.equal(HEALTH);
      expect(refused.length).to.equal(STREAMS - HEALTH);
      for (const r of refused) {
        expect(grpc.status[r.err!.code]).to.equal("RESOURCE_EXHAUSTED");
        expect(r.err!.errorInfo!.reason).to.equal("STREAM_LIMIT");
        expect(r.err!.errorInfo!.metadata.limit).to.equal(String(HEALTH));
        expect(r.err!.message).to.contain("STATEMGMT_MAX_HEALTH_STREAMS");
      }
      await authenticatedWatchesWork();
      // Health Check (unary) is not a stream: still answered.
      expect((await health.check({})).status).to.equal(1);
    } finally {
      streams.forEach((s) => s.cancel());
    }
    // The places come back once the streams end.
    // No call is in progress but the health streams just cancelled: wait for the server to let them go.
    await h.connections.until(() => h.connections.calls === 0, "health streams released", 5000);
    const again = health.watch({});
    expect((await firstOf(again)).value).to.not.equal(undefined);
    again.cancel();
  });

  it(`${STREAMS} reflection streams without a token: ${REFLECTION} served, the rest refused; authenticated watches unaffected`, async function () {
    this.timeout(30_000);
    const refl = createClient(reflV1.ServerReflection, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
    const calls = Array.from({ length: STREAMS }, () => refl.serverReflectionInfo());
    try {
      const outcomes = await Promise.all(
        calls.map(
          (c) =>
            new Promise<string>((resolve) => {
              c.once("data", () => resolve("OK"));
              c.once("error", (e: grpc.ServiceError) => resolve(`${grpc.status[e.code]} ${decodeError(e).errorInfo?.reason ?? ""}`));
              c.write({ messageRequest: { case: "listServices", value: "" } });
            }),
        ),
      );
      expect(outcomes.filter((o) => o === "OK").length).to.equal(REFLECTION);
      expect(outcomes.filter((o) => o === "RESOURCE_EXHAUSTED STREAM_LIMIT").length).to.equal(STREAMS - REFLECTION);
      await authenticatedWatchesWork();
    } finally {
      calls.forEach((c) => c.cancel());
      refl.close();
    }
  });

  it(`StateService streams refused for want of a token hold no place: ${STREAMS} of them, then ${STREAMS} authenticated watches all open`, async function () {
    this.timeout(30_000);
    const anon = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
    const { task } = await admin.createTask({ action: "deploy_nodes" });
    const refused = await Promise.all(Array.from({ length: STREAMS }, () => firstOf(anon.watchTask({ taskId: task!.taskId }))));
    expect(refused.every((r) => r.err?.code === grpc.status.UNAUTHENTICATED)).to.equal(true);
    anon.close();
    const watches = Array.from({ length: STREAMS }, () => admin.watchTask({ taskId: task!.taskId }));
    try {
      const firsts = await Promise.all(watches.map((w) => firstOf<WatchTaskResponse>(w)));
      expect(firsts.filter((f) => f.value?.event.case === "task").length).to.equal(STREAMS);
      // The budget is full now: one more is refused, naming the StateService's setting.
      const extra = await firstOf(admin.watchTask({ taskId: task!.taskId }));
      expect(extra.err!.errorInfo!.reason).to.equal("STREAM_LIMIT");
      expect(extra.err!.message).to.contain("STATEMGMT_MAX_STREAMS");
    } finally {
      watches.forEach((w) => w.cancel());
    }
  });
});

/** An HTTP/2 connection speaking gRPC without credentials: each call() is refused with UNAUTHENTICATED. */
class Stranger {
  readonly session: http2.ClientHttp2Session;
  closed = false;
  constructor(port: number) {
    this.session = http2.connect(`http://127.0.0.1:${port}`);
    this.session.on("error", () => {});
    this.session.on("close", () => (this.closed = true));
  }
  /** A GetLeader call without a token; resolves with its grpc-status (undefined when the connection went). */
  call(): Promise<string | undefined> {
    return new Promise((resolve) => {
      if (this.session.closed || this.session.destroyed) return resolve(undefined);
      const req = this.session.request({
        ":method": "POST",
        ":path": "/drydock.statemgmt.v1.StateService/GetLeader",
        "content-type": "application/grpc",
        te: "trailers",
      });
      let status: string | undefined;
      req.on("response", (headers) => (status ??= headers["grpc-status"] as string | undefined));
      req.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
      req.on("error", () => resolve(undefined));
      req.on("close", () => resolve(status));
      req.end(Buffer.from([0, 0, 0, 0, 0])); // one empty message
    });
  }
  close(): void {
    this.session.destroy();
  }
}

describe("unauthenticated peers: connection slots", () => {
  const SLOTS = 100;
  /** Each stranger calls again this soon after its last refused call: it never looks idle to grpc-js. */
  const CHURN_EVERY_MS = 50;
  const { auth, token } = useAdminToken();
  const h = useServer({ auth, limits: { ...DEFAULT_LIMITS, maxConnections: SLOTS, idleTimeoutMs: 60_000 } });

  it(`${SLOTS} connections making only refused calls hold every slot: a new admin client still connects (the oldest stranger is closed), and the strangers keep being closed first`, async function () {
    this.timeout(30_000);
    const strangers = Array.from({ length: SLOTS }, () => new Stranger(h.server.port));
    const admins: StateClient[] = [];
    let refusing = true;
    try {
      // Every stranger makes a refused call, and keeps making them (each one reset grpc-js's idle timer).
      const first = await Promise.all(strangers.map((s) => s.call()));
      expect(first.every((c) => c === String(grpc.status.UNAUTHENTICATED))).to.equal(true);
      await h.connections.until(() => h.connections.open === SLOTS, "every slot held", 5000);
      const churn = (async () => {
        while (refusing) {
          await Promise.all(strangers.map((s) => s.call()));
          await quietPeriod(CHURN_EVERY_MS, "paces the strangers' rounds of refused calls");
        }
      })();
      // Ten new admin clients in turn: each connects and is served at once.
      for (let i = 0; i < 10; i++) {
        const c = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }, { token: token() });
        admins.push(c);
        const r = await c.getLeader({ election: "x" }, { deadlineMs: 3000 });
        expect(r.leader).to.equal(undefined);
      }
      refusing = false;
      await churn;
      // Ten strangers made room, one for each admin; the admins' connections are not strangers.
      await eventually(() => strangers.filter((s) => s.closed).length === 10, 2000, "ten strangers closed");
      expect(h.connections.open).to.equal(SLOTS);
      // A new stranger now closes another stranger, never an admin: every admin is still served on its connection.
      const late = new Stranger(h.server.port);
      expect(await late.call()).to.equal(String(grpc.status.UNAUTHENTICATED));
      await eventually(() => strangers.filter((s) => s.closed).length === 11, 2000, "an eleventh stranger closed");
      strangers.push(late);
      for (const c of admins) expect((await c.getLeader({ election: "x" }, { deadlineMs: 3000 })).leader).to.equal(undefined);
      expect(late.closed).to.equal(false);
    } finally {
      refusing = false;
      strangers.forEach((s) => s.close());
      admins.forEach((c) => c.close());
    }
  });
});

describe("unauthenticated peers: refused calls are not activity", () => {
  const IDLE_MS = 1500;
  /** Both peers call this often: far more often than the idle timeout. */
  const CALL_EVERY_MS = 100;
  const { auth, token } = useAdminToken();
  const h = useServer({ auth, limits: { ...DEFAULT_LIMITS, idleTimeoutMs: IDLE_MS } });

  it("a connection that only makes refused calls is closed the idle timeout after it opened; an authenticated one making calls stays", async function () {
    this.timeout(20_000);
    const stranger = new Stranger(h.server.port);
    const admin = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }, { token: token() });
    const started = Date.now();
    let adminCalls = 0;
    try {
      while (!stranger.closed && Date.now() - started < IDLE_MS * 4) {
        expect(await stranger.call()).to.be.oneOf([String(grpc.status.UNAUTHENTICATED), undefined]);
        await admin.getLeader({ election: "x" }, { deadlineMs: 3000 });
        adminCalls++;
        await quietPeriod(CALL_EVERY_MS, "paces the two peers' calls over the idle timeout");
      }
      const ms = Date.now() - started;
      expect(stranger.closed, "the stranger's connection was closed").to.equal(true);
      expect(ms).to.be.within(IDLE_MS - 100, IDLE_MS + 2500);
      // The admin's channel kept its connection all along: one connection open, its own.
      expect(h.connections.open).to.equal(1);
      expect(adminCalls).to.be.greaterThan(5);
    } finally {
      stranger.close();
      admin.close();
    }
  });
});

describe("unauthenticated peers: Keystone validations in flight", () => {
  const MAX_PENDING = 5;
  const service = { url: "", username: "statemgmt", password: "svc-pass", projectName: "service", userDomain: "Default", projectDomain: "Default" };
  const { auth, token } = useAdminToken();
  auth.keystone = { keystone: service, roles: parseKeystoneRoles("admin=admin,reader=reader"), maxPending: MAX_PENDING };
  let keystone: Awaited<ReturnType<typeof startKeystone>>;
  before(async () => {
    keystone = await startKeystone({ username: service.username, password: service.password });
    service.url = `${keystone.base}/v3`;
  });
  after(() => keystone?.close());
  const h = useServer({ auth });
  const ks = (t: string) => {
    const m = new grpc.Metadata();
    m.set("x-auth-token", t);
    return { metadata: m, deadlineMs: 10_000 };
  };

  it(`random tokens while Keystone is slow: ${MAX_PENDING} validations wait on it, the rest are refused at once with AUTHENTICATION_BUSY; cached Keystone tokens and the token file are served meanwhile`, async function () {
    this.timeout(30_000);
    keystone.issue("ks-reader", { user: "viewer", roles: ["reader"], expiresAt: Date.now() + 3600_000 });
    await h.client.listTasks({}, ks("ks-reader")); // validated once, cached
    const release = keystone.hold();
    const random = Array.from({ length: 40 }, () =>
      h.client.getLeader({ election: "x" }, ks(newToken())).then(
        () => "OK",
        (e: unknown) => {
          const d = decodeError(e);
          return `${grpc.status[d.code]} ${d.errorInfo?.reason ?? ""}`.trim();
        },
      ),
    );
    await eventually(() => keystone.heldCount() === MAX_PENDING, 5000, `${MAX_PENDING} validations at Keystone`);
    const admin = createClient(StateService, h.server.address, undefined, {}, { token: token() });
    try {
      expect((await admin.getLeader({ election: "x" }, { deadlineMs: 3000 })).leader).to.equal(undefined);
      expect((await h.client.listTasks({}, ks("ks-reader"))).tasks).to.be.an("array");
      release();
      const outcomes = await Promise.all(random);
      expect(outcomes.filter((o) => o === "RESOURCE_EXHAUSTED AUTHENTICATION_BUSY").length).to.equal(40 - MAX_PENDING);
      expect(outcomes.filter((o) => o === "UNAUTHENTICATED TOKEN_INVALID").length).to.equal(MAX_PENDING);
      expect(keystone.heldCount()).to.equal(MAX_PENDING);
      // The budget is free again: a new unknown token reaches Keystone.
      const d = await h.client.getLeader({ election: "x" }, ks(newToken())).then(
        () => null,
        (e: unknown) => decodeError(e),
      );
      expect(d!.errorInfo!.reason).to.equal("TOKEN_INVALID");
    } finally {
      release();
      admin.close();
    }
  });
});
