// A load-generating process: its own grpc-js channels (or postgres.js pool)
// and event loop, driven by bench/run.ts over IPC. Times are
// performance.timeOrigin + now(), a wall clock with sub-millisecond resolution
// shared by processes on one machine.
import { randomUUID } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import postgres from "postgres";
import { StateService, WatchTaskResponseSchema, type WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { UNTYPED_OPTIONS } from "../src/db/connect.js";
import { echoDefinition } from "./echo.js";

/** Through the service (generated client). */
export type ServiceOp = "createTask" | "getTask" | "listTasks" | "append1" | "append100" | "claim";
/** Ceilings: the bare grpc-js echo, and raw postgres.js statements shaped like the service's. */
export type CeilingOp = "echo" | "pgInsert" | "pgSelect" | "pgAppend1" | "pgAppend100";

export interface LoadCommand {
  cmd: "load";
  op: ServiceOp | CeilingOp;
  /** The service, or the echo server for "echo". */
  address: string;
  /** For the pg* ops. */
  dbUrl?: string;
  /** Connections of this process's postgres.js pool (pg* ops). */
  dbPool?: number;
  concurrency: number;
  durationMs: number;
  taskIds: string[];
  /** Size of the echo payload. */
  echoBytes?: number;
  /** ListTasks: start from this token ("" = first page). */
  pageToken?: string;
  /** Bearer token sent with every service call. */
  token?: string;
}

export type Command =
  | LoadCommand
  | { cmd: "watch"; address: string; taskId: string; watchers: number }
  | { cmd: "idle"; address: string; taskIds: string[]; perChannel: number }
  | { cmd: "write"; address: string; taskId: string; intervalMs: number; durationMs: number }
  | { cmd: "broadcastWatch"; address: string; watchers: number }
  | { cmd: "publish"; address: string; intervalMs: number; durationMs: number }
  | { cmd: "go" }
  | { cmd: "stop" };

export interface LoadResult {
  ops: number;
  msgs: number;
  lat: number[];
  claimed: string[];
  /** CPU this process used during the measured window, µs. */
  cpuUs: number;
}

const clock = () => performance.timeOrigin + performance.now();
const send = (m: unknown) => process.send!(m);
const ownChannel = { "grpc.use_local_subchannel_pool": 1 };
let stop: (() => void) | undefined;
let go: (() => void) | undefined;

process.on("message", async (m: Command) => {
  try {
    if (m.cmd === "load") send(await load(m));
    else if (m.cmd === "watch") await watch(m);
    else if (m.cmd === "idle") await idle(m);
    else if (m.cmd === "write") send(await write(m));
    else if (m.cmd === "broadcastWatch") await broadcastWatch(m);
    else if (m.cmd === "publish") send(await publish(m));
    else if (m.cmd === "go") go?.();
    else if (m.cmd === "stop") stop?.();
  } catch (err) {
    send({ error: String((err as Error)?.stack ?? err) });
  }
});

/** One call of `op`; returns the messages it wrote (append ops) or the task it claimed. */
type Call = () => Promise<{ msgs?: number; claimed?: string | null }>;
interface Target {
  call: Call;
  /** Connects, so that the measured window starts with a ready channel or pool. */
  warm(): Promise<void>;
  close(): void | Promise<void>;
}

const channelReady = (c: grpc.Client) => new Promise<void>((resolve, reject) => c.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));

function serviceCall(m: LoadCommand, pick: () => string): Target {
  const client = createClient(StateService, m.address, undefined, ownChannel);
  const big = Array.from({ length: 100 }, (_, k) => ({ message: `bench message ${k}` }));
  const metadata = new grpc.Metadata();
  if (m.token) metadata.set("authorization", `Bearer ${m.token}`);
  const o = { metadata };
  const calls: Record<ServiceOp, Call> = {
    createTask: async () => {
      await client.createTask({ action: "bench_create" }, o);
      return {};
    },
    getTask: async () => {
      await client.getTask({ taskId: pick() }, o);
      return {};
    },
    listTasks: async () => {
      const r = await client.listTasks({ pageSize: 100, pageToken: m.pageToken ?? "" }, o);
      if (r.tasks.length !== 100) throw new Error(`ListTasks returned ${r.tasks.length} tasks, not a full page`);
      return {};
    },
    append1: async () => ({ msgs: (await client.appendResultMessages({ taskId: pick(), messages: [{ message: "bench" }] }, o)).sequences.length }),
    append100: async () => ({ msgs: (await client.appendResultMessages({ taskId: pick(), messages: big }, o)).sequences.length }),
    claim: async () => ({
      claimed: (await client.claimNextTask({ instanceId: `bench-${process.pid}`, actions: ["bench_claim"] }, o)).task?.taskId ?? null,
    }),
  };
  return { call: calls[m.op as ServiceOp], warm: () => channelReady(client.channel), close: () => client.close() };
}

