// The processes of the site deployment benchmark (bench/site.ts drives them
// over IPC): the orchestrator's node workers and the nodes' own reports
// ("drive"), the operators' WatchTask and WatchTasks streams ("watch"), the
// operators' ListTasks pagers ("read"), and the raw-SQL ceiling ("raw"): the
// same writes issued by one process straight through postgres.js against
// the service's tables. Times are performance.timeOrigin + now(), a wall
// clock shared by processes on one machine (as in bench/worker.ts).
import { createHash, randomBytes, randomUUID } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";
import postgres from "postgres";
import { BootActionStatus } from "../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { StateService, type WatchTaskResponse, type WatchTasksResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { ActionResult, FilterSetType, TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { UNTYPED_OPTIONS } from "../src/db/connect.js";

/**
 * What the orchestrator and the node do for one node, in order: 20 calls.
 * The subtask, its boot action context and 3 boot actions, 10 messages on
 * the deployment (the parent) spread over the node's life, 2 build data
 * records, the node's 2 detail reports and final status on its signalling
 * boot action, the subtask RUNNING then COMPLETE with a result.
 */
export const NODE_STEPS = [
  "create",
  "append",
  "running",
  "context",
  "bootActions",
  "append",
  "append",
  "buildData",
  "append",
  "detail",
  "append",
  "append",
  "detail",
  "buildData",
  "append",
  "append",
  "final",
  "append",
  "complete",
  "append",
] as const;
export type Step = (typeof NODE_STEPS)[number];
/** Result messages each node appends to the deployment. */
export const MESSAGES_PER_NODE = NODE_STEPS.filter((s) => s === "append").length;
export const BUILD_DATA_BYTES = 20 * 1024;
/** Subtask statuses in the order a subtask passes them (WatchTasks lag is keyed on them). */
export const RANKS = [TaskStatus.REQUESTED, TaskStatus.RUNNING, TaskStatus.COMPLETE] as const;
const TEXT = [
  "PXE boot, commissioning started",
  "commissioned: hardware inventory collected",
  "network and storage configured",
  "OS deployment started",
  "OS image written, rebooting",
  "boot actions rendered",
  "cloud-init running",
  "kubelet joined the cluster",
  "node reports its boot actions done",
  "deployment finished",
];
const ACTIONS = ["promjoin", "hw-config", "ntp-config"];

export interface Fence {
  election: string;
  term: string;
}

export type SiteCommand =
  | { cmd: "drive"; address: string; parentId: string; fence: Fence; nodes: string[]; concurrency: number }
  | { cmd: "watch"; address: string; parentId: string; taskWatchers: number; tasksWatchers: number }
  | { cmd: "read"; address: string; parentId: string; readers: number; pauseMs: number }
  | { cmd: "raw"; dbUrl: string; pool: number; concurrency: number; nodes: string[] }
  | { cmd: "go" }
  | { cmd: "stop" };

/** Latencies of one kind of call, ms. */
export type Latencies = Partial<Record<Step, number[]>>;

export interface DriveResult {
  calls: number;
  lat: Latencies;
  /** [sequence, acknowledged at] of every append to the deployment. */
  appends: [string, number][];
  /** [`${subtaskId}|${rank}`, acknowledged at] of every subtask create (rank 0), RUNNING (1) and COMPLETE (2). */
  changes: [string, number][];
  cpuUs: number;
  wallMs: number;
}

export interface WatchResult {
  /** [sequence, when the last WatchTask stream of this process got it]. */
  received: [string, number][];
  /** [`${subtaskId}|${rank}`, when the last WatchTasks stream of this process saw the subtask at that rank or later]. */
  seen: [string, number][];
  /** The highest sequence each WatchTask stream got before it ended. */
  lastSequences: string[];
  taskEvents: number;
  tasksEvents: number;
  /** Streams reopened after WATCH_BUFFER_FULL (WatchTask from its last sequence; WatchTasks anew). */
  reopened: number;
  cpuUs: number;
  wallMs: number;
}

