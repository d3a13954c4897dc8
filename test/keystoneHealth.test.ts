// Keystone's own health entry ("keystone") and statemgmt_keystone_up: an
// unreachable Keystone shows there, while "" and the StateService entry (the
// replica's rotation) follow the database only.
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { Health, HealthCheckResponse_ServingStatus as Serving, type HealthCheckResponse } from "../gen/grpc/health/v1/health_pb.js";
import { createClient } from "../src/client/client.js";
import { parseKeystoneRoles, type AuthConfig } from "../src/config.js";
import { startKeystone } from "./fakes.js";
import { expectError, useServer } from "./harness.js";

const STATE_SERVICE = "drydock.statemgmt.v1.StateService";

/** The samples of one metric in a /metrics scrape: labels text → value. */
async function samples(address: string, name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const out = new Map<string, number>();
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, "gm"))) out.set(m[1] ?? "", Number(m[2]));
  return out;
}

/** A health Watch: next() is the next status the server sends. */
function watch(client: ReturnType<typeof createClient<typeof Health.method>>, service: string) {
  const call = client.watch({ service });
  const it = (call as AsyncIterable<HealthCheckResponse>)[Symbol.asyncIterator]();
  return {
    next: async () => {
      const r = await it.next();
      if (r.done) throw new Error("the health Watch ended");
      return Serving[r.value.status];
    },
    close: () => call.cancel(),
  };
}

describe("health: Keystone's own entry", function () {
  this.timeout(30_000);
  let keystone: Awaited<ReturnType<typeof startKeystone>>;
  const service = { url: "", username: "statemgmt", password: "svc-pass", projectName: "service", userDomain: "Default", projectDomain: "Default" };
  const auth: AuthConfig = {
    tokensFile: undefined,
    keystone: { keystone: service, roles: parseKeystoneRoles("admin=admin,member=orchestrator,reader=reader") },
    reflection: "open",
  };
  before(async () => {
    keystone = await startKeystone({ username: service.username, password: service.password });
    service.url = `${keystone.base}/v3`;
  });
  after(() => keystone?.close());
  // While Keystone does not answer, it is probed at the health interval.
  const h = useServer({ auth, metrics: true, healthIntervalMs: 200 });
  let health: ReturnType<typeof createClient<typeof Health.method>>;
  before(() => (health = createClient(Health, h.server.address)));
  after(() => health?.close());
  const check = async (s: string) => Serving[(await health.check({ service: s })).status];
  const ks = (token: string) => {
    const md = new grpc.Metadata();
    md.set("x-auth-token", token);
    return { metadata: md };
  };

  it("reports Keystone down and up again as 'keystone' and statemgmt_keystone_up, leaving '' and the StateService SERVING", async () => {
    const w = watch(health, "keystone");
    try {
      // UNKNOWN until the first probe has answered (it may have already).
      let s = await w.next();
      if (s === "UNKNOWN") s = await w.next();
      expect(s).to.equal("SERVING");
      const endpoint = `{endpoint="${new URL(keystone.base).origin}"}`;
      expect([...(await samples(h.server.metricsAddress!, "statemgmt_keystone_up"))]).to.deep.equal([[endpoint, 1]]);

      // Keystone fails: the next validation of a token not cached reports it at once.
      keystone.issue("ks-outage", { user: "drydock", roles: ["reader"], expiresAt: Date.now() + 3600_000 });
      keystone.fail(503);
      const d = await expectError(h.client.listTasks({}, ks("ks-outage")), grpc.status.UNAVAILABLE);
      expect(d.errorInfo?.reason).to.equal("KEYSTONE_UNAVAILABLE");
      expect(await w.next()).to.equal("NOT_SERVING");
      expect([await check("keystone"), await check(""), await check(STATE_SERVICE)]).to.deep.equal(["NOT_SERVING", "SERVING", "SERVING"]);
      expect([...(await samples(h.server.metricsAddress!, "statemgmt_keystone_up"))]).to.deep.equal([[endpoint, 0]]);
      const readyz = await fetch(`http://${h.server.metricsAddress}/readyz`);
      expect(readyz.status).to.equal(200);

      // Keystone answers again: the next probe sees it, with no call needed.
      keystone.fail(undefined);
      expect(await w.next()).to.equal("SERVING");
      expect(await check("keystone")).to.equal("SERVING");
      expect([...(await samples(h.server.metricsAddress!, "statemgmt_keystone_up"))]).to.deep.equal([[endpoint, 1]]);
      await h.client.listTasks({}, ks("ks-outage"));
    } finally {
      w.close();
    }
  });
});

describe("health: no Keystone entry without Keystone validation", () => {
  const h = useServer({ metrics: true });

  it("answers NOT_FOUND for 'keystone' and has no statemgmt_keystone_up sample", async () => {
    const health = createClient(Health, h.server.address);
    try {
      await expectError(health.check({ service: "keystone" }), grpc.status.NOT_FOUND);
      expect(Serving[(await health.check({ service: "" })).status]).to.equal("SERVING");
    } finally {
      health.close();
    }
    expect([...(await samples(h.server.metricsAddress!, "statemgmt_keystone_up"))]).to.deep.equal([]);
  });
});
