// Benchmarks: starts the server as its own process (embedded PostgreSQL unless
// DATABASE_URL is set), drives it from separate client processes, prints a
// table and writes bench/results/<time>.json. See BENCHMARKS.md.
//   node dist/bench/run.js [--smoke] [--duration ms]
import { execFileSync, fork, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import postgres from "postgres";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client.js";
import type { Command } from "./worker.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { smoke: { type: "boolean" }, duration: { type: "string" } } });
const smoke = !!values.smoke;
const durationMs = Number(values.duration ?? (smoke ? 500 : 5000));
// /proc/<pid>/stat counts CPU time in clock ticks (USER_HZ, almost always 100).
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

interface Row {
  scenario: string;
  opsPerSec: number;
  p50: number;
  p99: number;
  max: number;
  serverCpuUsPerOp: number;
  serverRssMb: number;
  note?: string;
}
const rows: Row[] = [];

// ---- server process ----
const dataDir = process.env.DATABASE_URL ? undefined : await mkdtemp(path.join(tmpdir(), "statemgmt-bench-"));
const server = spawn(process.execPath, [path.resolve(here, "../src/main.js"), "--listen", "127.0.0.1:0", ...(dataDir ? ["--data-dir", dataDir] : [])], {
  env: { ...process.env, STATEMGMT_LOG_LEVEL: "info", STATEMGMT_DB_POOL_SIZE: "20" },
  stdio: ["ignore", "pipe", "inherit"],
});
let pgPort = 0;
const address = await new Promise<string>((resolve, reject) => {
  let buf = "";
  const onData = (d: Buffer) => {
    buf += d.toString();
    const port = /"port":(\d+),"ms"/.exec(buf);
    if (port) pgPort = Number(port[1]);
    const m = /"address":"([^"]+)","startupMs"/.exec(buf);
    if (m) {
      server.stdout!.off("data", onData);
      server.stdout!.resume(); // per-call log lines: drained, not kept
      resolve(m[1]!);
    }
  };
  server.stdout!.on("data", onData);
  server.on("exit", (code) => reject(new Error(`server exited ${code}`)));
});
const dbUrl = process.env.DATABASE_URL ?? `postgres://postgres:${encodeURIComponent((await readFile(path.join(dataDir!, "password"), "utf8")).trim())}@127.0.0.1:${pgPort}/postgres`;

async function serverStats(): Promise<{ cpuMs: number; rssMb: number }> {
  const stat = (await readFile(`/proc/${server.pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  const cpuMs = ((Number(stat[11]) + Number(stat[12])) * 1000) / CLK_TCK;
  const rss = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${server.pid}/status`, "utf8"));
  return { cpuMs, rssMb: Number(rss?.[1] ?? 0) / 1024 };
}

// ---- workers ----
function worker(): ChildProcess {
  return fork(path.resolve(here, "worker.js"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
}
function ask<T>(w: ChildProcess, cmd: Command): Promise<T> {
  return new Promise((resolve, reject) => {
    w.once("message", (m: T & { error?: string }) => (m.error ? reject(new Error(m.error)) : resolve(m)));
    w.send(cmd);
  });
}
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

const client = createClient(StateService, address);
async function makeTasks(n: number, action: string, queued = false): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 200) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(200, n - i) }, () => client.createTask({ action, initialStatus: queued ? TaskStatus.QUEUED : TaskStatus.REQUESTED })),
    );
    ids.push(...batch.map((r) => r.task!.taskId));
  }
  return ids;
}

/** Runs one load scenario over `procs` worker processes. */
async function load(scenario: string, op: Extract<Command, { cmd: "load" }>["op"], procs: number, concurrency: number, taskIds: string[], unit?: "msgs") {
  const ws = Array.from({ length: procs }, worker);
  const before = await serverStats();
  const t0 = performance.now();
  const results = await Promise.all(
    ws.map((w) => ask<{ ops: number; msgs: number; lat: number[]; claimed: string[] }>(w, { cmd: "load", address, op, concurrency: Math.ceil(concurrency / procs), durationMs: op === "claim" ? 600_000 : durationMs, taskIds })),
  );
  const secs = (performance.now() - t0) / 1000;
  const after = await serverStats();
  ws.forEach((w) => w.kill());
  const ops = results.reduce((a, r) => a + r.ops, 0);
  const msgs = results.reduce((a, r) => a + r.msgs, 0);
  const lat = results.flatMap((r) => r.lat);
  rows.push({
    scenario,
    opsPerSec: (unit === "msgs" ? msgs : ops) / secs,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    max: Math.max(...lat),
    serverCpuUsPerOp: ((after.cpuMs - before.cpuMs) * 1000) / Math.max(1, ops),
    serverRssMb: after.rssMb,
    note: unit === "msgs" ? `${(ops / secs).toFixed(0)} calls/s` : undefined,
  });
  return results;
}

