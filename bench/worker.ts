// A load-generating process: its own grpc-js channel and event loop, driven
// by bench/run.ts over IPC. Times are performance.timeOrigin + now(), a wall
// clock with sub-millisecond resolution shared by processes on one machine.
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client.js";

export type Command =
  | { cmd: "load"; address: string; op: "createTask" | "getTask" | "append1" | "append100" | "claim"; concurrency: number; durationMs: number; taskIds: string[] }
  | { cmd: "watch"; address: string; taskId: string; watchers: number }
  | { cmd: "write"; address: string; taskId: string; intervalMs: number; durationMs: number }
  | { cmd: "stop" };

const clock = () => performance.timeOrigin + performance.now();
const send = (m: unknown) => process.send!(m);
let stopWatch: (() => void) | undefined;

process.on("message", async (m: Command) => {
  try {
    if (m.cmd === "load") send(await load(m));
    else if (m.cmd === "watch") await watch(m);
    else if (m.cmd === "write") send(await write(m));
    else if (m.cmd === "stop") stopWatch?.();
  } catch (err) {
    send({ error: String((err as Error)?.stack ?? err) });
  }
});

async function load(m: Extract<Command, { cmd: "load" }>) {
  const client = createClient(StateService, m.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
  const lat: number[] = [];
  const claimed: string[] = [];
  let ops = 0;
  let msgs = 0;
  let i = 0;
  const end = performance.now() + m.durationMs;
  const pick = () => m.taskIds[i++ % m.taskIds.length]!;
  const big = Array.from({ length: 100 }, (_, k) => ({ message: `bench message ${k}` }));
  await Promise.all(
    Array.from({ length: m.concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        if (m.op === "createTask") await client.createTask({ action: "bench_create" });
        else if (m.op === "getTask") await client.getTask({ taskId: pick() });
        else if (m.op === "append1" || m.op === "append100") {
          const messages = m.op === "append1" ? [{ message: "bench" }] : big;
          const r = await client.appendResultMessages({ taskId: pick(), messages });
          msgs += r.sequences.length; // after the await: `msgs += await …` would lose concurrent updates
        }
        else {
          const { task } = await client.claimNextTask({ instanceId: `bench-${process.pid}`, actions: ["bench_claim"] });
          if (!task) return;
          claimed.push(task.taskId);
        }
        lat.push(performance.now() - t0);
        ops++;
      }
    }),
  );
  client.close();
  return { ops, msgs, lat, claimed };
}

async function watch(m: Extract<Command, { cmd: "watch" }>) {
  const client = createClient(StateService, m.address, undefined, { "grpc.use_local_subchannel_pool": 1 });
  const last = new Map<string, number>(); // sequence → time the last watcher of this process got it
  let ready = 0;
  const calls = Array.from({ length: m.watchers }, () => {
    const call = client.watchTask({ taskId: m.taskId });
    let first = true;
    call.on("data", (ev) => {
      const now = clock();
      if (first) {
        first = false;
        if (++ready === m.watchers) send({ ready: true });
      }
      if (ev.event.case === "message") {
        const k = ev.event.value.sequence.toString();
        last.set(k, Math.max(last.get(k) ?? 0, now));
      }
    });
    call.on("error", () => {});
    return call;
  });
  await new Promise<void>((r) => (stopWatch = r));
  calls.forEach((c) => c.cancel());
  client.close();
  send({ received: [...last] });
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
