// Benchmarks: starts the server as its own process (embedded PostgreSQL unless
// DATABASE_URL is set) and a bare grpc-js echo server, drives them from
// separate client processes, prints a table and the targets of issue 6, and
// writes bench/results/<time>.json. See BENCHMARKS.md.
//   node dist/bench/run.js [--smoke] [--duration ms] [--only create64,get64,...] [--site-nodes N]
//     [--server-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"] [--help]
// --only runs the named scenarios with the ceilings they are compared to
// (ids as in the table's JSON: create1, get1, appendOne1, create16, create64, create64solo, get64,
// get64auth, append1, append1solo, append100, watch, idle, claim, failover, site, list).
import { execFileSync, fork, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, mkdir, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import postgres from "postgres";
import { GetTaskResponseSchema, StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { MAX_PIPELINE } from "../src/db/connect.js";
import { filterFingerprint, PageTokens } from "../src/rpc/pagination.js";
import { finishedCountsQuery, scrapeQuery } from "../src/store/metrics.js";
import type { Sql } from "../src/db/connect.js";
import type { Command, LoadCommand, LoadResult } from "./worker.js";
import { siteCeiling, siteDeployment, type CeilingOutcome, type SiteHarness, type SiteRow } from "./site.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const USAGE = `usage: node dist/bench/run.js [--smoke] [--duration MS] [--only ID,...] [--site-nodes N] [--server-node-args=ARGS]

Starts the server as its own process (embedded PostgreSQL unless DATABASE_URL
is set) and a bare grpc-js echo server, drives them from separate client
processes, prints a table and the targets, and writes bench/results/<time>.json
(see BENCHMARKS.md).

  --smoke                  tiny sizes and durations (about 30 s; CI runs it)
  --duration MS            length of each scenario (default 5000; --smoke: 400)
  --only ID,...            only these scenarios, with the ceilings they are compared to
                           (create1, create16, create64, create64solo, get64, get64auth,
                           append1, append1solo, append100, watch, idle, claim, failover,
                           site, list, metrics)
  --site-nodes N           nodes of the site deployment scenario (default 2000; --smoke: 40)
  --server-node-args=ARGS  Node options of the served process and the echo server,
                           e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  -h, --help               this text
`;
/** The options, or usage and exit: 0 for --help (stdout), 2 for a command line it cannot run (stderr). */
function parseCommandLine() {
  try {
    const { values } = parseArgs({
      options: {
        smoke: { type: "boolean" },
        duration: { type: "string" },
        only: { type: "string" },
        "site-nodes": { type: "string" },
        "server-node-args": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    if (values.duration !== undefined && !(Number(values.duration) > 0))
      throw new Error(`--duration must be a positive number of milliseconds, not "${values.duration}"`);
    const nodes = values["site-nodes"];
    if (nodes !== undefined && !(/^\d+$/.test(nodes) && Number(nodes) >= 1 && Number(nodes) <= 1_000_000))
      throw new Error(`--site-nodes must be a whole number of nodes from 1 to 1000000, not "${nodes}"`);
    return values;
  } catch (err) {
    process.stderr.write(`error: ${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
}
const values = parseCommandLine();
/** Node options for the served process and the echo ceiling (e.g. a CPU profile, written when each exits; the pid tells them apart). */
const serverNodeArgs = values["server-node-args"]?.split(/\s+/).filter(Boolean) ?? [];
/** Ceilings each service scenario is measured against: --only runs them too. */
const CEILINGS: Record<string, string[]> = {
  create1: ["echo1", "pgInsert1"],
  get1: ["echo1", "pgSelect1"],
  appendOne1: ["echo1", "pgAppendOne1"],
  create16: ["pgInsert16"],
  create64: ["echo64", "pgInsert64"],
  create64solo: ["echo64", "pgInsert64"],
  get64: ["echo64", "pgSelect64"],
  get64auth: ["echo64", "get64fresh"],
  append1: ["pgAppend1"],
  append1solo: ["pgAppend1"],
  append100: ["pgAppend100"],
  // Issue 13's A/B: metrics on against off, fresh processes, interleaved pairs.
  metrics: ["get64metrics-on", "get64metrics-off"],
  // Issue 27: the site deployment against the same writes straight through postgres.js.
  site: ["siteRaw"],
};
const only =
  values.only === undefined
    ? null
    : new Set(
        values.only
          .split(",")
          .map((x) => x.trim())
          .filter(Boolean),
      );
if (only) for (const id of [...only]) for (const c of CEILINGS[id] ?? []) only.add(c);
/** Whether scenario `id` runs in this invocation. */
const wanted = (id: string) => only === null || only.has(id);
const smoke = !!values.smoke;
const durationMs = Number(values.duration ?? (smoke ? 400 : 5000));
// /proc/<pid>/stat counts CPU time in clock ticks (USER_HZ, almost always 100).
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
const POOL = 20; // the service's pool in this run, and the raw postgres.js ceilings' pools in total
/** The service's transaction connections (STATEMGMT_DB_TX_POOL_SIZE's default): the site ceiling gets POOL + these. */
const TX_POOL = 5;
const siteNodes = Number(values["site-nodes"] ?? (smoke ? 40 : 2000));
const sizes = smoke
  ? { readTasks: 50, watchers: 50, idle: 200, queue: 500, list: [1_000, 3_000], failoverTtlMs: 1000, failoverTrials: 1 }
  : { readTasks: 1000, watchers: 1000, idle: 10_000, queue: 20_000, list: [100_000, 1_000_000], failoverTtlMs: 2000, failoverTrials: 5 };

/** A row of the table (bench/site.ts's rows have the same shape). */
interface Row extends SiteRow {
  /** Set when the scenario threw: its error; the run went on with the next one. */
  failed?: string;
}
const rows: Row[] = [];
/** The row of a scenario that ran to its end (a failed one has no figures to compare). */
const row = (id: string) => rows.find((r) => r.id === id && r.failed === undefined);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- processes under test ----
const children: ChildProcess[] = [];
const dataDir = process.env.DATABASE_URL ? undefined : await mkdtemp(path.join(tmpdir(), "statemgmt-bench-"));

const logDir = await mkdtemp(path.join(tmpdir(), "statemgmt-bench-logs-"));

/**
 * Starts a node process with its stdout in a file (a pipe the runner had to
 * drain would compete for the CPU and, when full, block the server's
 * synchronous log writes) and resolves once the file matches `ready`.
 */
async function startProcess(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: RegExp,
  name = path.basename(script, ".js"),
  nodeArgs: string[] = [],
): Promise<{ proc: ChildProcess; match: RegExpExecArray; out: string }> {
  const logPath = path.join(logDir, `${name}.log`);
  const log = await open(logPath, "w");
  const proc = spawn(process.execPath, [...nodeArgs, path.resolve(here, script), ...args], { env, stdio: ["ignore", log.fd, "inherit"] });
  await log.close();
  children.push(proc);
  for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(50)) {
    const out = await readFile(logPath, "utf8");
    const m = ready.exec(out);
    if (m) return { proc, match: m, out };
    if (proc.exitCode !== null) throw new Error(`${script} exited with ${proc.exitCode} before it was ready:\n${out.slice(-2000)}`);
  }
  throw new Error(`${script} was not ready within 60 s; its output is in ${logPath}`);
}

async function procStat(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
}
async function cpuMs(pid: number | undefined): Promise<number> {
  if (!pid) return NaN;
  const st = await procStat(pid);
  return ((Number(st[11]) + Number(st[12])) * 1000) / CLK_TCK;
}
async function rssMb(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? NaN) / 1024;
}

