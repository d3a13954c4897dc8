// The TypeScript helpers for orchestrators (src/stateClient.ts) against the real server.
import { once } from "node:events";
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client.js";
import { LeaderElector, stateError, watchTask, type StateError } from "../src/stateClient.js";
import { useServer } from "./harness.js";
import { TcpProxy } from "./proxy.js";

describe("TypeScript client helpers", () => {
  const h = useServer();

  it("stateError decodes the reason, metadata and field violations", async () => {
    const id = randomUUID();
    const nf = stateError(await h.client.getTask({ taskId: id }).catch((e: unknown) => e));
    expect([grpc.status[nf.code], nf.reason, nf.metadata.task_id]).to.deep.equal(["NOT_FOUND", "TASK_NOT_FOUND", id]);
    expect(nf.retryable).to.equal(false);
    const bad = stateError(await h.client.getTask({ taskId: "nope" }).catch((e: unknown) => e));
    expect(bad.reason).to.equal("INVALID_ARGUMENT");
    expect(bad.fieldViolations.map((v) => v.field)).to.deep.equal(["task_id"]);
  });

  it("watchTask resumes after dropped connections: every message once, in order, to the end", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const id = task!.taskId;
    // The watcher reaches the server through a proxy the test cuts.
    const proxy = await TcpProxy.start("127.0.0.1", h.server.port);
    const watcher = createClient(StateService, `127.0.0.1:${proxy.port}`, undefined, { "grpc.use_local_subchannel_pool": 1 });
    const resumes: string[] = [];
    const seen: bigint[] = [];
    // Resolves once the watcher has received `n` messages (a signal from the loop below, no polling).
    let received = () => {};
    const delivered = (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => (seen.length >= n ? resolve() : void (received = check));
        check();
      });
    try {
      const watching = (async () => {
        for await (const ev of watchTask(watcher, id, { backoffMs: 20, onResume: (e: StateError) => resumes.push(e.reason) })) {
          if (ev.event.case === "message") {
            seen.push(ev.event.value.sequence);
            received();
          }
        }
      })();
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 10; i++) await h.client.appendResultMessages({ taskId: id, messages: [{ message: `r${round} m${i}` }] });
        // Each round is received whole before the cut (after a cut, grpc-js may wait a second or more to reconnect).
        await delivered((round + 1) * 10);
        proxy.cut();
        proxy.resume();
      }
      await h.client.updateTask({ task: { taskId: id, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      await watching;
      expect(seen).to.deep.equal(Array.from({ length: 30 }, (_, i) => BigInt(i + 1)));
      expect(resumes.length).to.be.at.least(3);
      expect(resumes.every((r) => r === "UNAVAILABLE")).to.equal(true);
    } finally {
      watcher.close();
      await proxy.close();
    }
  });

  it("watchTask ends with the StateError of a failure it should not retry", async () => {
    let err: unknown;
    try {
      for await (const _ of watchTask(h.client, randomUUID())) break;
    } catch (e) {
      err = e;
    }
    expect((err as StateError).reason).to.equal("TASK_NOT_FOUND");
  });

  it("LeaderElector leads, reports a lost lease at once, hands over on stop", async function () {
    this.timeout(20_000);
    const a = new LeaderElector(h.client, { election: "ts-elector", instanceId: "orch-a", ttlMs: 1500 });
    const b = new LeaderElector(h.client, { election: "ts-elector", instanceId: "orch-b", ttlMs: 1500 });
    try {
      const elected = once(a, "elected");
      a.start();
      await elected;
      expect(a.isLeader).to.equal(true);
      const fence = a.fence()!;
      expect(fence.election).to.equal("ts-elector");
      // Fenced work succeeds while leading.
      await h.client.claimNextTask({ instanceId: "orch-a", fence });
      // Someone resigns a's term from outside: a notices at its next renewal.
      const lost = once(a, "lost");
      await h.client.resignLeadership({ election: "ts-elector", instanceId: "orch-a", term: fence.term });
      const [reason] = (await lost) as [StateError];
      expect(reason.reason).to.equal("LEADERSHIP_LOST");
      expect(a.fence()).to.equal(undefined);
      // a claims again (the lease is free); then b waits until a stops.
      await once(a, "elected");
      b.start();
      const bElected = once(b, "elected");
      await a.stop();
      const [leader] = (await bElected) as [{ instanceId: string }];
      expect(leader.instanceId).to.equal("orch-b");
    } finally {
      await a.stop();
      await b.stop();
    }
  });
});
