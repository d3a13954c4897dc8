import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import pg from "pg";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { EventEmitter, once } from "node:events";
import { createClient } from "../src/client/client.js";
import { DeadlineExceededError, DeadlineReason } from "../src/core/errors.js";
import { Coalescer, type CoalescerOptions } from "../src/store/coalesce.js";
import { decodeError, eventually, lockWaiters, useServer, type StateClient } from "./kit/index.js";

type Settled<T> = PromiseSettledResult<T>;
const codeOf = (s: Settled<unknown>) => (s.status === "fulfilled" ? "OK" : grpc.status[decodeError(s.reason).code]!);

/** Distinct values of a column over the given rows' ids: fewer than the rows means some shared a statement. */
async function distinct(h: { pg: pg.Client }, query: string, ids: string[]): Promise<number> {
  const { rows } = await h.pg.query(query, [ids]);
  return rows[0].n as number;
}

describe("coalesced writes", () => {
  // Two batches in flight (the default is one), so that the withdrawal test can block both.
  const h = useServer({ dbPoolSize: 10, writeCoalescing: { maxBatch: 100, maxInFlight: 2 } });
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
      if (i !== 17)
        expect((o as PromiseFulfilledResult<{ task?: { taskId: string; requestContext?: unknown } }>).value.task!.requestContext).to.deep.equal({ i });
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

  it("answers 200 concurrent GetTasks, each with its own task or NOT_FOUND", async () => {
    const ids = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => (await h.client.createTask({ action: "deploy_nodes", requestContext: { i } })).task!.taskId),
    );
    const missing = randomUUID();
    const asked = Array.from({ length: 200 }, (_, i) => (i % 50 === 7 ? missing : ids[i % ids.length]!));
    const outcomes = await Promise.allSettled(asked.map((taskId, i) => on(i).getTask({ taskId })));
    expect(outcomes.map(codeOf)).to.deep.equal(asked.map((id) => (id === missing ? "NOT_FOUND" : "OK")));
    outcomes.forEach((o, i) => {
      if (o.status === "fulfilled") {
        const task = (o.value as { task?: { taskId: string; requestContext?: unknown } }).task!;
        expect([task.taskId, task.requestContext]).to.deep.equal([asked[i], { i: ids.indexOf(asked[i]!) }]);
      }
    });
    const d = decodeError((outcomes[7] as PromiseRejectedResult).reason);
    expect([d.errorInfo!.reason, d.errorInfo!.metadata!.task_id]).to.deep.equal(["TASK_NOT_FOUND", missing]);
  });

  it("withdraws a queued append whose deadline passes while the batches ahead of it wait: it is never written", async function () {
    this.timeout(20_000);
    const blocked = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    const holder = new pg.Client({ connectionString: h.dbUrl });
    await holder.connect();
    try {
      await holder.query("begin");
      // A table lock: batches skip locked rows, but no statement on tasks gets past this.
      await holder.query("lock table tasks in access exclusive mode");
      // Two appends to one task: one per batch, so both batches in flight wait on the lock.
      const waiting = [0, 1].map((i) => on(i).appendResultMessages({ taskId: blocked, messages: [{ message: `m${i}` }] }));
      await eventually(async () => (await lockWaiters(h.pg, "any")) >= 2, 10_000, "the two appends waiting for the lock");
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

describe("coalesced writes and row locks", () => {
  // The default: one batch of each kind in flight, so that a batch waiting for a lock would hold up everything.
  const h = useServer({ dbPoolSize: 10 });
  let clients: StateClient[];
  before(() => {
    clients = Array.from({ length: 8 }, () => createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }));
  });
  after(() => clients.forEach((c) => c.close()));
  const client = (i: number) => clients[i % clients.length]!;

  it("lets the other calls of a batch through while one call's row is locked by another transaction", async function () {
    this.timeout(20_000);
    const tasks = await Promise.all(Array.from({ length: 8 }, async () => (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId));
    const [locked, ...free] = tasks as [string, ...string[]];
    const holder = new pg.Client({ connectionString: h.dbUrl });
    await holder.connect();
    try {
      await holder.query("begin");
      await holder.query("select 1 from tasks where task_id = $1 for update", [locked]);
      let lockedDone = false;
      const lockedAppend = client(0)
        .appendResultMessages({ taskId: locked, messages: [{ message: "after the lock" }] })
        .finally(() => (lockedDone = true));
      const lockedSubtask = client(1)
        .createTask({ parentTaskId: locked, action: "deploy_nodes" })
        .finally(() => (lockedDone = true));
      // Everything else, before and after the locked ones in the queues, completes meanwhile
      // (one batch in flight: without skipping locked rows these would wait for the lock).
      const others = await Promise.all([
        ...free.map((taskId, i) => client(i + 2).appendResultMessages({ taskId, messages: [{ message: "free" }] })),
        ...free.map((taskId, i) => client(i + 3).createTask({ parentTaskId: taskId, action: "deploy_nodes" })),
      ]);
      expect(others).to.have.length(14);
      expect(lockedDone, "the calls on the locked task wait for its lock").to.equal(false);
      await holder.query("rollback");
      const [appended, subtask] = await Promise.all([lockedAppend, lockedSubtask]);
      expect(appended.sequences).to.deep.equal([1n]);
      expect(subtask.task!.parentTaskId).to.equal(locked);
      expect((await h.client.getTask({ taskId: locked })).task!.subtaskIds).to.deep.equal([subtask.task!.taskId]);
    } finally {
      await holder.end();
    }
  });
});

/** The batching itself, on connections the test hands out (no database): which calls share a statement. */
describe("Coalescer", () => {
  interface Harness {
    coalescer: Coalescer<string, string, number>;
    batches: string[][];
    /** Hands out the next connection, letting the batch waiting for it go. */
    grant(): void;
    /** Resolves when `n` batches have been written. */
    written(n: number): Promise<void>;
  }

  function harness(options: CoalescerOptions, fail?: (items: string[]) => Error | undefined, key?: (s: string) => string): Harness {
    const waiting: ((held: number) => void)[] = [];
    const batches: string[][] = [];
    const events = new EventEmitter();
    let next = 0;
    const record = (items: string[]) => {
      batches.push(items);
      events.emit("batch");
    };
    const coalescer = new Coalescer<string, string, number>(
      options,
      { acquire: () => new Promise<number>((resolve) => waiting.push(resolve)), release: () => {} },
      async (items) => {
        record(items);
        const err = fail?.(items);
        if (err) throw err;
        return items.map((i) => (i.startsWith("bad") ? new Error(`refused ${i}`) : `done ${i}`));
      },
      async (item) => {
        record([item]);
        if (item.startsWith("bad")) throw new Error(`refused ${item}`);
        return `done ${item}`;
      },
      key,
    );
    return {
      coalescer,
      batches,
      grant: () => waiting.shift()!(next++),
      written: async (n) => {
        while (batches.length < n) await once(events, "batch");
      },
    };
  }

  it("writes a lone call alone, and every call queued while connections are awaited in one batch, in arrival order", async () => {
    const t = harness({ maxBatch: 100, maxInFlight: 2 });
    const lone = t.coalescer.submit("a");
    t.grant();
    await t.written(1);
    expect(await lone).to.equal("done a");
    // Two slots start waiting for connections; every call queued by the time the first gets one shares its batch.
    const queued = ["b", "c", "d", "e", "f"].map((x) => t.coalescer.submit(x));
    t.grant();
    await t.written(2);
    t.grant(); // the second slot finds nothing left to write
    expect(t.batches).to.deep.equal([["a"], ["b", "c", "d", "e", "f"]]);
    expect(await Promise.all(queued)).to.deep.equal(["done b", "done c", "done d", "done e", "done f"]);
  });

  it("bounds a batch by maxBatch and keeps calls with one key apart", async () => {
    const t = harness({ maxBatch: 3, maxInFlight: 1 }, undefined, (s) => s[0]!);
    const all = ["x1", "y1", "x2", "z1", "w1", "x3"].map((x) => t.coalescer.submit(x));
    for (let i = 0; i < 3; i++) {
      t.grant();
      await t.written(i + 1);
    }
    // Oldest first, at most 3, one per first letter: x2 and x3 wait for later batches.
    expect(t.batches).to.deep.equal([["x1", "y1", "z1"], ["x2", "w1"], ["x3"]]);
    expect(await Promise.all(all)).to.deep.equal(["done x1", "done y1", "done x2", "done z1", "done w1", "done x3"]);
  });

  it("withdraws a queued call whose signal aborts: it is never written", async () => {
    const t = harness({ maxBatch: 100, maxInFlight: 1 });
    const first = t.coalescer.submit("a");
    const ac = new AbortController();
    const withdrawn = t.coalescer.submit("b", ac.signal);
    const kept = t.coalescer.submit("c");
    ac.abort(new DeadlineReason("deadline"));
    const err = await withdrawn.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(DeadlineExceededError);
    t.grant();
    await t.written(1);
    expect(t.batches).to.deep.equal([["a", "c"]]);
    expect([await first, await kept]).to.deep.equal(["done a", "done c"]);
  });

  it("gives each item its own outcome, retries items alone after a refusal for data, and fails a batch whose connection broke", async () => {
    const dataRefusal = Object.assign(new Error("check violation"), { code: "23514" });
    const connectionLost = Object.assign(new Error("connection closed"), { code: "CONNECTION_CLOSED" });
    let mode: "ok" | "data" | "lost" = "ok";
    const t = harness({ maxBatch: 100, maxInFlight: 1 }, () => (mode === "data" ? dataRefusal : mode === "lost" ? connectionLost : undefined));
    const run = async (items: string[]) => {
      const from = t.batches.length;
      const outcomes = items.map((x) =>
        t.coalescer.submit(x).then(
          (v) => v,
          (e: Error) => e.message,
        ),
      );
      t.grant();
      return { outcomes: await Promise.all(outcomes), batches: t.batches.slice(from) };
    };
    expect(await run(["a", "bad1", "b"])).to.deep.equal({ batches: [["a", "bad1", "b"]], outcomes: ["done a", "refused bad1", "done b"] });
    // The database refused the statement for its data: nothing was written, so each is written alone.
    mode = "data";
    expect(await run(["c", "d"])).to.deep.equal({ batches: [["c", "d"], ["c"], ["d"]], outcomes: ["done c", "done d"] });
    // The connection broke: the outcome is unknown, so nothing is written again.
    mode = "lost";
    expect(await run(["e", "f"])).to.deep.equal({ batches: [["e", "f"]], outcomes: ["connection closed", "connection closed"] });
  });
});