let postmaster: number | undefined;
/** CPU of the embedded PostgreSQL: the postmaster, its live children and the children it reaped. */
async function pgCpuMs(): Promise<number> {
  if (!postmaster) return NaN;
  let ticks = 0;
  for (const d of await readdir("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = await procStat(Number(d));
      if (Number(d) === postmaster) ticks += Number(st[11]) + Number(st[12]) + Number(st[13]) + Number(st[14]);
      else if (Number(st[1]) === postmaster) ticks += Number(st[11]) + Number(st[12]);
    } catch {
      // the process ended while we looked
    }
  }
  return (ticks * 1000) / CLK_TCK;
}

// ---- workers ----
function worker(): ChildProcess {
  const w = fork(path.resolve(here, "worker.js"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  children.push(w);
  return w;
}
/** The next message from `w` that satisfies `pred` (an error message rejects). */
function next<T>(w: ChildProcess, pred: (m: T) => boolean = () => true): Promise<T> {
  return new Promise((resolve, reject) => {
    const on = (m: T & { error?: string }) => {
      if (m.error) {
        w.off("message", on);
        reject(new Error(m.error));
      } else if (pred(m)) {
        w.off("message", on);
        resolve(m);
      }
    };
    w.on("message", on);
  });
}
function ask<T>(w: ChildProcess, cmd: Command): Promise<T> {
  const reply = next<T>(w);
  w.send(cmd);
  return reply;
}
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const maxOf = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), -Infinity);

let server!: ChildProcess;
let echo!: ChildProcess;
let address = "";
let echoAddress = "";
let dbUrl = "";
let failed = false;
/** The runner's own connection (set-up, checkpoints, reports). */
let admin: postgres.Sql | undefined;

interface LoadSpec {
  id: string;
  scenario: string;
  op: LoadCommand["op"];
  procs: number;
  concurrency: number;
  taskIds?: string[];
  unit?: "msgs";
  pageToken?: string;
  echoBytes?: number;
  note?: string;
  /** Another service process to load instead of the main one. */
  target?: { proc: ChildProcess; address: string };
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** This scenario's length (default: --duration). */
  durationMs?: number;
}

/**
 * Runs one scenario. One that throws is recorded as failed, with its error,
 * in the table (once, whatever nests it), the processes it started are
 * stopped, the run's exit status becomes 1, and the run goes on with the
 * next scenario.
 */
async function scenario<T>(id: string, name: string, run: () => Promise<T>): Promise<T | undefined> {
  const spawned = children.length;
  try {
    return await run();
  } catch (err) {
    failed = true;
    const message = err instanceof Error ? err.message : String(err);
    console.error(`scenario ${id} (${name}) failed; going on with the next one:`, err);
    for (const p of children.slice(spawned)) if (p.exitCode === null) p.kill();
    if (!rows.some((r) => r.id === id && r.failed !== undefined)) {
      rows.push({
        id,
        scenario: name,
        opsPerSec: NaN,
        unit: "calls",
        p50: NaN,
        p99: NaN,
        max: NaN,
        serverCpuUsPerOp: NaN,
        pgCpuUsPerOp: NaN,
        clientCpuUsPerOp: NaN,
        serverRssMb: NaN,
        failed: message.split("\n")[0]!.slice(0, 300),
      });
    }
    return undefined;
  }
}

/** Runs one load scenario over `procs` worker processes; [] when it failed (scenario()). */
async function load(s: LoadSpec): Promise<LoadResult[]> {
  if (!wanted(s.id)) return [];
  return (await scenario(s.id, s.scenario, () => loadOnce(s))) ?? [];
}

async function loadOnce(s: LoadSpec): Promise<LoadResult[]> {
  const ws = Array.from({ length: s.procs }, worker);
  const served = s.target?.proc ?? (s.op === "echo" ? echo : s.op.startsWith("pg") ? undefined : server);
  const ready = ws.map((w) => next<{ ready?: boolean }>(w, (m) => !!m.ready));
  const results = ws.map((w, i) => {
    const result = next<LoadResult>(w, (m) => "ops" in m);
    w.send({
      cmd: "load",
      op: s.op,
      address: s.target?.address ?? (s.op === "echo" ? echoAddress : address),
      dbUrl,
      dbPool: POOL / s.procs,
      concurrency: Math.floor(s.concurrency / s.procs) + (i < s.concurrency % s.procs ? 1 : 0),
      durationMs: s.op === "claim" ? 600_000 : (s.durationMs ?? durationMs),
      taskIds: s.taskIds ?? [],
      echoBytes: s.echoBytes,
      pageToken: s.pageToken,
      token: s.token,
    } satisfies Command);
    return result;
  });
  await Promise.all(ready); // connected and waiting: the window below is the load only
  // Flush what earlier scenarios left dirty, so that PostgreSQL's CPU below is
  // mostly this scenario's (autovacuum may still run).
  if (admin) await admin`checkpoint`;
  const [cpu0, pg0] = [await cpuMs(served?.pid), await pgCpuMs()];
  const t0 = performance.now();
  ws.forEach((w) => w.send({ cmd: "go" } satisfies Command));
  const done = await Promise.all(results);
  const secs = (performance.now() - t0) / 1000;
  const [cpu1, pg1] = [await cpuMs(served?.pid), await pgCpuMs()];
  ws.forEach((w) => w.kill());
  const ops = done.reduce((a, r) => a + r.ops, 0);
  const msgs = done.reduce((a, r) => a + r.msgs, 0);
  const lat = done.flatMap((r) => r.lat);
  rows.push({
    id: s.id,
    scenario: s.scenario,
    opsPerSec: (s.unit === "msgs" ? msgs : ops) / secs,
    unit: s.unit ?? "calls",
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    max: maxOf(lat),
    serverCpuUsPerOp: ((cpu1 - cpu0) * 1000) / Math.max(1, ops),
    pgCpuUsPerOp: ((pg1 - pg0) * 1000) / Math.max(1, ops),
    clientCpuUsPerOp: done.reduce((a, r) => a + r.cpuUs, 0) / Math.max(1, ops),
    serverRssMb: served?.pid ? await rssMb(served.pid) : NaN,
    note: [s.unit === "msgs" ? `${(ops / secs).toFixed(0)} calls/s` : "", s.note ?? ""].filter(Boolean).join("; ") || undefined,
  });
  return done;
}

const client = () => createClient(StateService, address);
let c!: ReturnType<typeof client>;

