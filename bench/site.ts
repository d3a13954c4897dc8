// The site deployment benchmark (issue 27): what Drydock's orchestrator and a
// site's nodes do in a deployment, against the service, with operators
// watching; and its ceiling, the same writes straight through postgres.js.
// bench/run.ts calls siteCeiling and siteDeployment; the load comes from
// bench/siteWorker.ts processes.
//
// The orchestrator (this process) holds the leader lease (ClaimLeadership,
// RenewLeadership every ttl/3 throughout), creates a deploy_nodes task QUEUED
// and claims it with ClaimNextTask fenced by its term. Its node workers (32,
// spread over driver processes) then run NODE_STEPS for every node; each
// node reports on its signalling boot action with its identity key, on a
// channel of its own without a token. Meanwhile operators hold WatchTask
// streams on the deployment and WatchTasks streams on its subtasks, and page
// through the subtasks with ListTasks. The window ends when the deployment is
// COMPLETE.
import type { ChildProcess } from "node:child_process";
import type postgres from "postgres";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { ActionResult, TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import {
  MESSAGES_PER_NODE,
  NODE_STEPS,
  type DriveResult,
  type Latencies,
  type RawResult,
  type ReadResult,
  type SiteCommand,
  type Step,
  type WatchResult,
} from "./siteWorker.js";

/** What bench/run.ts lends the scenario. */
export interface SiteHarness {
  dbUrl: string;
  /** Reads CPU time (ms) of a process from /proc. */
  cpuMs(pid: number | undefined): Promise<number>;
  /** CPU time (ms) of the embedded PostgreSQL; NaN with DATABASE_URL. */
  pgCpuMs(): Promise<number>;
  rssMb(pid: number): Promise<number>;
  /** Flushes what earlier scenarios left dirty (CHECKPOINT). */
  checkpoint(): Promise<void>;
  /** A bench/siteWorker.js process, killed with the run. */
  fork(): ChildProcess;
  /** Cores of the machine. */
  cores: number;
  /** The runner's own connection: samples what the database's sessions wait on. */
  admin?: postgres.Sql;
}

/**
 * Samples, every 200 ms until stopped, what the active sessions of
 * `application` are doing (pg_stat_activity's wait event, or CPU); the
 * summary is their share of the samples, most frequent first.
 */
function sampleWaits(admin: postgres.Sql | undefined, application: string) {
  const counts = new Map<string, number>();
  let samples = 0;
  let running = !!admin;
  const loop = (async () => {
    while (running && admin) {
      const rows = await admin<{ what: string; n: number }[]>`
        select coalesce(wait_event_type || ':' || wait_event, 'CPU') as what, count(*)::int as n
        from pg_stat_activity where application_name like ${`${application}%`} and state = 'active' and pid <> pg_backend_pid() group by 1`;
      samples++;
      for (const r of rows) counts.set(r.what, (counts.get(r.what) ?? 0) + r.n);
      await sleep(200);
    }
  })();
  return async () => {
    running = false;
    await loop;
    if (!samples) return "";
    const top = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 5);
    return `${application}* sessions active (mean of ${samples} samples): ${top.map(([what, n]) => `${what} ${f(n / samples, 1)}`).join(", ")}`;
  };
}

/** A row of bench/run.ts's table (run.ts's Row adds a failed scenario's error). */
export interface SiteRow {
  id: string;
  scenario: string;
  /** Calls/s, or messages/s where unit is msgs. */
  opsPerSec: number;
  unit: "calls" | "msgs" | "events" | "trials" | "watchers";
  p50: number;
  p99: number;
  max: number;
  /** CPU per call of the process serving it: the service, or the echo server. */
  serverCpuUsPerOp: number;
  /** CPU per call of PostgreSQL (postmaster and backends; embedded only). */
  pgCpuUsPerOp: number;
  /** CPU per call of the load-generating processes. */
  clientCpuUsPerOp: number;
  serverRssMb: number;
  note?: string;
}

