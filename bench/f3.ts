// Finding F3 of the attack run, reproduced against a real server process:
// one task holding big result messages, then a reader's calls on it at once:
// paused WatchTask streams from sequence 0, concurrent GetTask FULL, and
// ListResultMessages readers asking for pages of 1000. Prints the server's
// peak RSS (sampled every 20 ms from /proc) per phase and overall, and what
// each call ended with.
//   node dist/bench/f3.js [--messages 2000] [--kb 60] [--watchers 40] [--gets 16] [--listers 8]
//     [--env STATEMGMT_X=1,...] [--main dist/src/main.js] [--abort-mb 8000]
// Embedded PostgreSQL in a temporary directory unless DATABASE_URL is set.
import { spawn } from "node:child_process";
import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { StateService, TaskView } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client/client.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    messages: { type: "string" },
    kb: { type: "string" },
    watchers: { type: "string" },
    gets: { type: "string" },
    listers: { type: "string" },
    env: { type: "string" },
    main: { type: "string" },
    "abort-mb": { type: "string" },
  },
});
const MESSAGES = Number(values.messages ?? 2000);
const KB = Number(values.kb ?? 60);
const WATCHERS = Number(values.watchers ?? 40);
const GETS = Number(values.gets ?? 16);
const LISTERS = Number(values.listers ?? 8);
const ABORT_MB = Number(values["abort-mb"] ?? 8000);
const extraEnv = Object.fromEntries(
  (values.env ?? "")
    .split(",")
    .filter(Boolean)
    .map((kv) => kv.split("=") as [string, string]),
);
const main = path.resolve(values.main ?? path.join(here, "../src/main.js"));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const dataDir = process.env.DATABASE_URL ? undefined : await mkdtemp(path.join(tmpdir(), "statemgmt-f3-"));
const logPath = path.join(await mkdtemp(path.join(tmpdir(), "statemgmt-f3-log-")), "server.log");
const log = await open(logPath, "w");
const args = ["--listen", "127.0.0.1:0", ...(process.env.DATABASE_URL ? ["--database-url", process.env.DATABASE_URL] : ["--data-dir", dataDir!])];
const server = spawn(process.execPath, [main, ...args], {
  env: { ...process.env, STATEMGMT_LOG_LEVEL: "warn", ...extraEnv },
  stdio: ["ignore", log.fd, log.fd],
});
await log.close();
let address = "";
for (const deadline = Date.now() + 120_000; !address; await sleep(100)) {
  if (Date.now() > deadline || server.exitCode !== null) throw new Error(`server not ready: ${(await readFile(logPath, "utf8")).slice(-2000)}`);
  // Log level warn hides "serving gRPC": find the port from /proc instead (the only listening TCP socket of the process).
  address = await listeningAddress(server.pid!);
}

async function listeningAddress(pid: number): Promise<string> {
  const { readdir, readlink } = await import("node:fs/promises");
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const l = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(l);
    if (m) inodes.add(m[1]!);
  }
  const tcp = await readFile("/proc/net/tcp", "utf8");
  for (const line of tcp.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] === "0A" && inodes.has(f[9]!) && f[1]!.startsWith("0100007F:")) return `127.0.0.1:${parseInt(f[1]!.split(":")[1]!, 16)}`;
  }
  return "";
}