async function makeTasks(n: number, action: string, queued = false): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 200) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(200, n - i) }, () => c.createTask({ action, initialStatus: queued ? TaskStatus.QUEUED : TaskStatus.REQUESTED })),
    );
    ids.push(...batch.map((r) => r.task!.taskId));
  }
  return ids;
}

/**
 * Commit → watcher latency with `watchers` watchers on one task, and the
 * serving process's CPU per event per stream. "broadcast" is the ceiling:
 * the bare grpc-js server of echo.ts sending the bytes of one WatchTask
 * message event to as many server streams, from the same client processes,
 * which decode them as WatchTaskResponse as the service's watchers do.
 */
async function watchLatency(watchers: number, kind: "service" | "broadcast" = "service") {
  const broadcast = kind === "broadcast";
  const [taskId] = broadcast ? [""] : await makeTasks(1, "bench_watch");
  const procs = watchers >= 100 ? 2 : 1;
  const ws = Array.from({ length: procs }, worker);
  const ready = ws.map((w) => next<{ ready?: boolean }>(w, (m) => !!m.ready));
  const replies = ws.map((w) => next<{ received?: [string, number][] }>(w, (m) => !!m.received));
  ws.forEach((w, i) => {
    const share = Math.floor(watchers / procs) + (i < watchers % procs ? 1 : 0);
    w.send(
      broadcast
        ? { cmd: "broadcastWatch", address: echoAddress, watchers: share }
        : ({ cmd: "watch", address, taskId: taskId!, watchers: share } satisfies Command),
    );
  });
  await Promise.all(ready);
  const served = broadcast ? echo : server;
  const rss = await rssMb(served.pid!);
  const writer = worker();
  const cpu0 = await cpuMs(served.pid);
  const { writes } = await ask<{ writes: { seq: string; start: number; ack: number }[] }>(
    writer,
    broadcast ? { cmd: "publish", address: echoAddress, intervalMs: 20, durationMs } : { cmd: "write", address, taskId: taskId!, intervalMs: 20, durationMs },
  );
  await sleep(200);
  const cpu1 = await cpuMs(served.pid);
  writer.kill();
  ws.forEach((w) => w.send({ cmd: "stop" } satisfies Command));
  const got = await Promise.all(replies);
  ws.forEach((w) => w.kill());
  const lastRecv = new Map<string, number>();
  for (const g of got) for (const [seq, t] of g.received!) lastRecv.set(seq, Math.max(lastRecv.get(seq) ?? 0, t));
  const fromAck = writes.filter((w) => lastRecv.has(w.seq)).map((w) => lastRecv.get(w.seq)! - w.ack);
  const fromStart = writes.filter((w) => lastRecv.has(w.seq)).map((w) => lastRecv.get(w.seq)! - w.start);
  const missing = writes.length - fromAck.length;
  rows.push({
    id: broadcast ? "broadcastN" : `watch${watchers === 1 ? 1 : "N"}`,
    scenario: broadcast
      ? `ceiling: bare grpc-js broadcast to ${watchers} streams (last of them): ack→recv`
      : `watch latency, ${watchers} watcher${watchers > 1 ? "s (last of them)" : ""}: ack→recv`,
    opsPerSec: writes.length / (durationMs / 1000),
    unit: "events",
    p50: pct(fromAck, 50),
    p99: pct(fromAck, 99),
    max: maxOf(fromAck),
    // Per event per stream (the writes' own cost included).
    serverCpuUsPerOp: ((cpu1 - cpu0) * 1000) / Math.max(1, writes.length * watchers),
    pgCpuUsPerOp: NaN,
    clientCpuUsPerOp: NaN,
    serverRssMb: rss,
    note: `start→recv p50 ${pct(fromStart, 50).toFixed(2)} p99 ${pct(fromStart, 99).toFixed(2)} ms; server CPU per event per stream${missing ? `; ${missing} NOT RECEIVED` : ""}`,
  });
  if (missing) throw new Error(`${missing} messages never reached a watcher`);
}

/** Tasks inserted straight into the table (faster than the API for bulk set-up). */
async function bulkTasks(sql: postgres.Sql, n: number, action: string, status: string): Promise<string[]> {
  const ids: string[] = [];
  for (let done = 0; done < n; done += 100_000) {
    const rs = await sql<{ task_id: string }[]>`
      insert into tasks (task_id, action, status, created, updated)
      select gen_random_uuid(), ${action}, ${status}, t, t
      from (select clock_timestamp() - (i * interval '1 ms') as t from generate_series(1, ${Math.min(100_000, n - done)}) i) s
      returning task_id`;
    ids.push(...rs.map((r) => r.task_id));
  }
  return ids;
}

/** N idle WatchTask streams, one per task: server RSS per stream, database connections. */
async function idleWatchers(sql: postgres.Sql, n: number) {
  const taskIds = await bulkTasks(sql, n, "bench_idle", "running");
  const procs = 2;
  const ws = Array.from({ length: procs }, worker);
  const rss0 = await rssMb(server.pid!);
  const t0 = performance.now();
  const ready = ws.map((w) => next<{ ready?: boolean }>(w, (m) => !!m.ready));
  ws.forEach((w, i) => w.send({ cmd: "idle", address, taskIds: taskIds.filter((_, k) => k % procs === i), perChannel: 1000 } satisfies Command));
  await Promise.all(ready);
  const openMs = performance.now() - t0;
  await sleep(1000);
  const rss1 = await rssMb(server.pid!);
  const conns = await sql<{ application_name: string; n: number }[]>`
    select application_name, count(*)::int as n from pg_stat_activity
    where backend_type = 'client backend' and application_name like 'drydock-statemgmt%' group by 1 order by 1`;
  const listen = conns.find((r) => r.application_name === "drydock-statemgmt-listen")?.n ?? 0;
  const pool = conns.find((r) => r.application_name === "drydock-statemgmt")?.n ?? 0;
  const txPool = conns.find((r) => r.application_name === "drydock-statemgmt-tx")?.n ?? 0;
  const stopped = ws.map((w) => next<{ stopped?: boolean }>(w, (m) => !!m.stopped));
  ws.forEach((w) => w.send({ cmd: "stop" } satisfies Command));
  await Promise.all(stopped);
  ws.forEach((w) => w.kill());
  rows.push({
    id: "idle",
    scenario: `${n} idle WatchTask streams (one per task)`,
    opsPerSec: n / (openMs / 1000),
    unit: "watchers",
    p50: NaN,
    p99: NaN,
    max: NaN,
    serverCpuUsPerOp: NaN,
    pgCpuUsPerOp: NaN,
    clientCpuUsPerOp: NaN,
    serverRssMb: rss1,
    note: `${(((rss1 - rss0) * 1024) / n).toFixed(1)} KB RSS per stream (${rss0.toFixed(0)} → ${rss1.toFixed(0)} MB); database connections: ${listen} LISTEN, ${pool} pool (of ${POOL}), ${txPool} transaction; ops/s column: streams opened per second`,
  });
  return { kbPerWatcher: ((rss1 - rss0) * 1024) / n, listen, pool };
}