/** The shape of the load: the brief of issue 27. */
export const SITE = {
  concurrency: 32,
  driverProcs: 2,
  /** WatchTask streams on the deployment, WatchTasks streams on its subtasks, over watchProcs processes. */
  taskWatchers: 50,
  tasksWatchers: 20,
  watchProcs: 2,
  readers: 5,
  /** Operators' pause between two passes over the subtasks (a dashboard refreshing). */
  readerPauseMs: 1000,
  leaseTtlMs: 10_000,
  election: "orchestrator",
  designRef: "deckhand+https://deckhand.example:9000/api/v1.0/revisions/1/rendered-documents",
};

export const nodeNames = (n: number) =>
  Array.from({ length: n }, (_, i) => `rack${String(Math.floor(i / 40) + 1).padStart(3, "0")}-node${String(i % 40).padStart(2, "0")}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const maxOf = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), -Infinity);
const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "-");

/** The next message from `w` that satisfies `pred`; an error message (or the process's exit) rejects. */
function next<T>(w: ChildProcess, pred: (m: T) => boolean, timeoutMs = 0): Promise<T> {
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      w.off("message", on);
      w.off("exit", exit);
      if (timer) clearTimeout(timer);
    };
    const on = (m: T & { error?: string }) => {
      if (m.error) {
        done();
        reject(new Error(m.error));
      } else if (pred(m)) {
        done();
        resolve(m);
      }
    };
    const exit = (code: number | null) => {
      done();
      reject(new Error(`a site worker exited (${code}) before it answered`));
    };
    w.on("message", on);
    w.on("exit", exit);
    if (timeoutMs) {
      timer = setTimeout(() => {
        done();
        reject(new Error(`a site worker did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
    }
  });
}
const isReady = (m: { ready?: boolean }) => !!m.ready;

/** Splits `xs` into `k` parts, round robin. */
const split = <T>(xs: T[], k: number) => Array.from({ length: k }, (_, i) => xs.filter((_, j) => j % k === i));

const allLatencies = (ls: Latencies[]) => ls.flatMap((l) => Object.values(l).flat());
const stepLatencies = (ls: Latencies[], step: Step) => ls.flatMap((l) => l[step] ?? []);
/** "create 3.1/12.0" … per kind of call: p50/p99 ms. */
const byStep = (ls: Latencies[]) =>
  [...new Set(NODE_STEPS)].map((s) => `${s} ${f(pct(stepLatencies(ls, s), 50))}/${f(pct(stepLatencies(ls, s), 99))}`).join(", ");

export interface CeilingOutcome {
  rows: SiteRow[];
  wallMs: number;
  lat: Latencies;
}

/** The ceiling: the deployment's writes from one process straight through postgres.js, `pool` connections, concurrency 32. */
export async function siteCeiling(h: SiteHarness, nodes: number, pool: number): Promise<CeilingOutcome> {
  const w = h.fork();
  try {
    const ready = next(w, isReady, 60_000);
    const result = next<RawResult>(w, (m) => "calls" in m);
    w.send({ cmd: "raw", dbUrl: h.dbUrl, pool, concurrency: SITE.concurrency, nodes: nodeNames(nodes) } satisfies SiteCommand);
    await ready;
    await h.checkpoint();
    const pg0 = await h.pgCpuMs();
    const waits = sampleWaits(h.admin, "statemgmt-bench-site");
    w.send({ cmd: "go" } satisfies SiteCommand);
    const r = await result;
    const pg1 = await h.pgCpuMs();
    const waited = await waits();
    const lat = allLatencies([r.lat]);
    const pgMs = pg1 - pg0;
    return {
      wallMs: r.wallMs,
      lat: r.lat,
      rows: [
        {
          id: "siteRaw",
          scenario: `ceiling: raw postgres.js site deployment writes, ${nodes} nodes, c=${SITE.concurrency}`,
          opsPerSec: r.calls / (r.wallMs / 1000),
          unit: "calls",
          p50: pct(lat, 50),
          p99: pct(lat, 99),
          max: maxOf(lat),
          serverCpuUsPerOp: NaN,
          pgCpuUsPerOp: (pgMs * 1000) / r.calls,
          clientCpuUsPerOp: r.cpuUs / r.calls,
          serverRssMb: NaN,
          note:
            `wall ${f(r.wallMs / 1000, 2)} s; ${r.calls} statements, one process, pool of ${pool}; PostgreSQL CPU per node ${f(pgMs / nodes, 2)} ms; ` +
            `client ${f(r.cpuUs / 10 / r.wallMs, 0)} % of a core; ${waited}`,
        },
      ],
    };
  } finally {
    w.kill();
  }
}

