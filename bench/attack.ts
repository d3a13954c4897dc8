// The unauthenticated-peer shapes of the attack run (issue 23, F1 and F2),
// at the default limits, against a real server process with a token file:
//   F1  20,000 health Watch streams and 2,000 reflection streams without a
//       token, then authenticated WatchTask and WatchLeader calls;
//   F2  4,106 HTTP/2 connections without a token, each making a refused
//       call every 2 s, then new authenticated clients connecting one by one.
// Prints one line per finding with what was served and refused, and the
// server's peak RSS.
//
//   node dist/bench/attack.js [--only F1,F2]
import { randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import http2 from "node:http2";
import { chmod, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import * as reflV1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import { tokenHash } from "../src/auth/tokenFile.js";
import { createClient } from "../src/client/client.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const only = (() => {
  const i = process.argv.indexOf("--only");
  return i > 0 ? new Set(process.argv[i + 1]!.split(",")) : undefined;
})();
const runs = (id: string) => !only || only.has(id);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const separate = { "grpc.use_local_subchannel_pool": 1 };

const dir = await mkdtemp(path.join(tmpdir(), "statemgmt-attack-"));
await chmod(dir, 0o755); // the embedded PostgreSQL runs as the postgres user when we are root
const token = randomBytes(32).toString("hex");
const tokensFile = path.join(dir, "tokens.json");
await writeFile(tokensFile, JSON.stringify({ identities: [{ subject: "ops", roles: ["admin"], sha256: tokenHash(token) }] }));

/** Starts the server (default limits, a token file) and resolves with its address. */
async function startServer(): Promise<{ proc: ChildProcess; address: string }> {
  const logPath = path.join(dir, "server.log");
  const log = await open(logPath, "w");
  const proc = spawn(
    process.execPath,
    [path.resolve(here, "../src/main.js"), "--listen", "127.0.0.1:0", "--data-dir", path.join(dir, "data"), "--auth-tokens", tokensFile],
    { env: { ...process.env, STATEMGMT_LOG_LEVEL: "info" }, stdio: ["ignore", log.fd, "inherit"] },
  );
  await log.close();
  for (const deadline = Date.now() + 90_000; Date.now() < deadline; await sleep(100)) {
    const m = /"address":"([^"]+)","startupMs"/.exec(await readFile(logPath, "utf8"));
    if (m) return { proc, address: m[1]! };
    if (proc.exitCode !== null) throw new Error(`the server exited with ${proc.exitCode}:\n${(await readFile(logPath, "utf8")).slice(-2000)}`);
  }
  proc.kill("SIGTERM");
  throw new Error(`the server was not ready within 90 s (${logPath})`);
}

/** Peak RSS of a process, sampled every 100 ms while `during` runs. */
async function peakRss<T>(pid: number, during: () => Promise<T>): Promise<{ result: T; peakMb: number }> {
  let peak = 0;
  const sample = async () => {
    const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8").catch(() => ""));
    peak = Math.max(peak, Number(m?.[1] ?? 0) / 1024);
  };
  const timer = setInterval(() => void sample(), 100);
  try {
    const result = await during();
    await sample();
    return { result, peakMb: peak };
  } finally {
    clearInterval(timer);
  }
}

/** CPU time (user + system) of a process so far, in ms. */
async function cpuMs(pid: number): Promise<number> {
  const st = (await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1]!.split(" ");
  return ((Number(st[11]) + Number(st[12])) * 1000) / 100; // CLK_TCK is 100 on Linux
}

const codeOf = (e: unknown) => grpc.status[(e as grpc.ServiceError).code] ?? String(e);

/** An authenticated WatchTask and WatchLeader: "OK" when each sends its first message. */
async function authenticatedWatches(address: string): Promise<string> {
  const admin = createClient(StateService, address, undefined, separate, { token });
  try {
    const { task } = await admin.createTask({ action: "attack_probe" }, { deadlineMs: 10_000 });
    const out: string[] = [];
    for (const [name, open] of [
      ["WatchTask", () => admin.watchTask({ taskId: task!.taskId })],
      ["WatchLeader", () => admin.watchLeader({ election: "orchestrator" })],
    ] as const) {
      const s = open();
      try {
        await s[Symbol.asyncIterator]().next();
        out.push(`${name} OK`);
      } catch (e) {
        out.push(`${name} ${codeOf(e)}`);
      } finally {
        s.cancel();
      }
    }
    return out.join(", ");
  } finally {
    admin.close();
  }
}

const lines: string[] = [];
const report = (id: string, what: string, result: string) => {
  const line = `| ${id} | ${what} | ${result} |`;
  lines.push(line);
  console.log(line);
};

