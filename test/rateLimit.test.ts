// The rate limit per client address of the calls nodes make without a token
// (ReportBootActionStatus, VerifyBootActionKey), through a server with bearer
// token authentication. The server's clock stands still until the test moves
// it, so no bucket refills behind the test's back.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { BootActionStatus } from "../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { tokenHash } from "../src/auth/tokenFile.js";
import type { Clock } from "../src/core/clock.js";
import { createClient } from "../src/client/client.js";
import { ConfigError, loadConfig, type AuthConfig } from "../src/config.js";
import { peerAddress, PeerRateLimiter } from "../src/server/rateLimit.js";
import { expectError, useServer, type StateClient } from "./harness.js";

/** A clock that moves only when told (leases still follow the database's clock: sqlNow is undefined). */
class StillClock implements Clock {
  ms = Date.UTC(2026, 0, 1);
  sqlNow = () => undefined;
  nowMs = () => this.ms;
  sleep = (ms: number, signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(t);
          reject(signal.reason);
        },
        { once: true },
      );
    });
}

/** Forwards 127.0.0.1:<port> to the server, connecting from `localAddress`: another client address. */
async function forwarder(target: number, localAddress: string): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = netConnect({ port: target, host: "127.0.0.1", localAddress });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    close: async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((r) => server.close(r));
    },
  };
}

const bearer = (token: string) => {
  const m = new grpc.Metadata();
  m.set("authorization", `Bearer ${token}`);
  return { metadata: m };
};

describe("rate limit of key-authorized calls per client address", () => {
  const admin = randomBytes(32).toString("hex");
  const auth: AuthConfig = { tokensFile: undefined, keystone: undefined, reflection: "open" };
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "rate-limit-"));
    auth.tokensFile = path.join(dir, "tokens.json");
    await writeFile(auth.tokensFile, JSON.stringify({ identities: [{ subject: "root-1", roles: ["admin"], sha256: tokenHash(admin) }] }));
  });
  after(async () => rm(dir, { recursive: true, force: true }));
  const clock = new StillClock();
  const h = useServer({ auth, clock, metrics: true, nodeCallLimit: { ratePerSecond: 2, burst: 5 } });

  let key: Buffer;
  let actionId: string;
  let taskId: string;
  before(async () => {
    const as = bearer(admin);
    taskId = (await h.client.createTask({ action: "deploy_nodes" }, as)).task!.taskId;
    key = Buffer.from((await h.client.setBootActionContext({ nodeName: "node-1", taskId }, as)).generatedIdentityKey);
    actionId = (await h.client.createBootActions({ nodeName: "node-1", taskId, actions: [{ actionName: "a", signalling: true }] }, as)).bootActions[0]!
      .actionId;
  });

  const refusedTotal = async () => (await h.server.metrics!.registry.getSingleMetric("statemgmt_node_calls_rate_limited_total")!.get()).values[0]?.value ?? 0;

  async function expectLimited(p: Promise<unknown>, retryAfterMs: string, peer = "127.0.0.1") {
    const d = await expectError(p, grpc.status.RESOURCE_EXHAUSTED);
    expect(d.errorInfo!.reason).to.equal("RATE_LIMITED");
    expect(d.errorInfo!.metadata).to.deep.equal({ peer, limit: "2", burst: "5", retry_after_ms: retryAfterMs });
    expect(d.message).to.contain("STATEMGMT_NODE_CALL_RATE");
    return d;
  }

  it("takes a burst from an address, then refuses its calls before any database work; other addresses and token holders are unaffected", async () => {
    // The burst: any outcome of the handler uses a token, a wrong key's too.
    await h.client.verifyBootActionKey({ nodeName: "node-1", identityKey: key });
    await h.client.reportBootActionStatus({ actionId, identityKey: key, details: [{ message: "1" }] });
    await expectError(h.client.verifyBootActionKey({ nodeName: "node-1", identityKey: randomBytes(32) }), grpc.status.PERMISSION_DENIED);
    await h.client.verifyBootActionKey({ nodeName: "node-1", identityKey: key });
    await h.client.reportBootActionStatus({ actionId, identityKey: key, details: [{ message: "2" }] });

    // Refused: a report writes nothing, and an unknown node is not even looked up (no NOT_FOUND).
    await expectLimited(h.client.reportBootActionStatus({ actionId, identityKey: key, details: [{ message: "3" }] }), "500");
    await expectLimited(h.client.verifyBootActionKey({ nodeName: "no-such-node", identityKey: key }), "500");
    const { rows } = await h.pg.query("select message from result_messages where task_id = $1 order by seq", [taskId]);
    expect(rows.map((r) => r.message)).to.deep.equal(["1", "2"]);
    expect(await refusedTotal()).to.equal(2);

    // Callers with a token, of the other methods, are not counted.
    for (let i = 0; i < 20; i++) expect((await h.client.getBootAction({ actionId }, bearer(admin))).bootAction!.actionId).to.equal(actionId);

    // Another address has a bucket of its own.
    const fwd = await forwarder(h.server.port, "127.0.0.2");
    const other: StateClient = createClient(StateService, `127.0.0.1:${fwd.port}`);
    try {
      for (let i = 0; i < 5; i++) await other.verifyBootActionKey({ nodeName: "node-1", identityKey: key });
      await expectLimited(other.verifyBootActionKey({ nodeName: "node-1", identityKey: key }), "500", "127.0.0.2");
    } finally {
      other.close();
      await fwd.close();
    }

    // Time refills: 2 calls a second.
    clock.ms += 250;
    await expectLimited(h.client.verifyBootActionKey({ nodeName: "node-1", identityKey: key }), "250");
    clock.ms += 750;
    await h.client.verifyBootActionKey({ nodeName: "node-1", identityKey: key });
    await h.client.reportBootActionStatus({ actionId, identityKey: key, status: BootActionStatus.SUCCESS });
    await expectLimited(h.client.verifyBootActionKey({ nodeName: "node-1", identityKey: key }), "500");
    expect(await refusedTotal()).to.equal(5);
    expect((await h.client.getBootAction({ actionId }, bearer(admin))).bootAction!.status).to.equal(BootActionStatus.SUCCESS);
  });
});

