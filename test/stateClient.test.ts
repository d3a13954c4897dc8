// The TypeScript helpers for orchestrators (src/client/stateClient.ts) against the real server.
import { getEventListeners, once } from "node:events";
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { LeaderElector, stateError, watchTask, type StateError } from "../src/client/stateClient.js";
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
    // One signal for the whole watch: each reconnect's stream must let go of it.
    const ac = new AbortController();
    const listening: number[] = [];
    // Resolves once the watcher has received `n` messages (a signal from the loop below, no polling).
    let received = () => {};
    const delivered = (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (seen.length >= n) resolve();
          else received = check;
        };
        check();
      });
    try {
      const watching = (async () => {
        for await (const ev of watchTask(watcher, id, { backoffMs: 20, signal: ac.signal, onResume: (e: StateError) => resumes.push(e.reason) })) {
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
        listening.push(getEventListeners(ac.signal, "abort").length);
        proxy.cut();
        proxy.resume();
      }
      await h.client.updateTask({ task: { taskId: id, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
      await watching;
      expect(seen).to.deep.equal(Array.from({ length: 30 }, (_, i) => BigInt(i + 1)));
      expect(resumes.length).to.be.at.least(3);
      expect(resumes.every((r) => r === "UNAVAILABLE")).to.equal(true);
      // The live stream's listener only, whatever the number of reconnects; none once the watch ended.
      expect(listening).to.deep.equal([1, 1, 1]);
      expect(getEventListeners(ac.signal, "abort").length).to.equal(0);
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

  describe("a long-lived AbortSignal shared by many calls", () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    beforeEach(() => {
      warnings.length = 0;
      process.on("warning", onWarning);
    });
    afterEach(() => {
      process.off("warning", onWarning);
    });
    /** Warnings are emitted on the next tick: let them arrive before looking. */
    const maxListenerWarnings = async () => {
      await new Promise((resolve) => setImmediate(resolve));
      return warnings.filter((w) => w.name === "MaxListenersExceededWarning").map((w) => w.message);
    };

    it("keeps no abort listener once a unary or streaming call is over", async () => {
      const ac = new AbortController();
      const { task } = await h.client.createTask({ action: "deploy_nodes" });
      for (let i = 0; i < 30; i++) {
        await h.client.getTask({ taskId: task!.taskId }, { signal: ac.signal });
        await h.client.getTask({ taskId: randomUUID() }, { signal: ac.signal }).catch(() => {});
      }
      for (let i = 0; i < 15; i++) {
        // A stream that fails (no such task) and one left early.
        await (async () => {
          for await (const _ of h.client.watchTask({ taskId: randomUUID() }, { signal: ac.signal }));
        })().catch(() => {});
        const stream = h.client.watchTask({ taskId: task!.taskId }, { signal: ac.signal });
        const ended = new Promise((resolve) => stream.once("status", resolve));
        for await (const _ of stream) break;
        await ended;
      }
      expect(getEventListeners(ac.signal, "abort").length).to.equal(0);
      expect(await maxListenerWarnings()).to.deep.equal([]);
    });

    it("cancels a call whose signal was aborted before it started", async () => {
      const ac = new AbortController();
      ac.abort();
      const err = await h.client.getTask({ taskId: randomUUID() }, { signal: ac.signal }).catch((e: unknown) => e);
      expect(grpc.status[(err as grpc.ServiceError).code]).to.equal("CANCELLED");
      expect(getEventListeners(ac.signal, "abort").length).to.equal(0);
    });

    it("LeaderElector renewals do not pile up listeners on its signal", async function () {
      this.timeout(20_000);
      // The real client, counting renewals so the test waits on them.
      let renewals = 0;
      let renewed = () => {};
      const client = {
        ...h.client,
        renewLeadership: async (...a: Parameters<typeof h.client.renewLeadership>) => {
          const r = await h.client.renewLeadership(...a);
          renewals++;
          renewed();
          return r;
        },
      };
      const e = new LeaderElector(client, { election: "ts-elector-listeners", instanceId: "orch-l", ttlMs: 1000 });
      const signal = (e as unknown as { ac: AbortController }).ac.signal;
      const counts: number[] = [];
      try {
        e.start();
        while (renewals < 14) {
          await new Promise<void>((resolve) => (renewed = resolve));
          counts.push(getEventListeners(signal, "abort").length);
        }
      } finally {
        await e.stop();
      }
      // Right after a renewal, nothing holds the signal (the next sleep has not begun).
      expect(counts).to.deep.equal(Array(counts.length).fill(0));
      expect(await maxListenerWarnings()).to.deep.equal([]);
    });
  });
});