export interface ReadResult {
  pages: number;
  passes: number;
  lat: number[];
  cpuUs: number;
  wallMs: number;
}

export interface RawResult {
  calls: number;
  lat: Latencies;
  wallMs: number;
  cpuUs: number;
}

const clock = () => performance.timeOrigin + performance.now();
const send = (m: unknown) => process.send!(m);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ownChannel = { "grpc.use_local_subchannel_pool": 1 };
let go: (() => void) | undefined;
let stop: (() => void) | undefined;
const goSignal = () =>
  new Promise<void>((r) => {
    go = r;
    send({ ready: true });
  });

process.on("message", async (m: SiteCommand) => {
  try {
    if (m.cmd === "drive") send(await drive(m));
    else if (m.cmd === "watch") send(await watch(m));
    else if (m.cmd === "read") send(await read(m));
    else if (m.cmd === "raw") send(await raw(m));
    else if (m.cmd === "go") go?.();
    else if (m.cmd === "stop") stop?.();
  } catch (err) {
    send({ error: String((err as Error)?.stack ?? err) });
  }
});

/** A ULID (Crockford base32: 48 bits of milliseconds, 80 random bits), as Drydock picks its boot action ids. */
export function ulid(): string {
  const A = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let t = Date.now();
  let out = "";
  for (let i = 0; i < 10; i++) {
    out = A[t % 32]! + out;
    t = Math.floor(t / 32);
  }
  const r = randomBytes(16);
  for (let i = 0; i < 16; i++) out += A[r[i]! % 32];
  return out;
}

/** A 20 KB build data record: a text document, half of it random (hardware inventories compress, but not entirely). */
export function buildData(node: string, generator: string): Buffer {
  const head = `{"node":"${node}","generator":"${generator}","collected":"${new Date().toISOString()}","serial":"`;
  const random = randomBytes(BUILD_DATA_BYTES / 4).toString("hex");
  const body = `${head}${random}","lines":[`;
  let fill = "";
  for (let i = 0; fill.length < BUILD_DATA_BYTES - body.length - 2; i++) fill += `"eth${i % 8}: link up 25000 Mb/s",`;
  return Buffer.from(`${`${body}${fill}`.slice(0, BUILD_DATA_BYTES - 2)}]}`);
}

const nodeFilter = (node: string) => ({
  filterSetType: FilterSetType.UNION,
  filterSet: [{ filterType: FilterSetType.UNION, nodeNames: [node] }],
});
const detail = (node: string, n: number) => ({
  message: n === 1 ? "promjoin: kubelet installed" : "promjoin: node joined the cluster",
  extra: { node, step: n, script: "promjoin.sh" },
});

/** Runs `work` for every item with `concurrency` workers. */
async function pool<T>(items: T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (i < items.length) await work(items[i++]!);
    }),
  );
}

function timer(lat: Latencies) {
  return async <T>(step: Step, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    const r = await f();
    const list = lat[step] ?? [];
    lat[step] = list;
    list.push(performance.now() - t0);
    return r;
  };
}