async function rssMb(): Promise<number> {
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${server.pid}/status`, "utf8").catch(() => ""));
  return Number(m?.[1] ?? NaN) / 1024;
}
let phase = "setup";
const peaks: Record<string, number> = {};
let overall = 0;
const sampler = setInterval(() => {
  void rssMb().then((mb) => {
    peaks[phase] = Math.max(peaks[phase] ?? 0, mb);
    overall = Math.max(overall, mb);
    if (mb > ABORT_MB) {
      console.error(`server RSS ${mb.toFixed(0)} MB passed --abort-mb ${ABORT_MB}: stopping`);
      server.kill("SIGKILL");
      process.exit(2);
    }
  });
}, 20);

const opts: grpc.ClientOptions = { "grpc.max_receive_message_length": -1, "grpc.use_local_subchannel_pool": 1 };
const client = createClient(StateService, address, undefined, opts);
const { task } = await client.createTask({ action: "f3_bench", designRef: "deckhand+https://example/f3" });
const taskId = task!.taskId;
// extra: one object of ~KB KB of text, within the 64 KiB extra limit.
const extra = { blob: "x".repeat(KB * 1024 - 64) };
const perAppend = Math.max(1, Math.floor((8 * 1024) / KB));
for (let n = 0; n < MESSAGES; n += perAppend) {
  const k = Math.min(perAppend, MESSAGES - n);
  await client.appendResultMessages({ taskId, messages: Array.from({ length: k }, (_, i) => ({ message: `message ${n + i + 1}`, extra })) });
}
await sleep(500);
const baseline = await rssMb();
console.log(`task ${taskId}: ${MESSAGES} messages of ${KB} KB (${((MESSAGES * KB) / 1024).toFixed(0)} MB); server RSS after setup ${baseline.toFixed(0)} MB`);

const outcomes: Record<string, Record<string, number>> = {};
const count = (what: string, how: string) => {
  outcomes[what] ??= {};
  outcomes[what]![how] = (outcomes[what]![how] ?? 0) + 1;
};
const codeOf = (err: unknown) => (err && typeof err === "object" && "code" in err ? grpc.status[(err as { code: number }).code] : String(err));

// Phase 1: paused WatchTask streams from sequence 0, each on a connection of its own; never read.
phase = "watch";
const watchClients = Array.from({ length: WATCHERS }, () => createClient(StateService, address, undefined, opts));
// Each reads its first event, then stops reading: HTTP/2 flow control then
// holds the server's writes (a grpc-js client that never starts reading
// buffers everything on its side instead).
const streams = watchClients.map((c) => {
  const s = c.watchTask({ taskId, afterSequence: 0n });
  s.once("data", () => s.pause());
  s.on("error", (err) => count("WatchTask (paused)", codeOf(err)));
  return s;
});
await sleep(10_000);
const watchPeak = peaks.watch;

// Phase 2: concurrent GetTask FULL, the paused streams still open.
phase = "getFull";
await Promise.all(
  Array.from({ length: GETS }, () =>
    client.getTask({ taskId, view: TaskView.FULL }).then(
      (r) => count("GetTask FULL", `OK (${r.resultMessages.length} messages)`),
      (err) => count("GetTask FULL", `${codeOf(err)}: ${String((err as Error).message).slice(0, 120)}`),
    ),
  ),
);

// Phase 3: ListResultMessages readers asking for pages of 1000, reading every page.
phase = "list";
let pages = 0;
let listed = 0;
await Promise.all(
  Array.from({ length: LISTERS }, async () => {
    let pageToken = "";
    try {
      do {
        const r = await client.listResultMessages({ taskId, pageSize: 1000, pageToken });
        pages++;
        listed += r.messages.length;
        pageToken = r.nextPageToken;
      } while (pageToken);
      count("ListResultMessages (page_size 1000)", "OK");
    } catch (err) {
      count("ListResultMessages (page_size 1000)", codeOf(err));
    }
  }),
);
phase = "after";
await sleep(1000);
for (const s of streams) s.cancel();
await sleep(2000);
const afterClose = await rssMb();

clearInterval(sampler);
console.log(
  JSON.stringify(
    {
      shape: { messages: MESSAGES, kb: KB, watchers: WATCHERS, gets: GETS, listers: LISTERS, env: extraEnv },
      serverRssMb: {
        afterSetup: Math.round(baseline),
        peakWatch: Math.round(watchPeak ?? NaN),
        peakGetFull: Math.round(peaks.getFull ?? NaN),
        peakList: Math.round(peaks.list ?? NaN),
        peakOverall: Math.round(overall),
        afterStreamsClosed: Math.round(afterClose),
      },
      list: { pages, messages: listed, averagePerPage: pages ? Math.round(listed / pages) : 0 },
      outcomes,
    },
    null,
    2,
  ),
);
for (const c of watchClients) c.close();
client.close();
server.kill("SIGTERM");
await new Promise((r) => server.once("exit", r));
if (dataDir) await rm(dataDir, { recursive: true, force: true });