describe("rate limit pieces", () => {
  it("keys a bucket by the peer's address, not its port", () => {
    expect(peerAddress("127.0.0.1:50123")).to.equal("127.0.0.1");
    expect(peerAddress("10.1.2.3")).to.equal("10.1.2.3");
    expect(peerAddress("::1:50123")).to.equal("::1");
    expect(peerAddress("[2001:db8::7]:443")).to.equal("2001:db8::7");
    expect(peerAddress("2001:db8::7")).to.equal("2001:db8::7");
    expect(peerAddress("::ffff:192.0.2.9:40000")).to.equal("192.0.2.9");
    expect(peerAddress("unknown")).to.equal("unknown");
  });

  it("keeps at most maxPeers buckets and drops the ones that have refilled", () => {
    let now = 0;
    let refused = 0;
    const limiter = new PeerRateLimiter(
      { ratePerSecond: 10, burst: 2 },
      () => now,
      () => refused++,
      100,
    );
    for (let i = 0; i < 1000; i++) limiter.take(`10.0.${i >> 8}.${i & 255}`);
    expect(limiter.size).to.equal(100);
    limiter.take("10.9.9.9");
    limiter.take("10.9.9.9");
    expect(() => limiter.take("10.9.9.9")).to.throw(/too many calls from 10\.9\.9\.9/);
    expect(refused).to.equal(1);
    // 200 ms on, every other bucket has refilled: each call drops up to two of them, least recently used first.
    now += 200;
    for (let i = 0; i < 50; i++) {
      limiter.take("10.9.9.9");
      now += 100;
    }
    expect(limiter.size).to.equal(1);
  });

  it("reads STATEMGMT_NODE_CALL_RATE and STATEMGMT_NODE_CALL_BURST (0: no limit)", () => {
    expect(loadConfig([], {}).nodeCallLimit).to.deep.equal({ ratePerSecond: 50, burst: 100 });
    expect(loadConfig([], { STATEMGMT_NODE_CALL_RATE: "0" }).nodeCallLimit.ratePerSecond).to.equal(0);
    expect(loadConfig([], { STATEMGMT_NODE_CALL_RATE: "500", STATEMGMT_NODE_CALL_BURST: "2000" }).nodeCallLimit).to.deep.equal({
      ratePerSecond: 500,
      burst: 2000,
    });
    expect(() => loadConfig([], { STATEMGMT_NODE_CALL_RATE: "-1" })).to.throw(ConfigError, /STATEMGMT_NODE_CALL_RATE/);
    expect(() => loadConfig([], { STATEMGMT_NODE_CALL_BURST: "0" })).to.throw(ConfigError, /STATEMGMT_NODE_CALL_BURST/);
  });
});