/** ListTasks pages of 100 with `total` tasks in the table: the first page and one 90% deep (keyset token). */
async function listPages(sql: postgres.Sql, total: number) {
  const [{ n }] = await sql<{ n: number }[]>`select count(*)::int as n from tasks`;
  if (n < total) await bulkTasks(sql, total - n, "bench_list", "complete");
  await sql`vacuum analyze tasks`;
  // The token ListTasks itself would issue for a request without filters
  // (src/rpc/tasks.ts listTasks): a change there makes ListTasks reject it
  // with INVALID_ARGUMENT, which fails this scenario rather than skewing it.
  const filters = { claimedTerm: 0n, statuses: [], actions: [], parentTaskId: null, createdAfter: null, createdBefore: null };
  const [deep] = await sql<{ us: string; task_id: string }[]>`
    select (extract(epoch from created) * 1000000)::bigint::text as us, task_id
    from tasks order by created, task_id offset ${Math.floor(total * 0.9)} limit 1`;
  // A token as the server would issue it: signed with the database's secret.
  const [secret] = await sql<{ secret: Buffer }[]>`select secret from service_secrets where name = 'page_token'`;
  const token = new PageTokens(secret!.secret).encode(filterFingerprint(filters), [deep!.us, deep!.task_id]);
  const label = total >= 1_000_000 ? `${total / 1_000_000}M` : `${total / 1000}k`;
  await load({ id: `listFirst${total}`, scenario: `ListTasks first page of 100, ${label} tasks, c=1`, op: "listTasks", procs: 1, concurrency: 1 });
  await load({
    id: `listDeep${total}`,
    scenario: `ListTasks page of 100 at 90% depth, ${label} tasks, c=1`,
    op: "listTasks",
    procs: 1,
    concurrency: 1,
    pageToken: token,
  });
}

/** Leader stops renewing at a random point; a standby retrying every ttl/3 takes over. */
async function failover(ttlMs: number, trials: number) {
  const ttl = { seconds: BigInt(Math.floor(ttlMs / 1000)), nanos: (ttlMs % 1000) * 1_000_000 };
  const every = ttlMs / 3;
  const times: number[] = [];
  for (let t = 0; t < trials; t++) {
    const election = `bench-failover-${t}`;
    const a = await c.claimLeadership({ election, instanceId: "A", ttl });
    let lastRenewal = performance.now();
    const standby = (async () => {
      await sleep(Math.random() * every); // a random phase
      for (;;) {
        if ((await c.claimLeadership({ election, instanceId: "B", ttl })).isLeader) return performance.now();
        await sleep(every);
      }
    })();
    for (let i = 0, n = 1 + Math.floor(Math.random() * 3); i < n; i++) {
      await sleep(every);
      await c.renewLeadership({ election, instanceId: "A", term: a.leader!.term });
      lastRenewal = performance.now();
    }
    times.push((await standby) - lastRenewal);
  }
  rows.push({
    id: "failover",
    scenario: `leader failover, ttl ${ttlMs} ms, standby every ttl/3`,
    opsPerSec: trials,
    unit: "trials",
    p50: pct(times, 50),
    p99: pct(times, 99),
    max: maxOf(times),
    serverCpuUsPerOp: NaN,
    pgCpuUsPerOp: NaN,
    clientCpuUsPerOp: NaN,
    serverRssMb: await rssMb(server.pid!),
    note: `${trials} trials (ops/s column: trials)`,
  });
  return ttlMs + every + 100;
}

/** Starts a fresh service process on the benchmark's database; `metrics` serves /metrics on a free port. */
async function startService(name: string, extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const p = await startProcess(
    "../src/main.js",
    ["--listen", "127.0.0.1:0", "--database-url", dbUrl, ...extraArgs],
    { ...process.env, STATEMGMT_LOG_LEVEL: "info", STATEMGMT_DB_POOL_SIZE: String(POOL), ...env },
    /"address":"([^"]+)",(?:"metrics":"([^"]+)",)?"startupMs"/,
    name,
  );
  return { proc: p.proc, address: p.match[1]!, metrics: p.match[2] };
}
async function stopService(proc: ChildProcess) {
  proc.kill("SIGTERM");
  await new Promise((r) => proc.once("exit", r));
}

/** The value of the sample of `name` with (at least) these labels in a scrape, 0 when absent. */
async function scrapeSample(metricsAddress: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && pairs.every((p) => l.includes(p)));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

/**
 * GetTask's server CPU with metrics on against off (issue 13, target 5 %):
 * two fresh processes warmed up alike, then `pairs` pairs of short runs
 * alternating which goes first (off-on, on-off, ...). The figure is the
 * median of the pairs' ratios: a pair's two runs are seconds apart, so what
 * else the shared machine does mostly lands on both. Each run of the "on"
 * process must count exactly its calls in grpc_server_handled_total.
 */
async function metricsOverhead(readTasks: string[], pairs: number) {
  const off = await startService("main-metrics-off");
  const on = await startService("main-metrics-on", ["--metrics-listen", "127.0.0.1:0"]);
  try {
    for (const t of [off, on]) {
      const warm = createClient(StateService, t.address);
      for (let i = 0; i < 40; i++) await Promise.all(readTasks.slice(0, 64).map((taskId) => warm.getTask({ taskId })));
      warm.close();
    }
    const handled = async () =>
      scrapeSample(on.metrics!, "grpc_server_handled_total", { grpc_service: "drydock.statemgmt.v1.StateService", grpc_method: "GetTask", grpc_code: "OK" });
    const runMs = Math.max(200, Math.round(durationMs * 0.3));
    const cpu: Record<"on" | "off", number[]> = { on: [], off: [] };
    const rate: Record<"on" | "off", number[]> = { on: [], off: [] };
    for (let pair = 0; pair < pairs; pair++) {
      for (const which of pair % 2 === 0 ? (["off", "on"] as const) : (["on", "off"] as const)) {
        const t = which === "on" ? on : off;
        const before = which === "on" ? await handled() : 0;
        const n = rows.length;
        const done = await load({
          id: `get64metrics-${which}`,
          scenario: "",
          op: "getTask",
          procs: 2,
          concurrency: 64,
          taskIds: readTasks,
          target: t,
          durationMs: runMs,
        });
        const [r] = rows.splice(n, 1);
        cpu[which].push(r!.serverCpuUsPerOp);
        rate[which].push(r!.opsPerSec);
        if (which === "on") {
          const calls = done.reduce((a, x) => a + x.ops, 0);
          const counted = (await handled()) - before;
          if (counted !== calls) throw new Error(`metrics counted ${counted} GetTask calls of ${calls}`);
        }
      }
    }
    const med = (xs: number[]) => pct(xs, 50);
    const ratios = cpu.on.map((x, i) => x / cpu.off[i]!);
    const list = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(", ");
    for (const which of ["off", "on"] as const) {
      rows.push({
        id: `get64metrics${which === "on" ? "On" : "Off"}`,
        scenario: `GetTask c=64, metrics ${which} (fresh process, median of ${pairs} interleaved runs)`,
        opsPerSec: med(rate[which]),
        unit: "calls",
        p50: NaN,
        p99: NaN,
        max: NaN,
        serverCpuUsPerOp: med(cpu[which]),
        pgCpuUsPerOp: NaN,
        clientCpuUsPerOp: NaN,
        serverRssMb: await rssMb((which === "on" ? on : off).proc.pid!),
        note: `${runMs} ms runs; server CPU µs/call: ${list(cpu[which])}; calls/s: ${list(rate[which])}${which === "on" ? `; on/off by pair: ${ratios.map((x) => x.toFixed(2)).join(", ")}` : ""}`,
      });
    }
    return { ratio: med(ratios), quartiles: [pct(ratios, 25), pct(ratios, 75)] as const, range: [Math.min(...ratios), Math.max(...ratios)] as const };
  } finally {
    await stopService(off.proc);
    await stopService(on.proc);
  }
}