function echoCall(m: LoadCommand): Target {
  const Ctor = grpc.makeGenericClientConstructor(echoDefinition, "Echo");
  const client = new Ctor(m.address, grpc.credentials.createInsecure(), ownChannel) as unknown as grpc.Client & {
    echo(req: Buffer, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): void;
  };
  const payload = Buffer.alloc(m.echoBytes ?? 256, 7);
  const call: Call = () =>
    new Promise((resolve, reject) =>
      client.echo(payload, (err, res) => (err ? reject(err) : res?.length === payload.length ? resolve({}) : reject(new Error("bad echo")))),
    );
  return { call, warm: () => channelReady(client), close: () => client.close() };
}

// Raw statements in the shape of the service's (src/store): the same tables,
// one statement per call, pg_notify at commit; no validation, no gRPC.
function pgCall(m: LoadCommand, pick: () => string): Target {
  const sql = postgres(m.dbUrl!, { max: m.dbPool ?? 10, ...UNTYPED_OPTIONS, onnotice: () => {}, connection: { application_name: "statemgmt-bench" } });
  const append = async (n: number) => {
    const id = pick();
    const texts = Array.from({ length: n }, (_, k) => `bench message ${k}`);
    const [row] = await sql`
      with task as (
        update tasks set next_message_seq = next_message_seq + ${n}, version = version + 1, updated = now()
        where task_id = ${id} returning next_message_seq - ${n} as first
      ), inserted as (
        insert into result_messages (task_id, seq, message, error, ts)
        select ${id}, task.first + m.ord - 1, m.message, false, now()
        from task, unnest(${sql.array(texts)}::text[]) with ordinality as m(message, ord)
      )
      select first, pg_notify('statemgmt_bench', ${id}) from task`;
    if (!row) throw new Error(`no task ${id}`);
    return { msgs: n };
  };
  const calls: Record<CeilingOp, Call> = {
    pgInsert: async () => {
      await sql`
        with inserted as (
          insert into tasks (task_id, action, status) values (gen_random_uuid(), 'bench_raw', 'requested') returning *
        )
        select i.*, pg_notify('statemgmt_bench', i.task_id::text) from inserted i`;
      return {};
    },
    pgSelect: async () => {
      const rows = await sql`select * from tasks where task_id = ${pick()}`;
      if (rows.length !== 1) throw new Error("task not found");
      return {};
    },
    pgAppend1: () => append(1),
    pgAppend100: () => append(100),
    echo: () => Promise.reject(new Error("not a pg op")),
  };
  // The first query also loads the array types (postgres.js fetch_types):
  // array parameters of a pool's very first query are sent unconverted.
  const warm = async () => void (await Promise.all(Array.from({ length: m.dbPool ?? 10 }, () => sql`select 1`)));
  return { call: calls[m.op as CeilingOp], warm, close: () => sql.end() };
}