/** Commit → watcher latency with `watchers` watchers on one task. */
async function watchLatency(watchers: number) {
  const [taskId] = await makeTasks(1, "bench_watch");
  const procs = watchers >= 100 ? 2 : 1;
  const ws = Array.from({ length: procs }, worker);
  const replies = ws.map(
    (w, i) =>
      new Promise<{ received: [string, number][] }>((resolve) => {
        const onMsg = (m: { ready?: boolean; received?: [string, number][] }) => {
          if (m.received) {
            w.off("message", onMsg);
            resolve(m as { received: [string, number][] });
          }
        };
        w.on("message", onMsg);
        w.send({ cmd: "watch", address, taskId: taskId!, watchers: Math.floor(watchers / procs) + (i < watchers % procs ? 1 : 0) } satisfies Command);
      }),
  );
  await Promise.all(ws.map((w) => new Promise<void>((r) => { const f = (m: { ready?: boolean }) => m.ready && (w.off("message", f), r()); w.on("message", f); })));
  const rss = (await serverStats()).rssMb;
  const writer = worker();
  const { writes } = await ask<{ writes: { seq: string; start: number; ack: number }[] }>(writer, { cmd: "write", address, taskId: taskId!, intervalMs: 20, durationMs });
  writer.kill();
  await new Promise((r) => setTimeout(r, 200));
  ws.forEach((w) => w.send({ cmd: "stop" } satisfies Command));
  const got = await Promise.all(replies);
  ws.forEach((w) => w.kill());
  const lastRecv = new Map<string, number>();
  for (const g of got) for (const [seq, t] of g.received) lastRecv.set(seq, Math.max(lastRecv.get(seq) ?? 0, t));
  const fromAck = writes.filter((w) => lastRecv.has(w.seq)).map((w) => lastRecv.get(w.seq)! - w.ack);
  const fromStart = writes.filter((w) => lastRecv.has(w.seq)).map((w) => lastRecv.get(w.seq)! - w.start);
  const missing = writes.length - fromAck.length;
  rows.push({
    scenario: `watch latency, ${watchers} watcher${watchers > 1 ? "s (last of them)" : ""}: ack→recv`,
    opsPerSec: writes.length / (durationMs / 1000),
    p50: pct(fromAck, 50),
    p99: pct(fromAck, 99),
    max: Math.max(...fromAck),
    serverCpuUsPerOp: NaN,
    serverRssMb: rss,
    note: `start→recv p50 ${pct(fromStart, 50).toFixed(2)} p99 ${pct(fromStart, 99).toFixed(2)} ms${missing ? `; ${missing} NOT RECEIVED` : ""}`,
  });
  if (missing) throw new Error(`${missing} messages never reached a watcher`);
}