const server = await startServer();
try {
  if (runs("F1")) {
    const HEALTH = 20_000;
    const { result, peakMb } = await peakRss(server.proc.pid!, async () => {
      // 1,000 streams a connection (the server's per-connection limit).
      const channels = Array.from({ length: HEALTH / 1000 }, () => createClient(Health, server.address, undefined, separate));
      const streams = channels.flatMap((c) => Array.from({ length: 1000 }, () => c.watch({})));
      const firsts = await Promise.all(
        streams.map((s) =>
          s[Symbol.asyncIterator]()
            .next()
            .then(
              () => "OK",
              (e: unknown) => codeOf(e),
            ),
        ),
      );
      const watches = await authenticatedWatches(server.address);
      const refl = createClient(reflV1.ServerReflection, server.address, undefined, separate);
      const reflCalls = Array.from({ length: 2000 }, () => refl.serverReflectionInfo());
      const reflOut = await Promise.all(
        reflCalls.map(
          (c) =>
            new Promise<string>((resolve) => {
              c.once("data", () => resolve("OK"));
              c.once("error", (e: unknown) => resolve(codeOf(e)));
              c.write({ messageRequest: { case: "listServices", value: "" } });
            }),
        ),
      );
      const watchesDuringReflection = await authenticatedWatches(server.address);
      streams.forEach((s) => s.cancel());
      reflCalls.forEach((c) => c.cancel());
      channels.forEach((c) => c.close());
      refl.close();
      const count = (xs: string[], v: string) => xs.filter((x) => x === v).length;
      return (
        `health Watch: ${count(firsts, "OK")} served, ${count(firsts, "RESOURCE_EXHAUSTED")} RESOURCE_EXHAUSTED; then ${watches}; ` +
        `reflection: ${count(reflOut, "OK")} served, ${count(reflOut, "RESOURCE_EXHAUSTED")} RESOURCE_EXHAUSTED; then ${watchesDuringReflection}`
      );
    });
    report("F1", "20,000 health Watch + 2,000 reflection streams, no token", `${result}; server peak RSS ${peakMb.toFixed(0)} MB`);
  }

  if (runs("F2")) {
    const CONNECTIONS = 4106;
    const port = Number(server.address.split(":").pop());
    const { result, peakMb } = await peakRss(server.proc.pid!, async () => {
      const sessions: http2.ClientHttp2Session[] = [];
      let closed = 0;
      const refusedCall = (s: http2.ClientHttp2Session) =>
        new Promise<void>((resolve) => {
          if (s.closed || s.destroyed) return resolve();
          const req = s.request({
            ":method": "POST",
            ":path": "/drydock.statemgmt.v1.StateService/GetLeader",
            "content-type": "application/grpc",
            te: "trailers",
          });
          req.on("error", () => resolve());
          req.on("close", () => resolve());
          req.end(Buffer.from([0, 0, 0, 0, 0]));
        });
      for (let i = 0; i < CONNECTIONS; i++) {
        const s = http2.connect(`http://127.0.0.1:${port}`);
        s.on("error", () => {});
        s.on("close", () => closed++);
        sessions.push(s);
        if (i % 200 === 199) await sleep(10);
      }
      await Promise.all(sessions.map(refusedCall));
      let attacking = true;
      let refusedCalls = 0;
      const cpuBefore = await cpuMs(server.proc.pid!);
      const attackStarted = Date.now();
      const attack = (async () => {
        while (attacking) {
          const started = Date.now();
          await Promise.all(sessions.map(refusedCall));
          refusedCalls += sessions.length;
          await sleep(Math.max(0, 2000 - (Date.now() - started)));
        }
      })();
      // New admin clients, one by one, each on a connection of its own.
      const latencies: number[] = [];
      let failed = 0;
      const admins: ReturnType<typeof createClient<typeof StateService.method>>[] = [];
      for (let i = 0; i < 20; i++) {
        const c = createClient(StateService, server.address, undefined, separate, { token });
        admins.push(c);
        const started = performance.now();
        try {
          await c.getLeader({ election: "x" }, { deadlineMs: 5000 });
          latencies.push(performance.now() - started);
        } catch {
          failed++;
        }
        await sleep(100);
      }
      attacking = false;
      await attack;
      const attackMs = Date.now() - attackStarted;
      const cpu = (await cpuMs(server.proc.pid!)) - cpuBefore;
      // The admins are still served on their connections.
      let stillServed = 0;
      for (const c of admins) {
        await c.getLeader({ election: "x" }, { deadlineMs: 5000 }).then(
          () => stillServed++,
          () => {},
        );
        c.close();
      }
      sessions.forEach((s) => s.destroy());
      latencies.sort((a, b) => a - b);
      return `${latencies.length} of 20 new admin clients served (connect + call p50 ${latencies[Math.floor(latencies.length / 2)]?.toFixed(1)} ms, max ${latencies.at(-1)?.toFixed(1)} ms), ${failed} failed; ${stillServed} of 20 still served afterwards; ${closed} attacking connections closed to make room; ${((refusedCalls * 1000) / attackMs).toFixed(0)} refused calls/s at ${((cpu / attackMs) * 100).toFixed(0)} % of a core (about ${((cpu * 1000) / Math.max(1, refusedCalls)).toFixed(0)} µs of server CPU each, the admins' calls included)`;
    });
    report("F2", "4,106 HTTP/2 connections, no token, a refused call each every 2 s", `${result}; server peak RSS ${peakMb.toFixed(0)} MB`);
  }
} finally {
  server.proc.kill("SIGTERM");
  await new Promise((r) => server.proc.once("exit", r));
  await rm(dir, { recursive: true, force: true });
}
console.log(`\n| # | shape | result |\n|---|---|---|\n${lines.join("\n")}`);