/** The orchestrator's node workers, and each node's own reports (a channel of their own, no token: the identity key). */
async function drive(m: Extract<SiteCommand, { cmd: "drive" }>): Promise<DriveResult> {
  const client = createClient(StateService, m.address, undefined, ownChannel);
  const nodes = createClient(StateService, m.address, undefined, ownChannel);
  await Promise.all([client, nodes].map((c) => ready(c.channel)));
  const fence = { election: m.fence.election, term: BigInt(m.fence.term) };
  const lat: Latencies = {};
  const timed = timer(lat);
  const appends: [string, number][] = [];
  const changes: [string, number][] = [];
  let calls = 0;
  await goSignal();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await pool(m.nodes, m.concurrency, async (node) => {
    const subtaskId = randomUUID();
    const key = randomBytes(32);
    const signalling = ulid();
    let k = 0;
    let details = 0;
    let builds = 0;
    for (const step of NODE_STEPS) {
      calls++;
      if (step === "create") {
        await timed(step, () => client.createTask({ taskId: subtaskId, parentTaskId: m.parentId, action: "deploy_node", nodeFilter: nodeFilter(node) }));
        changes.push([`${subtaskId}|0`, clock()]);
      } else if (step === "append") {
        const text = `${node}: ${TEXT[k++]}`;
        const r = await timed(step, () =>
          client.appendResultMessages({ taskId: m.parentId, messages: [{ message: text, contextType: "node", context: node }] }),
        );
        appends.push([r.sequences[0]!.toString(), clock()]);
      } else if (step === "running") {
        await timed(step, () => client.updateTask({ task: { taskId: subtaskId, status: TaskStatus.RUNNING }, updateMask: { paths: ["status"] }, fence }));
        changes.push([`${subtaskId}|1`, clock()]);
      } else if (step === "context") {
        await timed(step, () => client.setBootActionContext({ nodeName: node, taskId: subtaskId, identityKey: key }));
      } else if (step === "bootActions") {
        const actions = ACTIONS.map((actionName, i) => (i === 0 ? { actionName, signalling: true, actionId: signalling } : { actionName, signalling: false }));
        await timed(step, () => client.createBootActions({ nodeName: node, taskId: subtaskId, actions }));
      } else if (step === "buildData") {
        const generator = builds++ === 0 ? "lshw" : "lldp";
        await timed(step, () =>
          client.createBuildData({
            buildData: { nodeName: node, taskId: subtaskId, generator, dataFormat: "application/json", dataElement: buildData(node, generator) },
          }),
        );
      } else if (step === "detail") {
        const d = detail(node, ++details);
        await timed(step, () => nodes.reportBootActionStatus({ actionId: signalling, identityKey: key, details: [d] }));
      } else if (step === "final") {
        await timed(step, () => nodes.reportBootActionStatus({ actionId: signalling, identityKey: key, status: BootActionStatus.SUCCESS }));
      } else {
        await timed(step, () =>
          client.updateTask({
            task: {
              taskId: subtaskId,
              status: TaskStatus.COMPLETE,
              result: { status: ActionResult.SUCCESS, message: `${node} deployed`, successes: [node] },
            },
            updateMask: { paths: ["status", "result.status", "result.message", "result.successes"] },
            fence,
          }),
        );
        changes.push([`${subtaskId}|2`, clock()]);
      }
    }
  });
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  client.close();
  nodes.close();
  return { calls, lat, appends, changes, cpuUs: cpu.user + cpu.system, wallMs };
}

const ready = (c: grpc.Client) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
const isBufferFull = (err: grpc.ServiceError) => err.code === 8 /* RESOURCE_EXHAUSTED */ && /WATCH_BUFFER_FULL|behind/i.test(err.details ?? err.message);

/**
 * `taskWatchers` WatchTask streams on the deployment, held until it is
 * COMPLETE (they end then), and `tasksWatchers` WatchTasks streams on its
 * subtasks, held until "stop". A stream that falls behind is reopened as a
 * client would: WatchTask from its last sequence, WatchTasks anew.
 */