/** Leader stops renewing at a random point; a standby retrying every ttl/3 takes over. */
async function failover(ttlMs: number, trials: number) {
  const ttl = { seconds: BigInt(Math.floor(ttlMs / 1000)), nanos: (ttlMs % 1000) * 1_000_000 };
  const every = ttlMs / 3;
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const times: number[] = [];
  for (let t = 0; t < trials; t++) {
    const election = `bench-failover-${t}`;
    const a = await client.claimLeadership({ election, instanceId: "A", ttl });
    let lastRenewal = performance.now();
    const standby = (async () => {
      await sleep(Math.random() * every); // a random phase
      for (;;) {
        if ((await client.claimLeadership({ election, instanceId: "B", ttl })).isLeader) return performance.now();
        await sleep(every);
      }
    })();
    for (let i = 0, n = 1 + Math.floor(Math.random() * 3); i < n; i++) {
      await sleep(every);
      await client.renewLeadership({ election, instanceId: "A", term: a.leader!.term });
      lastRenewal = performance.now();
    }
    times.push((await standby) - lastRenewal);
  }
  rows.push({
    scenario: `leader failover, ttl ${ttlMs} ms, standby every ttl/3`,
    opsPerSec: trials,
    p50: pct(times, 50),
    p99: pct(times, 99),
    max: Math.max(...times),
    serverCpuUsPerOp: NaN,
    serverRssMb: (await serverStats()).rssMb,
    note: `${trials} trials (ops/s column: trials); bound ttl + ttl/3 + 100 = ${(ttlMs + every + 100).toFixed(0)} ms`,
  });
}

let failed = false;
try {
  const readTasks = await makeTasks(smoke ? 50 : 1000, "bench_get");
  const appendTasks = await makeTasks(16, "bench_append");
  await load("CreateTask c=16", "createTask", 2, 16, []);
  await load("GetTask c=64", "getTask", 2, 64, readTasks);
  await load("AppendResultMessages 1/call c=16, 16 tasks", "append1", 2, 16, appendTasks, "msgs");
  await load("AppendResultMessages 100/call c=8, 8 tasks", "append100", 2, 8, appendTasks.slice(0, 8), "msgs");
  await load("AppendResultMessages 100/call c=8, 1 task", "append100", 2, 8, appendTasks.slice(0, 1), "msgs");
  await watchLatency(1);
  await watchLatency(smoke ? 50 : 1000);
  const queued = await makeTasks(smoke ? 500 : 20_000, "bench_claim", true);
  const claims = await load("ClaimNextTask c=16 draining the queue", "claim", 2, 16, []);
  const claimed = claims.flatMap((c) => c.claimed);
  const distinct = new Set(claimed).size;
  rows[rows.length - 1]!.note = `${queued.length} queued, ${claimed.length} claims, ${distinct} distinct${claimed.length === queued.length && distinct === queued.length ? ": each claimed once" : ": MISMATCH"}`;
  if (distinct !== queued.length || claimed.length !== queued.length) throw new Error("claims do not match the queue");
  await failover(smoke ? 1000 : 2000, smoke ? 1 : 5);
  if (rows.some((r) => !(r.opsPerSec > 0))) throw new Error("a scenario made no progress");
} catch (err) {
  failed = true;
  console.error(err);
}

// ---- report ----
const sql = postgres(dbUrl, { max: 1, onnotice: () => {} });
const [pg] = await sql`select version() as version, current_setting('fsync') as fsync, current_setting('synchronous_commit') as synchronous_commit`;
await sql.end();
const machine = { cores: cpus().length, cpu: cpus()[0]?.model, node: process.version, postgres: pg!.version, fsync: pg!.fsync, synchronousCommit: pg!.synchronous_commit };
const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "-");
console.log(`\n${machine.cores} cores, ${machine.cpu}, Node ${machine.node}, ${String(machine.postgres).split(" on ")[0]}, fsync=${machine.fsync}, synchronous_commit=${machine.synchronousCommit}; ${durationMs} ms per scenario\n`);
console.log("| scenario | ops/s | p50 ms | p99 ms | max ms | server CPU µs/op | server RSS MB | notes |");
console.log("|---|---:|---:|---:|---:|---:|---:|---|");
for (const r of rows) {
  console.log(`| ${r.scenario} | ${f(r.opsPerSec, 0)} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.max)} | ${f(r.serverCpuUsPerOp, 0)} | ${f(r.serverRssMb, 0)} | ${r.note ?? ""} |`);
}
if (!smoke) {
  const dir = path.resolve(here, "../../bench/results");
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  await writeFile(file, JSON.stringify({ machine, durationMs, rows }, null, 2));
  console.log(`\nwritten to ${path.relative(process.cwd(), file)}`);
}
client.close();
server.kill("SIGTERM");
await new Promise((r) => server.on("exit", r));
if (dataDir) await rm(dataDir, { recursive: true, force: true });
process.exit(failed ? 1 : 0);
