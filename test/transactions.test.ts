// Transactions never share a connection with another call: a stress mix of
// every transactional RPC and single-statement writes from many clients, then
// a check on an independent connection that every acknowledged write landed.
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { useServer, type StateClient } from "./harness.js";

/** How long the mix runs. Long enough for a few thousand calls on 2 cores. */
const STRESS_MS = 4000;
/** Successful calls the stress must see, however slow the machine (it runs on until then, within LONGEST_MS). */
const MIN_OK = 500;
const LONGEST_MS = 60_000;
const CALL = { deadlineMs: 10_000 };

describe("transactions under concurrent load", () => {
  // A small pool with pipelining makes the driver's shared-connection paths
  // (a BEGIN pipelined behind another call's query) as likely as they get.
  const h = useServer({ dbPoolSize: 4 });

  it("mixing every transactional RPC with single-statement writes: nothing INTERNAL, nothing left in a transaction, every acknowledged write stored", async function () {
    this.timeout(90_000);
    const clients: StateClient[] = Array.from({ length: 6 }, () =>
      createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }),
    );
    const pick = (i: number) => clients[i % clients.length]!;
    const codes = new Map<string, number>();
    const okBy = new Map<string, number>(); // OK answers by the call's name
    const unexpected: string[] = [];
    /** Runs a call; records its status; returns its result or undefined on an expected failure. */
    const call = async <T>(what: string, p: Promise<T>, allowed: grpc.status[] = []): Promise<T | undefined> => {
      try {
        const r = await p;
        codes.set("OK", (codes.get("OK") ?? 0) + 1);
        okBy.set(what, (okBy.get(what) ?? 0) + 1);
        return r;
      } catch (err) {
        const e = err as grpc.ServiceError;
        const name = grpc.status[e.code] ?? String(e.code);
        codes.set(name, (codes.get(name) ?? 0) + 1);
        if (!allowed.includes(e.code) && unexpected.length < 20) unexpected.push(`${what}: ${name} ${e.details}`);
        return undefined;
      }
    };

    const { task: parent } = await h.client.createTask({ action: "stress_parent" });
    const fenceElection = "stress-fence";
    const { leader: fenceLeader } = await h.client.claimLeadership({ election: fenceElection, instanceId: "fencer", ttl: { seconds: 3600n } });
    const fence = { election: fenceElection, term: fenceLeader!.term };

    // At least STRESS_MS, and on until MIN_OK calls succeeded (a slow or busy machine takes longer), within LONGEST_MS.
    const started = Date.now();
    const running = () => {
      const ran = Date.now() - started;
      return ran < STRESS_MS || ((codes.get("OK") ?? 0) < MIN_OK && ran < LONGEST_MS);
    };
    const acked = new Map<string, bigint[]>(); // task -> acknowledged sequences
    const createdTasks: string[] = [];
    const finished = new Set<string>(); // tasks that may be purged

    const workers: Promise<void>[] = [];
    // Elections: claim, renew, resign, on a few elections so claimers contend.
    for (let i = 0; i < 8; i++) {
      workers.push(
        (async () => {
          const c = pick(i);
          const election = `stress-${i % 3}`;
          const me = `inst-${i}`;
          while (running()) {
            const r = await call("ClaimLeadership", c.claimLeadership({ election, instanceId: me, ttl: { seconds: 1n } }, CALL));
            if (r?.isLeader) {
              const term = r.leader!.term;
              await call("RenewLeadership", c.renewLeadership({ election, instanceId: me, term }, CALL), [grpc.status.FAILED_PRECONDITION]);
              await call("ResignLeadership", c.resignLeadership({ election, instanceId: me, term }, CALL));
            }
          }
        })(),
      );
    }
    // Producers of queued work, and fenced claimers that complete it.
    for (let i = 0; i < 2; i++) {
      workers.push(
        (async () => {
          const c = pick(i + 1);
          while (running()) {
            const r = await call("CreateTask", c.createTask({ action: "stress_work", initialStatus: TaskStatus.QUEUED }, CALL));
            if (r) createdTasks.push(r.task!.taskId);
          }
        })(),
      );
    }
    for (let i = 0; i < 4; i++) {
      workers.push(
        (async () => {
          const c = pick(i + 2);
          while (running()) {
            const r = await call("ClaimNextTask", c.claimNextTask({ instanceId: `claimer-${i}`, actions: ["stress_work"], fence }, CALL));
            const t = r?.task;
            if (!t) continue;
            finished.add(t.taskId);
            await call(
              "UpdateTask",
              c.updateTask(
                { task: { taskId: t.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] }, fence, expectedVersion: t.version },
                CALL,
              ),
            );
          }
        })(),
      );
    }
    // Subtasks of one parent, terminated as they come; purges of what finished.
    workers.push(
      (async () => {
        const c = pick(3);
        while (running()) {
          const r = await call("CreateTask(parent)", c.createTask({ action: "stress_sub", parentTaskId: parent!.taskId }, CALL));
          if (!r) continue;
          createdTasks.push(r.task!.taskId);
          await call("TerminateTask", c.terminateTask({ taskId: r.task!.taskId, terminatedBy: "stress" }, CALL));
        }
      })(),
      (async () => {
        const c = pick(4);
        while (running()) await call("PurgeTasks", c.purgeTasks({ olderThanDays: 0 }, CALL));
      })(),
    );
    // Appenders, each on tasks of its own.
    for (let i = 0; i < 8; i++) {
      workers.push(
        (async () => {
          const c = pick(i + 5);
          const { task } = await c.createTask({ action: "stress_append" });
          const id = task!.taskId;
          createdTasks.push(id);
          acked.set(id, []);
          while (running()) {
            const r = await call(
              "AppendResultMessages",
              c.appendResultMessages({ taskId: id, messages: [{ message: `m ${i}` }, { message: `n ${i}`, error: i % 2 === 0 }] }, CALL),
            );
            if (r) acked.get(id)!.push(...r.sequences);
          }
        })(),
      );
    }
    await Promise.all(workers);
    clients.forEach((c) => c.close());

    const summary = [...codes].map(([k, n]) => `${k} ${n}`).join(", ");
    console.log(`      stress: ${summary}`);
    expect(codes.get("INTERNAL") ?? 0, `INTERNAL answers (${summary}); first unexpected: ${unexpected.join(" | ")}`).to.equal(0);
    expect(codes.get("UNKNOWN") ?? 0, summary).to.equal(0);
    expect(unexpected, summary).to.deep.equal([]);
    expect(codes.get("OK") ?? 0, summary).to.be.at.least(MIN_OK);
    const okSummary = [...okBy].map(([k, n]) => `${k} ${n}`).join(", ");
    for (const what of [
      "ClaimLeadership",
      "CreateTask",
      "ClaimNextTask",
      "UpdateTask",
      "CreateTask(parent)",
      "TerminateTask",
      "PurgeTasks",
      "AppendResultMessages",
    ]) {
      expect(okBy.get(what) ?? 0, `${what} never succeeded (${okSummary})`).to.be.greaterThan(0);
    }

    // No connection of the server's database is left inside a transaction.
    const { rows: idle } = await h.pg.query(
      `select count(*)::int n from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'`,
    );
    expect(idle[0].n, "connections idle in transaction").to.equal(0);

    // Every acknowledged append is stored, with gapless sequences per task.
    for (const [id, seqs] of acked) {
      const { rows } = await h.pg.query("select seq::text as s from result_messages where task_id = $1 order by seq", [id]);
      const stored = rows.map((r) => BigInt(r.s as string));
      expect(stored, `messages of ${id}`).to.deep.equal(stored.map((_, i) => BigInt(i + 1)));
      const missing = seqs.filter((s) => !stored.includes(s));
      expect(missing, `acknowledged but not stored on ${id}`).to.deep.equal([]);
    }
    // Every acknowledged task exists (unless it finished and a purge took it).
    const { rows: present } = await h.pg.query("select task_id::text from tasks where task_id = any($1::uuid[])", [createdTasks]);
    const stored = new Set(present.map((r) => r.task_id as string));
    const lost = createdTasks.filter((id) => !stored.has(id) && !finished.has(id));
    expect(lost, "acknowledged tasks not stored").to.deep.equal([]);
  });
});

describe("transaction discipline", () => {
  it("no server module opens a transaction or reserves a connection on the shared pool (sql.begin / sql.reserve)", async () => {
    // The stress test above catches a leaked transaction only when the race
    // happens; this catches the call that would make it possible.
    const { readdir, readFile } = await import("node:fs/promises");
    const path = await import("node:path");
    const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../src");
    const offenders: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        // The CLI is a process of its own that never holds the server's pool:
        // import-drydock reads Drydock's database in one read-only snapshot
        // transaction on a connection of its own (cli/drydock.ts).
        if (e.isDirectory()) {
          if (path.relative(root, p) !== "cli") await walk(p);
        } else if (e.name.endsWith(".ts")) {
          const lines = (await readFile(p, "utf8")).split("\n");
          lines.forEach((l, i) => {
            if (/\.(begin|reserve)\s*\(/.test(l) && !/^\s*(\/\/|\*)/.test(l)) offenders.push(`${path.relative(root, p)}:${i + 1}: ${l.trim()}`);
          });
        }
      }
    };
    await walk(root);
    expect(offenders).to.deep.equal([]);
  });
});