export interface SiteOutcome {
  rows: SiteRow[];
  wallMs: number;
  lagP99: number;
  rssPeakMb: number;
}

/** The deployment through the service at `address` (served by process `serverPid`), with operators watching. */
export async function siteDeployment(h: SiteHarness, target: { address: string; pid: number }, nodes: number, ceiling?: CeilingOutcome): Promise<SiteOutcome> {
  const { address, pid } = target;
  const orchestrator = createClient(StateService, address);
  const instanceId = `orchestrator-${process.pid}`;
  const election = `${SITE.election}-${Date.now()}`;
  const workers: ChildProcess[] = [];
  let renewing = true;
  let wake = () => {};
  const woken = new Promise<void>((r) => {
    wake = r;
  });
  let renewals = 0;
  let renewError: unknown;
  let renewer: Promise<void> | undefined;
  let term = 0n;
  try {
    // Leadership first, as Drydock's orchestrator: nothing is claimed without it.
    const ttl = { seconds: BigInt(Math.floor(SITE.leaseTtlMs / 1000)), nanos: (SITE.leaseTtlMs % 1000) * 1_000_000 };
    const claim = await orchestrator.claimLeadership({ election, instanceId, ttl });
    if (!claim.isLeader) throw new Error(`not the leader of ${election}: ${claim.leader?.instanceId}`);
    term = claim.leader!.term;
    const fence = { election, term };
    renewer = (async () => {
      while (renewing) {
        await Promise.race([sleep(SITE.leaseTtlMs / 3), woken]);
        if (!renewing) return;
        try {
          await orchestrator.renewLeadership({ election, instanceId, term });
          renewals++;
        } catch (err) {
          renewError ??= err;
        }
      }
    })();
    const created = await orchestrator.createTask({
      action: "deploy_nodes",
      initialStatus: TaskStatus.QUEUED,
      designRef: SITE.designRef,
      requestContext: { user: "site-bench", nodes },
    });
    const claimed = await orchestrator.claimNextTask({ instanceId, actions: ["deploy_nodes"], fence });
    if (claimed.task?.taskId !== created.task!.taskId)
      throw new Error(`ClaimNextTask returned ${claimed.task?.taskId}, not the deployment ${created.task!.taskId}`);
    const parentId = created.task!.taskId;

    // The load: drivers, watchers, readers, each connected and waiting.
    const drivers = split(nodeNames(nodes), SITE.driverProcs).map((share, i) => {
      const w = h.fork();
      workers.push(w);
      const concurrency = Math.floor(SITE.concurrency / SITE.driverProcs) + (i < SITE.concurrency % SITE.driverProcs ? 1 : 0);
      const ready = next(w, isReady, 60_000);
      const result = next<DriveResult>(w, (m) => "appends" in m);
      w.send({ cmd: "drive", address, parentId, fence: { election, term: term.toString() }, nodes: share, concurrency } satisfies SiteCommand);
      return { w, ready, result, share: share.length };
    });
    const watchers = Array.from({ length: SITE.watchProcs }, (_, i) => {
      const w = h.fork();
      workers.push(w);
      const part = (n: number) => Math.floor(n / SITE.watchProcs) + (i < n % SITE.watchProcs ? 1 : 0);
      const ready = next(w, isReady, 60_000);
      const result = next<WatchResult>(w, (m) => "received" in m);
      w.send({ cmd: "watch", address, parentId, taskWatchers: part(SITE.taskWatchers), tasksWatchers: part(SITE.tasksWatchers) } satisfies SiteCommand);
      return { w, ready, result };
    });
    const reader = (() => {
      const w = h.fork();
      workers.push(w);
      const ready = next(w, isReady, 60_000);
      const result = next<ReadResult>(w, (m) => "pages" in m);
      w.send({ cmd: "read", address, parentId, readers: SITE.readers, pauseMs: SITE.readerPauseMs } satisfies SiteCommand);
      return { w, ready, result };
    })();
    await Promise.all([...drivers, ...watchers, reader].map((x) => x.ready));

    await h.checkpoint();
    const [cpu0, pg0] = [await h.cpuMs(pid), await h.pgCpuMs()];
    let rssPeak = await h.rssMb(pid);
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        rssPeak = Math.max(rssPeak, await h.rssMb(pid));
        await sleep(100);
      }
    })();
    const waits = sampleWaits(h.admin, "drydock-statemgmt");
    const t0 = performance.now();
    for (const x of [...drivers, ...watchers, reader]) x.w.send({ cmd: "go" } satisfies SiteCommand);
    const driven = await Promise.all(drivers.map((d) => d.result));
    await orchestrator.updateTask({
      task: { taskId: parentId, status: TaskStatus.COMPLETE, result: { status: ActionResult.SUCCESS, message: `${nodes} nodes deployed` } },
      updateMask: { paths: ["status", "result.status", "result.message"] },
      fence,
    });
    const wallMs = performance.now() - t0;
    const waited = await waits();
    // The WatchTask streams end with the deployment; the fan-out's tail counts into the server's CPU.
    for (const x of [...watchers, reader]) x.w.send({ cmd: "stop" } satisfies SiteCommand);
    const watched = await Promise.all(
      watchers.map((x) => Promise.race([x.result, sleep(120_000).then(() => Promise.reject(new Error("watchers did not finish")))])),
    );
    const read = await reader.result;
    const tailMs = performance.now() - t0 - wallMs;
    const [cpu1, pg1] = [await h.cpuMs(pid), await h.pgCpuMs()];
    sampling = false;
    await sampler;
    renewing = false;
    wake();
    if (renewError) throw new Error(`RenewLeadership failed during the deployment: ${String(renewError)}`);

    // Checks: every node ran every step; every watcher got every message.
    const calls = driven.reduce((a, d) => a + d.calls, 0);
    if (calls !== nodes * NODE_STEPS.length) throw new Error(`${calls} calls for ${nodes} nodes, not ${nodes * NODE_STEPS.length}`);
    const total = nodes * MESSAGES_PER_NODE;
    const short = watched.flatMap((w) => w.lastSequences).filter((s) => BigInt(s) !== BigInt(total));
    if (short.length) throw new Error(`${short.length} WatchTask streams ended before sequence ${total} (at ${short.slice(0, 5).join(", ")})`);

    // Watcher lag: from an append's acknowledgement to the moment the last WatchTask stream got it.
    const received = new Map<string, number>();
    for (const w of watched) for (const [seq, t] of w.received) received.set(seq, Math.max(received.get(seq) ?? 0, t));
    const appends = driven.flatMap((d) => d.appends);
    const lag = appends.map(([seq, ack]) => received.get(seq)! - ack);
    const seen = new Map<string, number>();
    for (const w of watched) for (const [k, t] of w.seen) seen.set(k, Math.max(seen.get(k) ?? 0, t));
    const changes = driven.flatMap((d) => d.changes);
    const tasksLag = changes.filter(([k]) => seen.has(k)).map(([k, ack]) => seen.get(k)! - ack);
    const unseen = changes.length - tasksLag.length;

    const lats = driven.map((d) => d.lat);
    const all = allLatencies(lats);
    const serverMs = cpu1 - cpu0;
    const pgMs = pg1 - pg0;
    const share = (cpuUs: number, ms: number) => `${f(cpuUs / 10 / ms, 0)} %`;
    const clientUs = [...driven, ...watched, read].reduce((a, x) => a + x.cpuUs, 0);
    const windowMs = wallMs + tailMs;
    const busy = (serverMs + pgMs + clientUs / 1000) / windowMs / h.cores;
    const rows: SiteRow[] = [
      {
        id: "site",
        scenario: `site deployment, ${nodes} nodes, c=${SITE.concurrency}, ${SITE.taskWatchers} + ${SITE.tasksWatchers} watchers, ${SITE.readers} readers`,
        opsPerSec: calls / (wallMs / 1000),
        unit: "calls",
        p50: pct(all, 50),
        p99: pct(all, 99),
        max: maxOf(all),
        serverCpuUsPerOp: (serverMs * 1000) / calls,
        pgCpuUsPerOp: (pgMs * 1000) / calls,
        clientCpuUsPerOp: clientUs / calls,
        serverRssMb: rssPeak,
        note:
          `wall ${f(wallMs / 1000, 2)} s${ceiling ? ` (ceiling ${f(ceiling.wallMs / 1000, 2)} s)` : ""}; per node: server CPU ${f(serverMs / nodes, 2)} ms, ` +
          `PostgreSQL ${f(pgMs / nodes, 2)} ms; RSS column: peak; ${renewals} lease renewals; ` +
          `client processes (% of a core): drivers ${driven.map((d) => share(d.cpuUs, d.wallMs)).join(", ")}, ` +
          `watchers ${watched.map((d) => share(d.cpuUs, d.wallMs)).join(", ")}, readers ${share(read.cpuUs, read.wallMs)}; ` +
          `machine ${f(busy * 100, 0)} % busy (server + PostgreSQL + clients over ${h.cores} cores); ${waited}`,
      },
      {
        id: "siteSteps",
        scenario: "site deployment: p50/p99 ms by call",
        opsPerSec: calls / (wallMs / 1000),
        unit: "calls",
        p50: NaN,
        p99: NaN,
        max: NaN,
        serverCpuUsPerOp: NaN,
        pgCpuUsPerOp: NaN,
        clientCpuUsPerOp: NaN,
        serverRssMb: NaN,
        note: `service: ${byStep(lats)}${ceiling ? `; raw ceiling: ${byStep([ceiling.lat])}` : ""}`,
      },
      {
        id: "siteLag",
        scenario: `site: WatchTask lag, last of ${SITE.taskWatchers} streams on the deployment: ack→recv`,
        opsPerSec: appends.length / (wallMs / 1000),
        unit: "events",
        p50: pct(lag, 50),
        p99: pct(lag, 99),
        max: maxOf(lag),
        serverCpuUsPerOp: NaN,
        pgCpuUsPerOp: NaN,
        clientCpuUsPerOp: NaN,
        serverRssMb: NaN,
        note: `${appends.length} messages, each received by every stream; ${watched.reduce((a, w) => a + w.taskEvents, 0)} WatchTask events; streams reopened after WATCH_BUFFER_FULL: ${watched.reduce((a, w) => a + w.reopened, 0)}`,
      },
      {
        id: "siteTasksLag",
        scenario: `site: WatchTasks lag, last of ${SITE.tasksWatchers} streams on the subtasks: ack→snapshot`,
        opsPerSec: changes.length / (wallMs / 1000),
        unit: "events",
        p50: pct(tasksLag, 50),
        p99: pct(tasksLag, 99),
        max: maxOf(tasksLag),
        serverCpuUsPerOp: NaN,
        pgCpuUsPerOp: NaN,
        clientCpuUsPerOp: NaN,
        serverRssMb: NaN,
        note: `subtask created, RUNNING, COMPLETE: ${changes.length} changes, ${unseen} not seen by every process's streams; ${watched.reduce((a, w) => a + w.tasksEvents, 0)} WatchTasks events`,
      },
      {
        id: "siteList",
        scenario: `site: ListTasks of the subtasks, pages of 100, ${SITE.readers} operators`,
        opsPerSec: read.pages / (read.wallMs / 1000),
        unit: "calls",
        p50: pct(read.lat, 50),
        p99: pct(read.lat, 99),
        max: maxOf(read.lat),
        serverCpuUsPerOp: NaN,
        pgCpuUsPerOp: NaN,
        clientCpuUsPerOp: NaN,
        serverRssMb: NaN,
        note: `${read.passes} passes over the subtasks, ${SITE.readerPauseMs} ms between two passes of one operator`,
      },
    ];
    if (unseen) throw new Error(`${unseen} subtask changes never reached a WatchTasks stream`);
    return { rows, wallMs, lagP99: pct(lag, 99), rssPeakMb: rssPeak };
  } finally {
    renewing = false;
    wake();
    await renewer;
    if (term) await orchestrator.resignLeadership({ election, instanceId, term }).catch(() => {});
    orchestrator.close();
    for (const w of workers) w.kill();
  }
}
