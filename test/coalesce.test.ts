import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import pg from "pg";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client.js";
import { decodeError, useServer, type StateClient } from "./harness.js";

type Settled<T> = PromiseSettledResult<T>;
const codeOf = (s: Settled<unknown>) => (s.status === "fulfilled" ? "OK" : grpc.status[decodeError(s.reason).code]!);

/** Distinct values of a column over the given rows' ids: fewer than the rows means some shared a statement. */
async function distinct(h: { pg: pg.Client }, query: string, ids: string[]): Promise<number> {
  const { rows } = await h.pg.query(query, [ids]);
  return rows[0].n as number;
}

describe("coalesced writes", () => {
  const h = useServer({ poolSize: 10 });
  let clients: StateClient[];
  before(() => {
    // Separate channels, as separate orchestrator processes would use.
    clients = Array.from({ length: 8 }, () => createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }));
  });
  after(() => clients.forEach((c) => c.close()));
  const on = (i: number) => clients[i % clients.length]!;

  it("fails exactly the duplicate among 50 concurrent creates, and writes the other 49 in fewer statements", async () => {
    const taken = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    const ids = Array.from({ length: 50 }, (_, i) => (i === 17 ? taken : randomUUID()));
    const outcomes = await Promise.allSettled(ids.map((taskId, i) => on(i).createTask({ taskId, action: "deploy_nodes", requestContext: { i } })));
    expect(outcomes.map(codeOf)).to.deep.equal(ids.map((_, i) => (i === 17 ? "ALREADY_EXISTS" : "OK")));
    const dup = decodeError((outcomes[17] as PromiseRejectedResult).reason);
    expect(dup.errorInfo!.reason).to.equal("TASK_ALREADY_EXISTS");
    expect(dup.errorInfo!.metadata).to.deep.equal({ task_id: taken });
    outcomes.forEach((o, i) => {
      if (i !== 17) expect((o as PromiseFulfilledResult<{ task?: { taskId: string; requestContext?: unknown } }>).value.task!.requestContext).to.deep.equal({ i });
    });
    const created = ids.filter((_, i) => i !== 17);
    const { rows } = await h.pg.query("select task_id, request_context from tasks where task_id = any($1::uuid[])", [created]);
    expect(rows.length).to.equal(49);
    for (const r of rows) expect(r.request_context).to.deep.equal({ i: ids.indexOf(r.task_id) });
    // A batch's tasks share their statement's now(): 49 calls, fewer creation times.
    expect(await distinct(h, "select count(distinct created)::int as n from tasks where task_id = any($1::uuid[])", created)).to.be.below(49);
  });

  it("gives each caller its own outcome: a repeated id, a missing parent and a finished parent fail only their callers", async () => {
    const parent = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    const finished = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    await h.client.updateTask({ task: { taskId: finished, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const repeated = randomUUID();
    const missing = randomUUID();
    const requests = Array.from({ length: 40 }, (_, i) => ({ taskId: randomUUID(), parentTaskId: i % 2 ? parent : "", action: "deploy_nodes" }));
    requests[5] = { taskId: repeated, parentTaskId: "", action: "deploy_nodes" };
    requests[6] = { taskId: repeated, parentTaskId: "", action: "deploy_nodes" };
    requests[9] = { taskId: randomUUID(), parentTaskId: missing, action: "deploy_nodes" };
    requests[13] = { taskId: randomUUID(), parentTaskId: finished, action: "deploy_nodes" };
    const outcomes = await Promise.allSettled(requests.map((r, i) => on(i).createTask(r)));
    const codes = outcomes.map(codeOf);
    // Of the two calls with one id, exactly one creates it.
    expect([codes[5], codes[6]].sort()).to.deep.equal(["ALREADY_EXISTS", "OK"]);
    expect(codes[9]).to.equal("NOT_FOUND");
    expect(decodeError((outcomes[9] as PromiseRejectedResult).reason).message).to.contain(`parent task ${missing} does not exist`);
    expect(codes[13]).to.equal("FAILED_PRECONDITION");
    expect(decodeError((outcomes[13] as PromiseRejectedResult).reason).errorInfo!.reason).to.equal("TASK_FINISHED");
    expect(codes.filter((_, i) => ![5, 6, 9, 13].includes(i))).to.deep.equal(Array(36).fill("OK"));
    const subtasks = requests.filter((r, i) => r.parentTaskId === parent && codes[i] === "OK").map((r) => r.taskId);
    const { task } = await h.client.getTask({ taskId: parent });
    expect([...task!.subtaskIds].sort()).to.deep.equal([...subtasks].sort());
    const stored = await h.pg.query("select count(*)::int as n from tasks where task_id = any($1::uuid[])", [requests.map((r) => r.taskId)]);
    expect(stored.rows[0].n).to.equal(37); // 36 + the repeated id once
  });

  it("fails exactly the mismatched first_sequence among concurrent appends, keeping every task's sequences gapless", async () => {
    const tasks = await Promise.all(Array.from({ length: 16 }, async () => (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId));
    const unknown = randomUUID();
    // Four rounds of one append per task, all at once; in round 2 the append to task 3 names a wrong first_sequence.
    const results: Settled<{ sequences: bigint[] }>[][] = [];
    for (let round = 0; round < 4; round++) {
      const calls = tasks.map((taskId, t) => {
        // Even tasks name the expected first sequence, odd ones none.
        const firstSequence = round === 2 && t === 3 ? 99n : t % 2 === 0 ? BigInt(round * 2 + 1) : 0n;
        return on(t).appendResultMessages({ taskId, messages: [{ message: `r${round} a` }, { message: `r${round} b`, error: true }], firstSequence });
      });
      if (round === 1) calls.push(on(99).appendResultMessages({ taskId: unknown, messages: [{ message: "lost" }] }));
      results.push(await Promise.allSettled(calls));
    }
    const mismatch = results[2]![3]!;
    expect(codeOf(mismatch)).to.equal("ABORTED");
    const d = decodeError((mismatch as PromiseRejectedResult).reason);
    expect(d.errorInfo!.reason).to.equal("SEQUENCE_MISMATCH");
    expect(d.errorInfo!.metadata!.next_sequence).to.equal("5");
    expect(codeOf(results[1]![16]!)).to.equal("NOT_FOUND");
    const failures = results.flatMap((r, round) => r.map((o, t) => [round, t, codeOf(o)] as const)).filter(([, , c]) => c !== "OK");
    expect(failures).to.deep.equal([
      [1, 16, "NOT_FOUND"],
      [2, 3, "ABORTED"],
    ]);
    for (const [t, taskId] of tasks.entries()) {
      const { messages } = await h.client.listResultMessages({ taskId });
      const appended = t === 3 ? 6 : 8;
      expect(messages.map((m) => Number(m.sequence))).to.deep.equal(Array.from({ length: appended }, (_, i) => i + 1));
      expect((await h.client.getTask({ taskId })).task!.result!.errorCount).to.equal(appended / 2);
      // Each round's acknowledged sequences are what was stored.
      results.forEach((r) => {
        const o = r[t]!;
        if (o.status === "fulfilled") {
          const [a, b] = o.value.sequences;
          expect(messages[Number(a) - 1]!.message.endsWith(" a") && messages[Number(b) - 1]!.message.endsWith(" b")).to.equal(true);
        }
      });
    }
    // Appends of one statement share its now() as their ts: 63 acknowledged calls, fewer distinct times.
    const { rows } = await h.pg.query("select count(distinct ts)::int as n from result_messages where task_id = any($1::uuid[])", [tasks]);
    expect(rows[0].n).to.be.below(63);
  });

  it("withdraws a queued append whose deadline passes while the batches ahead of it wait: it is never written", async function () {
    this.timeout(20_000);
    const blocked = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    const holder = new pg.Client({ connectionString: h.dbUrl });
    await holder.connect();
    try {
      await holder.query("begin");
      await holder.query("select 1 from tasks where task_id = $1 for update", [blocked]);
      // Two appends to the locked task: one per batch, so both batches in flight wait on the lock.
      const waiting = [0, 1].map((i) => on(i).appendResultMessages({ taskId: blocked, messages: [{ message: `m${i}` }] }));
      const probe = async () => {
        for (let i = 0; i < 500; i++) {
          const { rows } = await h.pg.query("select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'");
          if (rows[0].n >= 2) return;
          await new Promise((r) => setTimeout(r, 20));
        }
        throw new Error("the two appends never waited for the lock");
      };
      await probe();
      // Appends are full (two in flight); a third append queues behind them and gives up.
      const late = await Promise.allSettled([on(2).appendResultMessages({ taskId: blocked, messages: [{ message: "late" }] }, { deadlineMs: 300 })]);
      expect(codeOf(late[0]!)).to.equal("DEADLINE_EXCEEDED");
      await holder.query("rollback");
      const ok = await Promise.all(waiting);
      expect(ok.map((r) => r.sequences.length)).to.deep.equal([1, 1]);
      const { messages } = await h.client.listResultMessages({ taskId: blocked });
      expect(messages.map((m) => m.message).sort()).to.deep.equal(["m0", "m1"]);
    } finally {
      await holder.end();
    }
  });
});