async function watch(m: Extract<SiteCommand, { cmd: "watch" }>): Promise<WatchResult> {
  const client = createClient(StateService, m.address, undefined, ownChannel);
  await ready(client.channel);
  const received = new Map<string, number>();
  const seen = new Map<string, number>();
  const lastSequences: bigint[] = [];
  let taskEvents = 0;
  let tasksEvents = 0;
  let reopened = 0;
  const stopped = new Promise<void>((r) => {
    stop = r;
  });
  let failed: Error | undefined;
  let ended = 0;
  let opened = 0;
  let allOpen: () => void = () => {};
  const open = new Promise<void>((r) => {
    allOpen = r;
  });
  let allEnded: () => void = () => {};
  const endedAll = new Promise<void>((r) => {
    allEnded = r;
  });
  const fail = (err: Error) => {
    failed ??= err;
    allEnded();
  };
  const taskStream = (i: number, after: bigint) => {
    const call = client.watchTask({ taskId: m.parentId, afterSequence: after }) as grpc.ClientReadableStream<WatchTaskResponse>;
    let first = after === 0n;
    call.on("data", (ev: WatchTaskResponse) => {
      const now = clock();
      taskEvents++;
      if (first) {
        first = false;
        if (++opened === m.taskWatchers) allOpen();
      }
      if (ev.event.case === "message") {
        const seq = ev.event.value.sequence;
        lastSequences[i] = seq;
        const k = seq.toString();
        received.set(k, Math.max(received.get(k) ?? 0, now));
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (isBufferFull(err)) {
        reopened++;
        taskStream(i, lastSequences[i]!);
      } else fail(err);
    });
    call.on("status", (s: grpc.StatusObject) => {
      if (s.code === 0 && ++ended === m.taskWatchers) allEnded();
    });
  };
  for (let i = 0; i < m.taskWatchers; i++) {
    lastSequences.push(0n);
    taskStream(i, 0n);
  }
  const tasksCalls = new Set<grpc.ClientReadableStream<WatchTasksResponse>>();
  const tasksStream = () => {
    const rank = new Map<string, number>(); // this stream's highest rank seen per subtask
    const call = client.watchTasks({ parentTaskId: m.parentId, sendInitial: true }) as grpc.ClientReadableStream<WatchTasksResponse>;
    tasksCalls.add(call);
    call.on("data", (ev: WatchTasksResponse) => {
      const now = clock();
      tasksEvents++;
      const t = ev.task;
      if (!t) return;
      const r = RANKS.indexOf(t.status as (typeof RANKS)[number]);
      const had = rank.get(t.taskId) ?? -1;
      if (r <= had) return;
      rank.set(t.taskId, r);
      // A snapshot may stand for skipped ones (coalesced changes): it shows every rank up to its own.
      for (let x = had + 1; x <= r; x++) {
        const k = `${t.taskId}|${x}`;
        seen.set(k, Math.max(seen.get(k) ?? 0, now));
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      tasksCalls.delete(call);
      if (err.code === 1 /* CANCELLED */) return;
      if (isBufferFull(err)) {
        reopened++;
        tasksStream();
      } else fail(err);
    });
  };
  for (let i = 0; i < m.tasksWatchers; i++) tasksStream();
  if (m.taskWatchers > 0) await open;
  await sleep(500); // WatchTasks sends nothing until a subtask changes: give its subscriptions time to be made
  if (failed) throw failed;
  await goSignal();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  // WatchTask streams end when the deployment is COMPLETE; WatchTasks streams are held until "stop".
  await Promise.all([m.taskWatchers > 0 ? endedAll : undefined, stopped]);
  if (failed) throw failed;
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  for (const c of tasksCalls) c.cancel();
  client.close();
  return {
    received: [...received],
    seen: [...seen],
    lastSequences: lastSequences.map(String),
    taskEvents,
    tasksEvents,
    reopened,
    cpuUs: cpu.user + cpu.system,
    wallMs,
  };
}

/** Operators paging through the deployment's subtasks (pages of 100), then waiting `pauseMs` before the next pass, until "stop". */
async function read(m: Extract<SiteCommand, { cmd: "read" }>): Promise<ReadResult> {
  const client = createClient(StateService, m.address, undefined, ownChannel);
  await ready(client.channel);
  let stopped = false;
  const stopping = new Promise<void>((r) => {
    stop = () => {
      stopped = true;
      r();
    };
  });
  await goSignal();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const lat: number[] = [];
  let passes = 0;
  await Promise.all(
    Array.from({ length: m.readers }, async () => {
      while (!stopped) {
        let token = "";
        do {
          const s = performance.now();
          const r = await client.listTasks({ parentTaskId: m.parentId, pageSize: 100, pageToken: token });
          lat.push(performance.now() - s);
          token = r.nextPageToken;
        } while (token && !stopped);
        passes++;
        await Promise.race([sleep(m.pauseMs), stopping]);
      }
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  client.close();
  return { pages: lat.length, passes, lat, cpuUs: cpu.user + cpu.system, wallMs };
}

// ---- the raw-SQL ceiling ----

const RAW_CHANNEL = "statemgmt_bench"; // pg_notify as the service's statements do, on a channel the service does not listen to
const LEASE_TTL_MS = 10_000;

/**
 * The deployment's writes straight through postgres.js, as an orchestrator
 * writing its own SQL would issue them: one statement per call (the report
 * too, where the service uses a transaction), the service's row shapes,
 * notifications and checks (parent row bumped by a subtask insert, the
 * leadership fence on subtask updates, the identity key's hash on reports,
 * the task's next_message_seq for gapless sequences). Its own lease and
 * deployment, claimed before the window; renewed every ttl/3 within it.
 */
async function raw(m: Extract<SiteCommand, { cmd: "raw" }>): Promise<RawResult> {
  const sql = postgres(m.dbUrl, { max: m.pool, ...UNTYPED_OPTIONS, onnotice: () => {}, connection: { application_name: "statemgmt-bench-site" } });
  await Promise.all(Array.from({ length: m.pool }, () => sql`select 1`));
  const election = `site-raw-${process.pid}-${Date.now()}`;
  const holder = "raw-orchestrator";
  const ttl = `${LEASE_TTL_MS} milliseconds`;
  const [lease] = await sql<{ term: string }[]>`
    with l as (
      insert into leases (election, holder, term, ttl, acquired_at, renewed_at, expires_at, claimed_by)
      values (${election}, ${holder}, 1, ${ttl}::interval, now(), now(), now() + ${ttl}::interval, '')
      returning term, acquired_at, expires_at
    ), h as (
      insert into lease_history (election, term, holder, acquired_at, ends_at, claimed_by) select ${election}, term, ${holder}, acquired_at, expires_at, '' from l
    )
    select term::text from l`;
  const term = lease!.term;
  const parentId = randomUUID();
  await sql`
    insert into tasks (task_id, action, design_ref, status, request_context)
    values (${parentId}, 'deploy_nodes', 'deckhand+https://deckhand.example:9000/api/v1.0/revisions/1/rendered-documents', 'queued',
            ${sql.json({ user: "site-bench" })}::jsonb)`;
  const [claimed] = await sql<{ task_id: string }[]>`
    update tasks set status = 'running', claimed_by = ${holder}, claimed_at = now(), claimed_term = ${term}::bigint, version = version + 1, updated = now()
    where task_id = (select task_id from tasks where status = 'queued' and task_id = ${parentId} for update skip locked)
      and exists (select 1 from leases where election = ${election} and term = ${term}::bigint and expires_at > clock_timestamp() for share)
    returning task_id`;
  if (claimed?.task_id !== parentId) throw new Error("the raw ceiling could not claim its deployment");
  const lat: Latencies = {};
  const timed = timer(lat);
  let calls = 0;
  /** A fenced single-row update of a task (the service's UpdateTask with a fence). */
  const update = (taskId: string, set: postgres.Fragment) => sql`
    with lease as (
      select 1 from leases where election = ${election} and term = ${term}::bigint and holder is not null and expires_at > clock_timestamp() for share
    ), u as (
      update tasks t set ${set}, version = t.version + 1, updated = now()
      from lease where t.task_id = ${taskId} and t.status not in ('complete', 'terminated')
      returning t.*
    )
    select u.*, pg_notify(${RAW_CHANNEL}, u.task_id::text) from u`;
  const append = (taskId: string, messages: { message: string; contextType: string; context: string; extra: string | null }[]) => sql`
    with task as (
      update tasks set next_message_seq = next_message_seq + ${messages.length}, version = version + 1, updated = now()
      where task_id = ${taskId} returning next_message_seq - ${messages.length} as first
    ), inserted as (
      insert into result_messages (task_id, seq, message, error, context_type, context, ts, extra)
      select ${taskId}, task.first + x.ord - 1, x.message, false, x.context_type, x.context, now(), x.extra::jsonb
      from task, unnest(${sql.array(messages.map((x) => x.message))}::text[], ${sql.array(messages.map((x) => x.contextType))}::text[],
                        ${sql.array(messages.map((x) => x.context))}::text[], ${sql.array(messages.map((x) => x.extra) as never)}::text[])
                 with ordinality as x(message, context_type, context, extra, ord)
    )
    select first, pg_notify(${RAW_CHANNEL}, ${taskId}) from task`;
  /** A node's report in one statement: the action under its key, still incomplete and within the limits; its details appended to its task. */
  const report = (actionId: string, keyHash: Buffer, status: "success" | null, details: { message: string; extra: object }[]) => {
    const bytes = details.reduce((a, d) => a + Buffer.byteLength(d.message) + Buffer.byteLength(JSON.stringify(d.extra)), 0);
    const n = details.length;
    return sql`
      with a as (
        update boot_actions set detail_count = detail_count + ${n}, detail_bytes = detail_bytes + ${bytes},
          status = coalesce(${status}::text, status), reported = case when ${status}::text is null then reported else now() end
        where action_id = ${actionId} and identity_key_sha256 = ${keyHash} and status = 'incomplete'
          and detail_count + ${n} <= 1000 and detail_bytes + ${bytes} <= 1048576
        returning task_id
      ), t as (
        update tasks set next_message_seq = next_message_seq + ${n}, version = version + 1, updated = now()
        from a where ${n}::int > 0 and tasks.task_id = a.task_id returning tasks.task_id, next_message_seq - ${n} as first
      ), inserted as (
        insert into result_messages (task_id, seq, message, error, context_type, context, ts, extra)
        select t.task_id, t.first + x.ord - 1, x.message, false, 'bootaction', ${actionId}, now(), x.extra::jsonb
        from t, unnest(${sql.array(details.map((d) => d.message))}::text[], ${sql.array(details.map((d) => JSON.stringify(d.extra)))}::text[])
                with ordinality as x(message, extra, ord)
      )
      select a.task_id, case when ${n}::int > 0 then pg_notify(${RAW_CHANNEL}, a.task_id::text) end from a`;
  };
  const one = (rows: unknown[], what: string) => {
    if (rows.length !== 1) throw new Error(`raw ceiling: ${what} wrote ${rows.length} rows`);
  };
  await goSignal();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let renewing = true;
  const renewals = (async () => {
    while (renewing) {
      await sleep(LEASE_TTL_MS / 3);
      if (!renewing) break;
      await sql`
        with l as (
          update leases set renewed_at = now(), expires_at = now() + ttl where election = ${election} and term = ${term}::bigint and holder = ${holder}
          returning expires_at
        )
        update lease_history set ends_at = (select expires_at from l) where election = ${election} and term = ${term}::bigint`;
    }
  })();
  await pool(m.nodes, m.concurrency, async (node) => {
    const subtaskId = randomUUID();
    const key = randomBytes(32);
    const keyHash = createHash("sha256").update(key).digest();
    const signalling = ulid();
    let k = 0;
    let details = 0;
    let builds = 0;
    for (const step of NODE_STEPS) {
      calls++;
      if (step === "create") {
        const rows = await timed(
          step,
          () => sql`
            with parent as (
              update tasks set version = version + 1, updated = now()
              where task_id = ${parentId} and status not in ('complete', 'terminated') returning task_id
            ), inserted as (
              insert into tasks (task_id, parent_task_id, action, design_ref, status, node_filter, request_context, created_by)
              select ${subtaskId}::uuid, ${parentId}::uuid, 'deploy_node', '', 'requested',
                     ${sql.json({ filterSetType: "union", filterSet: [{ filterType: "union", nodeNames: [node], nodeTags: [], nodeLabels: {}, rackNames: [], rackLabels: {} }] })}::jsonb,
                     null, ''
              from parent returning *
            )
            select i.*, pg_notify(${RAW_CHANNEL}, i.task_id::text), pg_notify(${RAW_CHANNEL}, i.parent_task_id::text) from inserted i`,
        );
        one(rows, "create");
      } else if (step === "append") {
        one(await timed(step, () => append(parentId, [{ message: `${node}: ${TEXT[k++]}`, contextType: "node", context: node, extra: null }])), "append");
      } else if (step === "running") {
        one(await timed(step, () => update(subtaskId, sql`status = 'running'`)), "running");
      } else if (step === "context") {
        const rows = await timed(
          step,
          () => sql`
            insert into boot_action_contexts as c (node_name, task_id, identity_key_sha256)
            select ${node}, ${subtaskId}, ${keyHash}
            where exists (select 1 from tasks where task_id = ${subtaskId})
            on conflict (node_name) do update set task_id = excluded.task_id, identity_key_sha256 = excluded.identity_key_sha256, updated = now()
            returning c.*`,
        );
        one(rows, "context");
      } else if (step === "bootActions") {
        const ids = ACTIONS.map((_, i) => (i === 0 ? signalling : ulid()));
        const rows = await timed(
          step,
          () => sql`
            insert into boot_actions (action_id, node_name, action_name, task_id, identity_key_sha256, signalling, status)
            select a.action_id, c.node_name, a.action_name, c.task_id, c.identity_key_sha256, a.signalling,
                   case when a.signalling then 'incomplete' else 'unreported' end
            from boot_action_contexts c,
                 unnest(${sql.array(ids)}::text[], ${sql.array(ACTIONS)}::text[], ${sql.array(ACTIONS.map((_, i) => i === 0))}::boolean[])
                   as a(action_id, action_name, signalling)
            where c.node_name = ${node} and c.task_id = ${subtaskId}
            returning *`,
        );
        if (rows.length !== ACTIONS.length) throw new Error(`raw ceiling: boot actions wrote ${rows.length} rows`);
      } else if (step === "buildData") {
        const generator = builds++ === 0 ? "lshw" : "lldp";
        const rows = await timed(
          step,
          () => sql`
            insert into build_data (node_name, task_id, collected_at, generator, data_format, data_element)
            select ${node}, ${subtaskId}, now(), ${generator}, 'application/json', ${buildData(node, generator)}
            where exists (select 1 from tasks where task_id = ${subtaskId})
            returning build_data_id`,
        );
        one(rows, "build data");
      } else if (step === "detail") {
        one(await timed(step, () => report(signalling, keyHash, null, [detail(node, ++details)])), "detail");
      } else if (step === "final") {
        one(await timed(step, () => report(signalling, keyHash, "success", [])), "final");
      } else {
        const rows = await timed(step, () =>
          update(
            subtaskId,
            sql`status = 'complete', result_status = 'success', result_message = ${`${node} deployed`}, result_successes = ${sql.array([node])}::text[]`,
          ),
        );
        one(rows, "complete");
      }
    }
  });
  one(await update(parentId, sql`status = 'complete', result_status = 'success', result_message = ${`${m.nodes.length} nodes deployed`}`), "deployment");
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  renewing = false;
  await renewals;
  await sql`update leases set holder = null, expires_at = now() where election = ${election} and term = ${term}::bigint`;
  await sql.end();
  return { calls, lat, wallMs, cpuUs: cpu.user + cpu.system };
}