/** What one /metrics scrape costs with the table as it is: wall time, server and PostgreSQL CPU, and the statements' EXPLAIN ANALYZE. */
async function scrapeCost(sql: postgres.Sql, tasks: number, scrapes: number) {
  const s = await startService("main-scrape", ["--metrics-listen", "127.0.0.1:0"]);
  try {
    const scrape = async () => {
      const t0 = performance.now();
      const res = await fetch(`http://${s.metrics}/metrics`);
      if (res.status !== 200 || !(await res.text()).includes("statemgmt_database_up 1")) throw new Error("a scrape failed");
      return performance.now() - t0;
    };
    const first = await scrape(); // counts COMPLETE and TERMINATED too; later ones reuse them (src/metrics)
    const [cpu0, pg0] = [await cpuMs(s.proc.pid), await pgCpuMs()];
    const t0 = performance.now();
    const lat: number[] = [];
    for (let i = 0; i < scrapes; i++) lat.push(await scrape());
    const secs = (performance.now() - t0) / 1000;
    const [cpu1, pg1] = [await cpuMs(s.proc.pid), await pgCpuMs()];
    const explain = async (q: (x: Sql) => postgres.Fragment) => {
      const [row] = await sql<{ "QUERY PLAN": [{ "Execution Time": number; Plan: { "Shared Hit Blocks": number; "Shared Read Blocks": number } }] }[]>`
        explain (analyze, buffers, format json) ${q(sql as unknown as Sql)}`;
      const plan = row!["QUERY PLAN"][0];
      return { ms: plan["Execution Time"], blocks: plan.Plan["Shared Hit Blocks"] + plan.Plan["Shared Read Blocks"] };
    };
    const perScrape = await explain(scrapeQuery);
    const [{ unfinished }] = await sql<{ unfinished: number }[]>`select count(*)::int as unfinished from tasks where status not in ('complete', 'terminated')`;
    const finished = await explain(finishedCountsQuery);
    const label = tasks >= 1_000_000 ? `${tasks / 1_000_000}M` : `${tasks / 1000}k`;
    rows.push({
      id: `scrape${tasks}`,
      scenario: `GET /metrics, ${label} tasks, one at a time`,
      opsPerSec: scrapes / secs,
      unit: "calls",
      p50: pct(lat, 50),
      p99: pct(lat, 99),
      max: maxOf(lat),
      serverCpuUsPerOp: ((cpu1 - cpu0) * 1000) / scrapes,
      pgCpuUsPerOp: ((pg1 - pg0) * 1000) / scrapes,
      clientCpuUsPerOp: NaN,
      serverRssMb: await rssMb(s.proc.pid!),
      note:
        `${unfinished} unfinished; EXPLAIN ANALYZE: per-scrape statement ${perScrape.ms.toFixed(2)} ms, ${perScrape.blocks} buffers; ` +
        `COMPLETE/TERMINATED counts (at most every 5 min) ${finished.ms.toFixed(finished.ms < 10 ? 2 : 0)} ms, ${finished.blocks} buffers; first scrape ${first.toFixed(0)} ms`,
    });
    return { perScrapeMs: perScrape.ms, finishedMs: finished.ms, unfinished };
  } finally {
    await stopService(s.proc);
  }
}

/**
 * The site deployment (bench/site.ts) on a fresh service process, after its
 * ceiling. The process's node call limit is lifted: a site's nodes report
 * from an address each, the benchmark's all from 127.0.0.1.
 */