async function load(m: LoadCommand): Promise<LoadResult> {
  let i = 0;
  const pick = () => m.taskIds[i++ % m.taskIds.length]!;
  const target = m.op === "echo" ? echoCall(m) : m.op.startsWith("pg") ? pgCall(m, pick) : serviceCall(m, pick);
  await target.warm();
  await new Promise<void>((r) => {
    go = r;
    send({ ready: true });
  });
  const lat: number[] = [];
  const claimed: string[] = [];
  let ops = 0;
  let msgs = 0;
  const end = performance.now() + m.durationMs;
  const cpu0 = process.cpuUsage();
  await Promise.all(
    Array.from({ length: m.concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await target.call();
        if (r.claimed === null) return; // the queue is drained
        if (r.claimed) claimed.push(r.claimed);
        msgs += r.msgs ?? 0; // after the await: `msgs += await …` would lose concurrent updates
        lat.push(performance.now() - t0);
        ops++;
      }
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  await target.close();
  return { ops, msgs, lat, claimed, cpuUs: cpu.user + cpu.system };
}

/**
 * Holds `n` watch streams until "stop", then reports when this process's
 * last watcher got each message. A stream's first message (a snapshot, or
 * the broadcast's empty "subscribed") counts it ready.
 */
async function holdWatchers(n: number, open: () => grpc.ClientReadableStream<WatchTaskResponse | undefined>, close: () => void) {
  const last = new Map<string, number>(); // sequence → time the last watcher of this process got it
  let ready = 0;
  const calls = Array.from({ length: n }, () => {
    const call = open();
    let first = true;
    call.on("data", (ev: WatchTaskResponse | undefined) => {
      const now = clock();
      if (first) {
        first = false;
        if (++ready === n) send({ ready: true });
      }
      if (ev?.event.case === "message") {
        const k = ev.event.value.sequence.toString();
        last.set(k, Math.max(last.get(k) ?? 0, now));
      }
    });
    call.on("error", () => {});
    return call;
  });
  await new Promise<void>((r) => (stop = r));
  calls.forEach((c) => c.cancel());
  close();
  send({ received: [...last] });
}

async function watch(m: Extract<Command, { cmd: "watch" }>) {
  const client = createClient(StateService, m.address, undefined, ownChannel);
  await holdWatchers(
    m.watchers,
    () => client.watchTask({ taskId: m.taskId }) as grpc.ClientReadableStream<WatchTaskResponse>,
    () => client.close(),
  );
}

/** Opens one WatchTask per task id and holds them open, reading nothing after the snapshot. */
async function idle(m: Extract<Command, { cmd: "idle" }>) {
  const newClient = () => createClient(StateService, m.address, undefined, ownChannel);
  const clients: ReturnType<typeof newClient>[] = [];
  let ready = 0;
  let failed: unknown;
  const calls = m.taskIds.map((taskId, k) => {
    if (k % m.perChannel === 0) clients.push(newClient());
    const call = clients[clients.length - 1]!.watchTask({ taskId });
    call.once("data", () => {
      if (++ready === m.taskIds.length) send({ ready: true });
    });
    call.on("error", (err: grpc.ServiceError) => {
      if (err.code !== grpc.status.CANCELLED && !failed) {
        failed = err;
        send({ error: String(err) });
      }
    });
    return call;
  });
  await new Promise<void>((r) => (stop = r));
  calls.forEach((c) => c.cancel());
  clients.forEach((c) => c.close());
  send({ stopped: true });
}

async function write(m: Extract<Command, { cmd: "write" }>) {
  const client = createClient(StateService, m.address);
  const out: { seq: string; start: number; ack: number }[] = [];
  const end = performance.now() + m.durationMs;
  while (performance.now() < end) {
    const start = clock();
    const r = await client.appendResultMessages({ taskId: m.taskId, messages: [{ message: "tick" }] });
    out.push({ seq: r.sequences[0]!.toString(), start, ack: clock() });
    await new Promise((res) => setTimeout(res, m.intervalMs));
  }
  await client.updateTask({ task: { taskId: m.taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
  client.close();
  return { writes: out };
}

/**
 * The broadcast ceiling's watchers: like watch(), on the bare grpc-js server,
 * decoding each message as a WatchTaskResponse as the service's clients do.
 */
async function broadcastWatch(m: Extract<Command, { cmd: "broadcastWatch" }>) {
  const decoding = { ...echoDefinition, broadcast: { ...echoDefinition.broadcast!, responseDeserialize: decodeEvent } };
  const Echo = grpc.makeGenericClientConstructor(decoding, "Echo");
  const client = new Echo(m.address, grpc.credentials.createInsecure(), ownChannel);
  await holdWatchers(
    m.watchers,
    () => client.broadcast(Buffer.alloc(0)) as grpc.ClientReadableStream<WatchTaskResponse | undefined>,
    () => client.close(),
  );
}

/** The empty "subscribed" message, or a WatchTaskResponse. */
const decodeEvent = (b: Buffer) => (b.length === 0 ? undefined : fromBinary(WatchTaskResponseSchema, b));

/**
 * Publishes, every intervalMs, the message event a WatchTask stream gets for
 * one appended "tick" (its task id, sequence and time): the bytes the
 * service would send.
 */
async function publish(m: Extract<Command, { cmd: "publish" }>) {
  const Echo = grpc.makeGenericClientConstructor(echoDefinition, "Echo");
  const client = new Echo(m.address, grpc.credentials.createInsecure());
  const out: { seq: string; start: number; ack: number }[] = [];
  const end = performance.now() + m.durationMs;
  const taskId = randomUUID();
  for (let seq = 1; performance.now() < end; seq++) {
    const start = clock();
    const event = create(WatchTaskResponseSchema, {
      event: { case: "message", value: { taskId, sequence: BigInt(seq), message: "tick", ts: timestampNow() } },
    });
    const payload = Buffer.from(toBinary(WatchTaskResponseSchema, event));
    await new Promise<void>((resolve, reject) => client.publish(payload, (err: unknown) => (err ? reject(err) : resolve())));
    out.push({ seq: String(seq), start, ack: clock() });
    await new Promise((res) => setTimeout(res, m.intervalMs));
  }
  client.close();
  return { writes: out };
}