async function siteScenario() {
  const harness: SiteHarness = {
    dbUrl,
    cpuMs,
    pgCpuMs,
    rssMb,
    checkpoint: async () => void (admin && (await admin`checkpoint`)),
    fork: () => {
      const w = fork(path.resolve(here, "siteWorker.js"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      children.push(w);
      return w;
    },
    cores: cpus().length,
    admin,
  };
  const ceiling: CeilingOutcome | undefined = await scenario("siteRaw", `ceiling: raw postgres.js site deployment writes, ${siteNodes} nodes`, async () => {
    const c = await siteCeiling(harness, siteNodes, POOL + TX_POOL);
    rows.push(...c.rows);
    return c;
  });
  const deployment = await scenario("site", `site deployment, ${siteNodes} nodes`, async () => {
    const s = await startService("main-site", [], { STATEMGMT_NODE_CALL_RATE: "1000000", STATEMGMT_NODE_CALL_BURST: "1000000" });
    try {
      const d = await siteDeployment(harness, { address: s.address, pid: s.proc.pid! }, siteNodes, ceiling);
      rows.push(...d.rows);
      return d;
    } finally {
      await stopService(s.proc);
    }
  });
  return { ceiling, deployment };
}

interface Target {
  target: string;
  measured: string;
  bound: string;
  met: boolean;
}
const targets: Target[] = [];
function target(name: string, measured: number, op: "<=" | ">=", bound: number, unit: string, detail = "") {
  const met = op === "<=" ? measured <= bound : measured >= bound;
  const f = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(2));
  targets.push({ target: name, measured: `${f(measured)} ${unit}${detail ? ` (${detail})` : ""}`, bound: `${op} ${f(bound)} ${unit}`, met });
}

let machine: Record<string, unknown> = {};
const sql = () => postgres(dbUrl, { max: 2, onnotice: () => {}, connection: { application_name: "statemgmt-bench" } });
try {
  const started = await startProcess(
    "../src/main.js",
    ["--listen", "127.0.0.1:0", ...(dataDir ? ["--data-dir", dataDir] : [])],
    { ...process.env, STATEMGMT_LOG_LEVEL: "info", STATEMGMT_DB_POOL_SIZE: String(POOL) },
    /"address":"([^"]+)","startupMs"/,
    "main",
    serverNodeArgs,
  );
  server = started.proc;
  address = started.match[1]!;
  if (dataDir) {
    const port = /"port":(\d+),"ms"/.exec(started.out)![1];
    const password = (await readFile(path.join(dataDir, "password"), "utf8")).trim();
    dbUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
    postmaster = Number((await readFile(path.join(dataDir, "pg", "postmaster.pid"), "utf8")).split("\n")[0]);
  } else dbUrl = process.env.DATABASE_URL!;
  const e = await startProcess("echo.js", [], process.env, /"address":"([^"]+)"/, "echo", serverNodeArgs);
  echo = e.proc;
  echoAddress = e.match[1]!;
  c = client();
  admin = sql();
  const [pg] = await admin`select version() as version, current_setting('fsync') as fsync, current_setting('synchronous_commit') as synchronous_commit`;
  machine = {
    cores: cpus().length,
    cpu: cpus()[0]?.model,
    node: process.version,
    postgres: pg!.version,
    fsync: pg!.fsync,
    synchronousCommit: pg!.synchronous_commit,
    maxPipeline: MAX_PIPELINE,
    pool: POOL,
  };

  const readTasks = await makeTasks(sizes.readTasks, "bench_get");
  const appendTasks = await makeTasks(16, "bench_append");
  const echoBytes = toBinary(GetTaskResponseSchema, await c.getTask({ taskId: readTasks[0]! })).length;

  // 1. Ceilings of this machine, in this run.
  await load({
    id: "echo64",
    scenario: "ceiling: bare grpc-js echo c=64",
    op: "echo",
    procs: 2,
    concurrency: 64,
    echoBytes,
    note: `${echoBytes}-byte messages (a GetTask response's size)`,
  });
  await load({ id: "echo1", scenario: "ceiling: bare grpc-js echo c=1", op: "echo", procs: 1, concurrency: 1, echoBytes });
  await load({ id: "pgInsert1", scenario: "ceiling: raw postgres.js task INSERT c=1", op: "pgInsert", procs: 1, concurrency: 1 });
  await load({ id: "pgInsert16", scenario: "ceiling: raw postgres.js task INSERT c=16", op: "pgInsert", procs: 2, concurrency: 16 });
  await load({ id: "pgInsert64", scenario: "ceiling: raw postgres.js task INSERT c=64", op: "pgInsert", procs: 2, concurrency: 64 });
  await load({ id: "pgSelect1", scenario: "ceiling: raw postgres.js select by primary key c=1", op: "pgSelect", procs: 1, concurrency: 1, taskIds: readTasks });
  await load({
    id: "pgAppendOne1",
    scenario: "ceiling: raw postgres.js append 1/call c=1",
    op: "pgAppend1",
    procs: 1,
    concurrency: 1,
    taskIds: appendTasks.slice(0, 1),
    unit: "msgs",
  });
  await load({
    id: "pgSelect64",
    scenario: "ceiling: raw postgres.js select by primary key c=64",
    op: "pgSelect",
    procs: 2,
    concurrency: 64,
    taskIds: readTasks,
  });
  await load({
    id: "pgAppend1",
    scenario: "ceiling: raw postgres.js append 1/call c=16, 16 tasks",
    op: "pgAppend1",
    procs: 2,
    concurrency: 16,
    taskIds: appendTasks,
    unit: "msgs",
  });
  await load({
    id: "pgAppend100",
    scenario: "ceiling: raw postgres.js append 100/call c=8, 8 tasks",
    op: "pgAppend100",
    procs: 2,
    concurrency: 8,
    taskIds: appendTasks.slice(0, 8),
    unit: "msgs",
  });

  // 2–3. The service.
  await load({ id: "create1", scenario: "CreateTask c=1", op: "createTask", procs: 1, concurrency: 1 });
  await load({ id: "get1", scenario: "GetTask c=1", op: "getTask", procs: 1, concurrency: 1, taskIds: readTasks });
  await load({
    id: "appendOne1",
    scenario: "AppendResultMessages 1/call c=1",
    op: "append1",
    procs: 1,
    concurrency: 1,
    taskIds: appendTasks.slice(0, 1),
    unit: "msgs",
  });
  await load({ id: "create16", scenario: "CreateTask c=16", op: "createTask", procs: 2, concurrency: 16 });
  await load({ id: "create64", scenario: "CreateTask c=64", op: "createTask", procs: 2, concurrency: 64 });
  await load({ id: "get64", scenario: "GetTask c=64", op: "getTask", procs: 2, concurrency: 64, taskIds: readTasks });
  if (wanted("create64solo") || wanted("append1solo"))
    await scenario("solo", "a second server, coalescing off", async () => {
      // Coalescing against none: a second server process on the same database
      // with STATEMGMT_WRITE_BATCH_MAX=1 (every call its own statement, as before).
      const p = await startProcess(
        "../src/main.js",
        ["--listen", "127.0.0.1:0", "--database-url", dbUrl],
        { ...process.env, STATEMGMT_LOG_LEVEL: "info", STATEMGMT_DB_POOL_SIZE: String(POOL), STATEMGMT_WRITE_BATCH_MAX: "1" },
        /"address":"([^"]+)","startupMs"/,
        "main-solo",
      );
      const target = { proc: p.proc, address: p.match[1]! };
      await load({
        id: "create64solo",
        scenario: "CreateTask c=64, coalescing off",
        op: "createTask",
        procs: 2,
        concurrency: 64,
        target,
        note: "STATEMGMT_WRITE_BATCH_MAX=1",
      });
      await load({
        id: "append1solo",
        scenario: "AppendResultMessages 1/call c=16, 16 tasks, coalescing off",
        op: "append1",
        procs: 2,
        concurrency: 16,
        taskIds: appendTasks,
        unit: "msgs",
        target,
        note: "STATEMGMT_WRITE_BATCH_MAX=1",
      });
      p.proc.kill("SIGTERM");
      await new Promise((r) => p.proc.once("exit", r));
    });
  if (wanted("get64auth"))
    await scenario("get64auth", "GetTask c=64 with a bearer token", async () => {
      // What authentication costs per call: two fresh server processes, warmed
      // up alike, one without authentication (the control) and one with a
      // token file; the guard itself measures about 1 µs per call in-process.
      const dir = await mkdtemp(path.join(tmpdir(), "statemgmt-bench-auth-"));
      const token = randomBytes(32).toString("hex");
      const identities = [{ subject: "bench", roles: ["reader"], sha256: createHash("sha256").update(token).digest("hex") }];
      await writeFile(path.join(dir, "tokens.json"), JSON.stringify({ identities }));
      for (const authed of [false, true]) {
        const p = await startService(authed ? "main-auth" : "main-control", authed ? ["--auth-tokens", path.join(dir, "tokens.json")] : []);
        const target = { proc: p.proc, address: p.address };
        const warm = createClient(StateService, target.address);
        const metadata = new grpc.Metadata();
        if (authed) metadata.set("authorization", `Bearer ${token}`);
        for (let i = 0; i < 40; i++) await Promise.all(readTasks.slice(0, 64).map((taskId) => warm.getTask({ taskId }, { metadata })));
        warm.close();
        await load(
          authed
            ? {
                id: "get64auth",
                scenario: "GetTask c=64 with a bearer token",
                op: "getTask",
                procs: 2,
                concurrency: 64,
                taskIds: readTasks,
                target,
                token,
                note: "fresh process, token file",
              }
            : {
                id: "get64fresh",
                scenario: "GetTask c=64, fresh process",
                op: "getTask",
                procs: 2,
                concurrency: 64,
                taskIds: readTasks,
                target,
                note: "control for get64auth",
              },
        );
        await stopService(p.proc);
      }
      await rm(dir, { recursive: true, force: true });
    });
  const overhead = wanted("metrics")
    ? ((await scenario("metrics", "GetTask c=64, metrics on against off", () => metricsOverhead(readTasks, smoke ? 1 : 10))) ?? null)
    : null;
  await load({
    id: "append1",
    scenario: "AppendResultMessages 1/call c=16, 16 tasks",
    op: "append1",
    procs: 2,
    concurrency: 16,
    taskIds: appendTasks,
    unit: "msgs",
  });
  await load({
    id: "append1one",
    scenario: "AppendResultMessages 1/call c=16, 1 task",
    op: "append1",
    procs: 2,
    concurrency: 16,
    taskIds: appendTasks.slice(0, 1),
    unit: "msgs",
  });
  await load({
    id: "append100",
    scenario: "AppendResultMessages 100/call c=8, 8 tasks",
    op: "append100",
    procs: 2,
    concurrency: 8,
    taskIds: appendTasks.slice(0, 8),
    unit: "msgs",
  });
  await load({
    id: "append100one",
    scenario: "AppendResultMessages 100/call c=8, 1 task",
    op: "append100",
    procs: 2,
    concurrency: 8,
    taskIds: appendTasks.slice(0, 1),
    unit: "msgs",
  });

  // 4. Watches.
  if (wanted("watch")) {
    await scenario("watch1", "watch latency, 1 watcher", () => watchLatency(1));
    await scenario("broadcastN", `ceiling: bare grpc-js broadcast to ${sizes.watchers} streams`, () => watchLatency(sizes.watchers, "broadcast"));
    await scenario("watchN", `watch latency, ${sizes.watchers} watchers`, () => watchLatency(sizes.watchers));
  }
  const idle = wanted("idle")
    ? ((await scenario("idle", `${sizes.idle} idle WatchTask streams (one per task)`, () => idleWatchers(admin!, sizes.idle))) ?? null)
    : null;

  // 5. Claims.
  if (wanted("claim"))
    await scenario("claim", "ClaimNextTask c=16 draining the queue", async () => {
      const queued = await bulkTasks(admin!, sizes.queue, "bench_claim", "queued");
      const queuedSet = new Set(queued);
      const claims = await load({ id: "claim", scenario: "ClaimNextTask c=16 draining the queue", op: "claim", procs: 2, concurrency: 16 });
      if (!claims.length) return; // failed, and recorded so
      const claimed = claims.flatMap((r) => r.claimed);
      const distinct = new Set(claimed).size;
      const once = claimed.length === queued.length && distinct === queued.length && claimed.every((id) => queuedSet.has(id));
      row("claim")!.note = `${queued.length} queued, ${claimed.length} claims, ${distinct} distinct: ${once ? "each claimed once" : "MISMATCH"}`;
      if (!once) throw new Error("claims do not match the queue");
    });

  // 6. Failover.
  const failoverBound = wanted("failover")
    ? ((await scenario("failover", "leader failover", () => failover(sizes.failoverTtlMs, sizes.failoverTrials))) ?? 0)
    : 0;

  // 7. The site deployment (issue 27): its raw-SQL ceiling, then the service.
  const site = wanted("site") ? await siteScenario() : null;

  // 2. (last: it fills the table) ListTasks with 100k and 1M tasks.
  let scrapeAtMax: Awaited<ReturnType<typeof scrapeCost>> | null = null;
  if (wanted("list")) {
    for (const total of sizes.list) {
      only?.add(`listFirst${total}`).add(`listDeep${total}`);
      await scenario(`list${total}`, `ListTasks, ${total} tasks`, () => listPages(admin!, total));
    }
    only?.add("scrape");
    scrapeAtMax = (await scenario("scrape", "GET /metrics", () => scrapeCost(admin!, sizes.list[sizes.list.length - 1]!, smoke ? 3 : 20))) ?? null;
  }

  for (const r of rows) {
    if (r.failed === undefined && !(r.opsPerSec > 0)) {
      r.failed = "made no progress";
      failed = true;
    }
  }

  // Targets (issues 6 and 18), for the scenarios that ran.
  const r = (id: string) => row(id)!;
  const has = (...ids: string[]) => ids.every((id) => row(id) !== undefined);
  const combined = (a: number, b: number) => 1 / (1 / a + 1 / b);
  if (has("create64", "echo64", "pgInsert64")) {
    const echoCpu = r("echo64").serverCpuUsPerOp;
    const create = r("create64");
    target("CreateTask c=64 ≥ 1.0 × raw single-row INSERT c=64", create.opsPerSec, ">=", r("pgInsert64").opsPerSec, "calls/s");
    target(
      "server + PostgreSQL CPU per CreateTask ≤ echo CPU + raw insert's PostgreSQL CPU (c=64)",
      create.serverCpuUsPerOp + create.pgCpuUsPerOp,
      "<=",
      echoCpu + r("pgInsert64").pgCpuUsPerOp,
      "µs",
      `server ${create.serverCpuUsPerOp.toFixed(0)} + PostgreSQL ${create.pgCpuUsPerOp.toFixed(0)}; echo ${echoCpu.toFixed(0)}, raw insert's PostgreSQL ${r("pgInsert64").pgCpuUsPerOp.toFixed(0)}`,
    );
  }
  if (has("create1")) target("CreateTask c=1 p50 ≤ 1.1 ms (issue 18's baseline)", r("create1").p50, "<=", 1.1, "ms");
  // One call at a time (issue 27): a lone call pays the wire and the statement, and little more.
  for (const [id, ceiling, call, raw, slackMs] of [
    ["create1", "pgInsert1", "CreateTask", "raw insert", 0.3],
    ["get1", "pgSelect1", "GetTask", "raw select", 0.2],
    ["appendOne1", "pgAppendOne1", "AppendResultMessages 1/call", "raw append", 0.3],
  ] as const) {
    if (!has(id, "echo1", ceiling)) continue;
    target(
      `${call} c=1 p50 ≤ echo c=1 p50 + ${raw} c=1 p50 + ${slackMs} ms`,
      r(id).p50,
      "<=",
      r("echo1").p50 + r(ceiling).p50 + slackMs,
      "ms",
      `echo ${r("echo1").p50.toFixed(2)} ms, ${raw} ${r(ceiling).p50.toFixed(2)} ms`,
    );
    target(`server CPU per ${call} c=1 ≤ 2 × echo c=1's`, r(id).serverCpuUsPerOp, "<=", 2 * r("echo1").serverCpuUsPerOp, "µs");
  }
  if (has("get64", "echo64", "pgSelect64")) {
    target(
      "GetTask c=64 ≥ 0.8 × 1/(1/echo + 1/select)",
      r("get64").opsPerSec,
      ">=",
      0.8 * combined(r("echo64").opsPerSec, r("pgSelect64").opsPerSec),
      "calls/s",
    );
    target("server CPU per GetTask ≤ 2 × echo CPU (c=64)", r("get64").serverCpuUsPerOp, "<=", 2 * r("echo64").serverCpuUsPerOp, "µs");
  }
  if (has("append1", "pgAppend1"))
    target("AppendResultMessages 1/call c=16 ≥ 1.0 × raw one-statement append", r("append1").opsPerSec, ">=", r("pgAppend1").opsPerSec, "msgs/s");
  if (has("append100", "pgAppend100"))
    target("AppendResultMessages 100/call ≥ 0.8 × raw append", r("append100").opsPerSec, ">=", 0.8 * r("pgAppend100").opsPerSec, "msgs/s");
  for (const total of sizes.list) {
    if (!has(`listFirst${total}`, `listDeep${total}`)) continue;
    target(`ListTasks first page p99 ≤ 10 ms (${total} tasks)`, r(`listFirst${total}`).p99, "<=", 10, "ms");
    target(`ListTasks deep page p99 ≤ 10 ms (${total} tasks)`, r(`listDeep${total}`).p99, "<=", 10, "ms");
    target(`ListTasks deep page server CPU ≤ 700 µs (${total} tasks)`, r(`listDeep${total}`).serverCpuUsPerOp, "<=", 700, "µs");
  }
  if (has("watch1", "watchN", "broadcastN")) {
    target("watch, 1 watcher: p50 ≤ 2 ms", r("watch1").p50, "<=", 2, "ms");
    target("watch, 1 watcher: p99 ≤ 10 ms", r("watch1").p99, "<=", 10, "ms");
    target(`watch, last of ${sizes.watchers} watchers: p99 ≤ 30 ms`, r("watchN").p99, "<=", 30, "ms");
    target(
      `watch, last of ${sizes.watchers} watchers: p99 ≤ 2 × the bare broadcast's p99`,
      r("watchN").p99,
      "<=",
      2 * r("broadcastN").p99,
      "ms",
      `broadcast p99 ${r("broadcastN").p99.toFixed(2)} ms`,
    );
    target(
      `watch, ${sizes.watchers} watchers: server CPU per event per stream ≤ 8 µs`,
      r("watchN").serverCpuUsPerOp,
      "<=",
      8,
      "µs",
      `bare broadcast ${r("broadcastN").serverCpuUsPerOp.toFixed(2)} µs`,
    );
  }
  if (idle) {
    target(`${sizes.idle} idle watchers: RSS per stream ≤ 30 KB`, idle.kbPerWatcher, "<=", 30, "KB");
    target(`${sizes.idle} idle watchers: LISTEN connections = 1`, idle.listen, "<=", 1, "", idle.listen === 1 ? "" : "MISMATCH");
  }
  if (has("failover")) target(`failover ≤ ttl + ttl/3 + 100 ms`, r("failover").max, "<=", failoverBound, "ms");
  if (site?.ceiling && site.deployment) {
    target(
      `site deployment wall time ≤ 1.0 × the raw-SQL ceiling's (${siteNodes} nodes)`,
      site.deployment.wallMs / 1000,
      "<=",
      site.ceiling.wallMs / 1000,
      "s",
    );
  }
  if (site?.deployment) {
    target(`site deployment: watcher lag p99 ≤ 100 ms (${siteNodes} nodes)`, site.deployment.lagP99, "<=", 100, "ms");
    target(`site deployment: server RSS peak ≤ 512 MB (${siteNodes} nodes)`, site.deployment.rssPeakMb, "<=", 512, "MB");
  }
  // Issue 13.
  const span = (xs: readonly number[]) => xs.map((x) => x.toFixed(2)).join("–");
  if (overhead) {
    target(
      "GetTask server CPU, metrics on ≤ 1.05 × off (median of the pairs' ratios)",
      overhead.ratio,
      "<=",
      1.05,
      "×",
      `medians ${r("get64metricsOn").serverCpuUsPerOp.toFixed(0)} vs ${r("get64metricsOff").serverCpuUsPerOp.toFixed(0)} µs; pairs: quartiles ${span(overhead.quartiles)}, range ${span(overhead.range)}`,
    );
  }
  if (scrapeAtMax) {
    target(
      `scrape statement ≤ 0.1 × counting the finished tasks (${sizes.list[sizes.list.length - 1]} tasks)`,
      scrapeAtMax.perScrapeMs,
      "<=",
      0.1 * scrapeAtMax.finishedMs,
      "ms",
      `${scrapeAtMax.unfinished} unfinished tasks; the finished counts run at most every 5 min`,
    );
  }
} catch (err) {
  failed = true;
  console.error(err);
} finally {
  // ---- report ----
  const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "-");
  if (machine.cores) {
    console.log(
      `\n${machine.cores} cores, ${machine.cpu}, Node ${machine.node}, ${String(machine.postgres).split(" on ")[0]}, fsync=${machine.fsync}, synchronous_commit=${machine.synchronousCommit}, max_pipeline=${MAX_PIPELINE}; ${durationMs} ms per scenario\n`,
    );
  }
  console.log("| scenario | ops/s | p50 ms | p99 ms | max ms | server CPU µs/op | PostgreSQL CPU µs/op | client CPU µs/op | server RSS MB | notes |");
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
  for (const r of rows) {
    const rate = `${f(r.opsPerSec, 0)}${r.unit === "msgs" ? " msgs/s" : ""}`;
    const note = r.failed === undefined ? (r.note ?? "") : `**FAILED**: ${r.failed.replace(/\|/g, "\\|")}${r.note ? `; ${r.note}` : ""}`;
    console.log(
      `| ${r.scenario} | ${rate} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.max)} | ${f(r.serverCpuUsPerOp, 0)} | ${f(r.pgCpuUsPerOp, 0)} | ${f(r.clientCpuUsPerOp, 0)} | ${f(r.serverRssMb, 0)} | ${note} |`,
    );
  }
  const failures = rows.filter((r) => r.failed !== undefined);
  if (failures.length) console.log(`\n${failures.length} scenario(s) FAILED: ${failures.map((r) => r.id).join(", ")} (exit status 1)`);
  if (targets.length) {
    if (smoke) console.log("\nSmoke run: sizes and durations too small for these targets to mean anything; `make bench` measures them.");
    console.log("\n| target | measured | bound | met |\n|---|---:|---:|---|");
    for (const t of targets) console.log(`| ${t.target} | ${t.measured} | ${t.bound} | ${t.met ? "yes" : "**no**"} |`);
  }
  if (!smoke && rows.length) {
    const dir = path.resolve(here, "../../bench/results");
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
    await writeFile(file, JSON.stringify({ machine, durationMs, rows, targets }, null, 2));
    console.log(`\nwritten to ${path.relative(process.cwd(), file)}`);
  }
  c?.close();
  await admin?.end();
  for (const p of children) if (p.exitCode === null && p !== server) p.kill();
  if (server?.exitCode === null) {
    server.kill("SIGTERM");
    await new Promise((r) => server.on("exit", r));
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  if (!failed) await rm(logDir, { recursive: true, force: true });
  else console.error(`server and echo logs kept in ${logDir}`);
}
process.exit(failed ? 1 : 0);
