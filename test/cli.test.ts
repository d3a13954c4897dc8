// The operator CLI, bin/statemgmt, run as a child process (as an operator
// runs it) against a real server on a real PostgreSQL. Tests wait for output
// lines and process exits, never for time. The terminal tests run it under a
// pseudo-terminal from util-linux's `script` (package bsdutils, essential on
// Debian) and replay what it drew into a headless xterm (@xterm/headless) to
// read the final screen.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { connect as netConnect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { toJson } from "@bufbuild/protobuf";
import xterm from "@xterm/headless";
import { expect } from "chai";
import { BootActionSchema } from "../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { BuildDataSchema, LeaderSchema } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { ActionResult, ResultMessageSchema, TaskSchema, TaskStatus, type Task } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { defaultDesignConfig } from "../src/config.js";
import { buildProgram } from "../src/cli/program.js";
import { quietPeriod, useServer } from "./kit/index.js";
import { ROOT } from "./process.js";
import { TcpProxy } from "./proxy.js";
import { issue, makeCa, writePair } from "./pki.js";
import { tokenHash } from "../src/auth/tokenFile.js";
import type { AuthConfig } from "../src/config.js";
import type { TlsFiles } from "../src/server/tls.js";

const BIN = path.join(ROOT, "bin/statemgmt");
const ESC = "\x1b";

/** The environment of an operator's shell, without what would change the CLI's behaviour. */
function baseEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const { STATEMGMT_SERVER: _s, STATEMGMT_TOKEN: _t, NO_COLOR: _n, FORCE_COLOR: _f, ...env } = process.env;
  return { ...env, ...extra };
}

interface Cli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Exit code (null when killed by a signal). */
  exited: Promise<number | null>;
  /** Resolves with the first stdout line (new or already printed) that matches; rejects if the process exits first. */
  line(match: (l: string) => boolean, what: string): Promise<string>;
  /** Resolves once stdout (with escape codes removed) contains `text`. */
  shows(text: string): Promise<void>;
}

function watchOutput(child: ChildProcess): Cli {
  let out = "";
  let err = "";
  const waiters: (() => void)[] = [];
  const poke = () => waiters.splice(0).forEach((w) => w());
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    poke();
  });
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  let done = false;
  const exited = new Promise<number | null>((r) =>
    child.on("exit", (code) => {
      done = true;
      poke();
      r(code);
    }),
  );
  /** Resolves once `test` finds what it looks for in the output so far, checked now and on every chunk. */
  const whenOutput = (test: () => string | undefined, what: string) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const hit = test();
        if (hit !== undefined) return resolve(hit);
        if (done) return reject(new Error(`exited before ${what}; stdout:\n${out}\nstderr:\n${err}`));
        waiters.push(check);
      };
      check();
    });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    // Only complete lines: the last piece may still be arriving.
    line: (match, what) => whenOutput(() => out.split(/\r?\n/).slice(0, -1).find(match), what),
    shows: (text) => whenOutput(() => (stripAnsi(out).includes(text) ? text : undefined), `"${text}"`).then(() => {}),
  };
}

/** bin/statemgmt with these arguments, stdout and stderr piped (not a terminal). */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Cli {
  return watchOutput(spawn(BIN, args, { env: baseEnv(env), stdio: ["ignore", "pipe", "pipe"] }));
}

async function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const c = cli(args, env);
  const code = await c.exited;
  return { code, stdout: c.stdout(), stderr: c.stderr() };
}

/** The slow reader's pause after each chunk: one timer tick, enough for the CLI to get ahead. */
const READ_EVERY_MS = 2;

/**
 * bin/statemgmt with its stdout a pipe read slowly: one chunk, then a timer
 * tick before the next, so that the CLI finishes its work long before its
 * output has been read. Returns every byte that came through.
 */
async function runSlowReader(args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  const child = spawn(BIN, args, { env: baseEnv(), stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  const chunks: Buffer[] = [];
  for await (const chunk of child.stdout! as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    await quietPeriod(READ_EVERY_MS, "reads the CLI's output slower than it writes it");
  }
  return { code: await exited, stdout: Buffer.concat(chunks), stderr };
}

/** bin/statemgmt with its stdout redirected to a file, as `> FILE` does; the file's bytes. */
async function runToFile(args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  const file = path.join(mkdtempSync(path.join(tmpdir(), "statemgmt-cli-out-")), "out");
  const fd = openSync(file, "w");
  try {
    const child = spawn(BIN, args, { env: baseEnv(), stdio: ["ignore", fd, "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => child.on("exit", (c) => r(c)));
    return { code, stdout: readFileSync(file), stderr };
  } finally {
    closeSync(fd);
  }
}

const HAS_SCRIPT = existsSync("/usr/bin/script");

/**
 * bin/statemgmt on a pseudo-terminal of cols × rows: `script` runs it with
 * the pty as its stdout; what it draws comes out of script's stdout. stdin
 * stays open (script stops on end of input), and bytes written to it reach
 * the pty as typed keys: "\x03" is Ctrl-C.
 */
function cliOnTerminal(args: string[], cols: number, rows: number, env: NodeJS.ProcessEnv = {}): Cli {
  const quoted = [BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  const child = spawn("script", ["-qfec", `stty cols ${cols} rows ${rows}; exec ${quoted}`, "/dev/null"], {
    env: baseEnv({ TERM: "xterm-256color", ...env }),
    stdio: ["pipe", "pipe", "pipe"],
  });
  return watchOutput(child);
}

/** The screen a terminal of cols × rows shows after receiving `raw`. */
function screen(raw: string, cols: number, rows: number): Promise<string[]> {
  const term = new xterm.Terminal({ cols, rows, allowProposedApi: true });
  return new Promise((resolve) =>
    term.write(raw, () => {
      const b = term.buffer.active;
      const lines: string[] = [];
      for (let i = 0; i < rows; i++) lines.push(b.getLine(b.viewportY + i)?.translateToString(true) ?? "");
      term.dispose();
      resolve(lines);
    }),
  );
}

// eslint-style escape matcher: CSI and OSC sequences and lone ESC pairs.
// biome-ignore lint/suspicious/noControlCharactersInRegex: it matches terminal escape sequences, which start with ESC (\x1b)
const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[@-_]/g, "");

/** A port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as { port: number };
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/**
 * A TCP forwarder to the server that can go down: then it drops its
 * connections and closes each new one at once (as a restarting server's port
 * does), counting them, so that a test can wait for the CLI's attempts.
 */
class Gate {
  private readonly sockets = new Set<Socket>();
  private down = false;
  private refusedCount = 0;
  private waiters: (() => void)[] = [];
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(port: number): Promise<Gate> {
    let gate!: Gate;
    const server = createServer((client) => {
      if (gate.down) {
        client.destroy();
        gate.refusedCount++;
        gate.waiters.splice(0).forEach((w) => w());
        return;
      }
      const upstream = netConnect(port, "127.0.0.1");
      for (const s of [client, upstream]) {
        gate.sockets.add(s);
        s.on("close", () => gate.sockets.delete(s));
        s.on("error", () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    gate = new Gate(server, (server.address() as { port: number }).port);
    return gate;
  }

  goDown(): void {
    this.down = true;
    for (const s of this.sockets) s.destroy();
  }

  comeBack(): void {
    this.down = false;
  }

  /** Resolves once `n` connections were refused while down. */
  refused(n: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => (this.refusedCount >= n ? resolve() : this.waiters.push(check));
      check();
    });
  }

  close(): Promise<void> {
    this.goDown();
    return new Promise((r) => this.server.close(() => r()));
  }
}

const seqOf = (line: string) => Number(/^#(\d+) /.exec(line)?.[1] ?? NaN);

describe("statemgmt CLI", function () {
  this.timeout(60_000);
  const designDir = mkdtempSync(path.join(tmpdir(), "statemgmt-cli-design-"));
  const h = useServer({ design: defaultDesignConfig({ roots: [designDir] }) });
  const S = () => ["--server", h.server.address];
  const unique = () => `cli_${randomUUID().slice(0, 8).replace(/-/g, "")}`;

  const finish = (taskId: string, result: ActionResult, message = "") =>
    h.client.updateTask({
      task: { taskId, status: TaskStatus.COMPLETE, result: { status: result, message } },
      updateMask: { paths: ["status", "result.status", "result.message"] },
    });
  const append = (taskId: string, from: number, count: number, error = (_i: number) => false) =>
    h.client.appendResultMessages({
      taskId,
      messages: Array.from({ length: count }, (_, k) => ({
        message: `message ${from + k}`,
        contextType: "node",
        context: `n${(from + k) % 3}`,
        error: error(from + k),
      })),
    });

  describe("help and usage", () => {
    it("--help lists every command with examples, exit codes and environment; exit 0", async () => {
      const r = await run(["--help"]);
      expect(r.code).to.equal(0);
      for (const s of [
        "tasks",
        "leader",
        "builddata",
        "design",
        "health",
        "Examples:",
        "Exit codes:",
        "STATEMGMT_SERVER",
        "STATEMGMT_TOKEN",
        "--server",
        "--timeout",
        "-o, --output",
      ]) {
        expect(r.stdout).to.contain(s);
      }
      const w = await run(["tasks", "watch", "--help"]);
      expect(w.code).to.equal(0);
      expect(w.stdout).to.contain("--after-sequence");
      expect(w.stdout).to.contain("Examples:");
      expect(w.stdout).to.contain("Global Options:");
    });

    it("bad usage exits 2 with commander's one-line error", async () => {
      const r = await run(["tasks", "list", "--bogus"]);
      expect(r.code).to.equal(2);
      expect(r.stderr).to.equal("error: unknown option '--bogus'\n");
      const s = await run(["tasks", "list", "--status", "sleeping"]);
      expect(s.code).to.equal(2);
      expect(s.stderr).to.match(
        /^error: option '--status <status>' argument 'sleeping' is invalid\. unknown status "sleeping" \(one of requested, queued, running, terminating, terminated, complete\)\n$/,
      );
      expect((await run(["tasks", "get"])).code).to.equal(2);
      expect((await run(["-o", "yaml", "health"])).code).to.equal(2);
      const both = await run([...S(), "tasks", "list", "--all", "--limit", "3"]);
      expect([both.code, both.stderr]).to.deep.equal([2, "error: --limit and --all do not go together\n"]);
    });
  });

  describe("errors", () => {
    it("NOT_FOUND: one line with code, reason and the server's message; exit 4", async () => {
      const id = randomUUID();
      const r = await run([...S(), "tasks", "get", id]);
      expect(r.code).to.equal(4);
      expect(r.stdout).to.equal("");
      expect(r.stderr).to.equal(`error: NOT_FOUND TASK_NOT_FOUND: Task ${id} does not exist\n`);
    });

    it("INVALID_ARGUMENT from the server is bad usage: exit 2", async () => {
      const r = await run([...S(), "tasks", "get", "not-a-uuid"]);
      expect(r.code).to.equal(2);
      expect(r.stderr).to.equal(`error: INVALID_ARGUMENT: task_id: "not-a-uuid" is not a UUID\n`);
    });

    it("ALREADY_EXISTS (a retried create with the same --id): exit 5", async () => {
      const id = randomUUID();
      expect((await run([...S(), "tasks", "create", "deploy_nodes", "--id", id])).code).to.equal(0);
      const r = await run([...S(), "tasks", "create", "deploy_nodes", "--id", id]);
      expect(r.code).to.equal(5);
      expect(r.stderr).to.match(/^error: ALREADY_EXISTS TASK_ALREADY_EXISTS: [^\n]+\n$/);
    });

    it("no server at --server: UNAVAILABLE naming the address, exit 6, for calls and watches", async () => {
      const addr = `127.0.0.1:${await closedPort()}`;
      for (const args of [["tasks", "list"], ["tasks", "watch", randomUUID()], ["health"]]) {
        const r = await run(["--server", addr, ...args]);
        expect(r.code, args.join(" ")).to.equal(6);
        expect(r.stderr).to.match(new RegExp(`^error: UNAVAILABLE: server ${addr}: [^\\n]*ECONNREFUSED[^\\n]*\\n$`));
      }
    });

    it("STATEMGMT_SERVER is the default of --server", async () => {
      const r = await run(["health"], { STATEMGMT_SERVER: h.server.address });
      expect([r.code, r.stdout]).to.deep.equal([0, "SERVING\n"]);
    });
  });

  describe("tasks list", () => {
    it("-o json is what the server holds, in its order, filtered by action and status", async () => {
      const action = unique();
      const made: Task[] = [];
      for (const status of [TaskStatus.QUEUED, TaskStatus.UNSPECIFIED, TaskStatus.QUEUED])
        made.push((await h.client.createTask({ action, initialStatus: status })).task!);
      const r = await run([...S(), "tasks", "list", "--action", action, "-o", "json"]);
      expect(r.code).to.equal(0);
      const { tasks } = await h.client.listTasks({ actions: [action] });
      expect(JSON.parse(r.stdout)).to.deep.equal(tasks.map((t) => toJson(TaskSchema, t)));
      expect(tasks.map((t) => t.taskId)).to.deep.equal(made.map((t) => t.taskId));
      const q = await run([...S(), "tasks", "list", "--action", action, "--status", "queued", "-o", "json"]);
      expect((JSON.parse(q.stdout) as { taskId: string }[]).map((t) => t.taskId)).to.deep.equal([made[0]!.taskId, made[2]!.taskId]);
    });

    it("a table of short id, action, status, result, created and age", async () => {
      const action = unique();
      const a = (await h.client.createTask({ action, initialStatus: TaskStatus.QUEUED })).task!;
      const b = (await h.client.createTask({ action })).task!;
      await finish(b.taskId, ActionResult.PARTIAL_SUCCESS);
      const r = await run([...S(), "tasks", "list", "--action", action]);
      expect(r.code).to.equal(0);
      expect(r.stdout).to.not.contain(ESC);
      const rows = r.stdout
        .trimEnd()
        .split("\n")
        .map((l) => l.split(/\s{2,}/));
      const iso = (t: Task) => new Date(Number(t.created!.seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
      expect(rows[0]).to.deep.equal(["ID", "ACTION", "STATUS", "RESULT", "CREATED", "AGE"]);
      expect(rows.slice(1).map((c) => c.slice(0, 5))).to.deep.equal([
        [a.taskId.slice(0, 8), action, "QUEUED", "INCOMPLETE", iso(a)],
        [b.taskId.slice(0, 8), action, "COMPLETE", "PARTIAL_SUCCESS", iso(b)],
      ]);
      for (const row of rows.slice(1)) expect(row[5]).to.match(/^\d+s$/);
      const wide = await run([...S(), "tasks", "list", "--action", action, "-o", "wide"]);
      expect(wide.stdout.split("\n")[0]!.split(/\s{2,}/)).to.deep.equal([
        "ID",
        "ACTION",
        "STATUS",
        "RESULT",
        "ERRORS",
        "SUBTASKS",
        "PARENT",
        "CREATED",
        "AGE",
        "CREATED BY",
        "CLAIMED BY",
      ]);
      expect(wide.stdout.split("\n")[1]).to.contain(a.taskId);
    });

    it("pages through the server's keyset tokens: --limit stops early, --all reads every page", async () => {
      const action = unique();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await h.client.createTask({ action })).task!.taskId);
      const listed = async (...extra: string[]) =>
        (JSON.parse((await run([...S(), "tasks", "list", "--action", action, "-o", "json", ...extra])).stdout) as { taskId: string }[]).map((t) => t.taskId);
      expect(await listed("--all", "--page-size", "2")).to.deep.equal(ids);
      expect(await listed("--limit", "3", "--page-size", "2")).to.deep.equal(ids.slice(0, 3));
      expect(await listed("--limit", "4")).to.deep.equal(ids.slice(0, 4));
    });
  });

  describe("tasks list: more than shown, --newest, --since", () => {
    const NOTE_OLDEST = (n: number) =>
      `showing the oldest ${n} matching tasks; more match: --newest shows the newest, --since narrows by creation time, --limit N shows more, --all every one\n`;
    const ids = (stdout: string) => (JSON.parse(stdout) as { taskId: string }[]).map((t) => t.taskId);

    it("says on stderr when more tasks match than the limit, and how to see them; nothing when none do", async () => {
      const action = unique();
      const made: string[] = [];
      for (let i = 0; i < 4; i++) made.push((await h.client.createTask({ action })).task!.taskId);
      const r = await run([...S(), "tasks", "list", "--action", action, "--limit", "3"]);
      expect([r.code, r.stderr]).to.deep.equal([0, NOTE_OLDEST(3)]);
      expect(
        r.stdout
          .trimEnd()
          .split("\n")
          .slice(1)
          .map((l) => l.split(/\s+/)[0]),
      ).to.deep.equal(made.slice(0, 3).map((id) => id.slice(0, 8)));
      const paged = await run([...S(), "tasks", "list", "--action", action, "--limit", "3", "--page-size", "2", "-o", "json"]);
      expect([paged.code, ids(paged.stdout), paged.stderr]).to.deep.equal([0, made.slice(0, 3), NOTE_OLDEST(3)]);
      for (const extra of [["--limit", "4"], ["--limit", "4", "--page-size", "2"], ["--all"], []]) {
        const all = await run([...S(), "tasks", "list", "--action", action, "-o", "json", ...extra]);
        expect([all.code, ids(all.stdout), all.stderr], extra.join(" ")).to.deep.equal([0, made, ""]);
      }
    });

    it("--newest: the newest tasks, newest first, with how many match", async () => {
      const action = unique();
      const made: string[] = [];
      for (let i = 0; i < 5; i++) made.push((await h.client.createTask({ action })).task!.taskId);
      const newestFirst = [...made].reverse();
      for (const extra of [[], ["--page-size", "1"]]) {
        const r = await run([...S(), "tasks", "list", "--action", action, "--newest", "--limit", "2", "-o", "json", ...extra]);
        expect([r.code, ids(r.stdout), r.stderr]).to.deep.equal([
          0,
          newestFirst.slice(0, 2),
          "showing the newest 2 of 5 matching tasks, newest first; --limit N shows more, --all every one\n",
        ]);
      }
      const all = await run([...S(), "tasks", "list", "--action", action, "--newest", "--all", "-o", "json", "--page-size", "2"]);
      expect([all.code, ids(all.stdout), all.stderr]).to.deep.equal([0, newestFirst, ""]);
      const table = await run([...S(), "tasks", "list", "--action", action, "--newest"]);
      expect(
        table.stdout
          .trimEnd()
          .split("\n")
          .slice(1)
          .map((l) => l.split(/\s+/)[0]),
      ).to.deep.equal(newestFirst.map((id) => id.slice(0, 8)));
    });

    it("--since: only tasks created since a UTC time or for an age; a bad value is exit 2", async () => {
      const action = unique();
      const ms = (t: Task) => Number(t.created!.seconds) * 1000 + Math.floor(t.created!.nanos / 1e6);
      const a = (await h.client.createTask({ action })).task!;
      let b = (await h.client.createTask({ action })).task!;
      const before = [a.taskId];
      // Until one was created in a later millisecond than a (the CLI's times have milliseconds).
      while (ms(b) <= ms(a)) {
        before.push(b.taskId);
        b = (await h.client.createTask({ action })).task!;
      }
      const since = new Date(ms(b)).toISOString();
      const r = await run([...S(), "tasks", "list", "--action", action, "--since", since, "-o", "json"]);
      expect([r.code, ids(r.stdout), r.stderr]).to.deep.equal([0, [b.taskId], ""]);
      const hour = await run([...S(), "tasks", "list", "--action", action, "--since", "1h", "-o", "json"]);
      expect(ids(hour.stdout)).to.deep.equal([...before, b.taskId]);
      const future = await run([...S(), "tasks", "list", "--action", action, "--since", "2999-01-01"]);
      expect([future.code, future.stdout, future.stderr]).to.deep.equal([0, "", "no tasks match\n"]);
      const bad = await run([...S(), "tasks", "list", "--since", "yesterday"]);
      expect([bad.code, bad.stderr]).to.deep.equal([
        2,
        "error: option '--since <when>' argument 'yesterday' is invalid. expected an age such as 30m, 2h, 7d, or a UTC date or time such as 2026-12-01 or 2026-12-01T08:00:00Z\n",
      ]);
    });

    it("tasks get --errors: the error messages only, from the server's errors-only view", async () => {
      const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      await append(id, 1, 6, (i) => i === 2 || i === 5);
      const j = await run([...S(), "tasks", "get", id, "--errors", "-o", "json"]);
      const { messages } = await h.client.listResultMessages({ taskId: id, errorsOnly: true });
      expect(messages.map((m) => m.sequence)).to.deep.equal([2n, 5n]);
      expect([j.code, (JSON.parse(j.stdout) as { resultMessages: unknown }).resultMessages]).to.deep.equal([
        0,
        messages.map((m) => toJson(ResultMessageSchema, m)),
      ]);
      const t = await run([...S(), "tasks", "get", id, "--errors"]);
      const lines = t.stdout.trimEnd().split("\n");
      const at = lines.indexOf("Error messages (2):");
      expect(at).to.be.greaterThan(0);
      expect(lines.slice(at + 2).map((l) => l.split(/\s{2,}/).filter((_, i) => i !== 1))).to.deep.equal([
        ["2", "node n2", "ERROR message 2"],
        ["5", "node n2", "ERROR message 5"],
      ]);
    });
  });

  describe("tasks get, create, terminate", () => {
    it("get -o json is the task as the server holds it; --messages and --tree add messages and the subtask tree", async () => {
      const root = (await h.client.createTask({ action: "deploy_nodes" })).task!;
      const child = (await h.client.createTask({ action: "prepare_node", parentTaskId: root.taskId })).task!;
      const grandchild = (await h.client.createTask({ action: "configure_hardware", parentTaskId: child.taskId })).task!;
      await finish(grandchild.taskId, ActionResult.SUCCESS);
      await append(root.taskId, 1, 3, (i) => i === 2);
      const plain = await run([...S(), "tasks", "get", root.taskId, "-o", "json"]);
      expect(plain.code).to.equal(0);
      const server = (await h.client.getTask({ taskId: root.taskId })).task!;
      expect(JSON.parse(plain.stdout)).to.deep.equal({ task: toJson(TaskSchema, server) });

      const full = JSON.parse((await run([...S(), "tasks", "get", root.taskId, "--messages", "--tree", "-o", "json"])).stdout) as Record<string, unknown>;
      const { messages } = await h.client.listResultMessages({ taskId: root.taskId });
      expect(full.resultMessages).to.deep.equal(messages.map((m) => toJson(ResultMessageSchema, m)));
      const get = async (id: string) => toJson(TaskSchema, (await h.client.getTask({ taskId: id })).task!);
      expect(full.subtasks).to.deep.equal([{ task: await get(child.taskId), subtasks: [{ task: await get(grandchild.taskId), subtasks: [] }] }]);
    });

    it("get shows the task's fields, its subtask tree with statuses and its messages", async () => {
      const root = (await h.client.createTask({ action: "deploy_nodes", designRef: "file:///site.yaml" })).task!;
      const a = (await h.client.createTask({ action: "prepare_node", parentTaskId: root.taskId })).task!;
      const b = (await h.client.createTask({ action: "deploy_node", parentTaskId: root.taskId })).task!;
      await finish(a.taskId, ActionResult.FAILURE);
      await append(root.taskId, 1, 2, (i) => i === 2);
      const r = await run([...S(), "tasks", "get", root.taskId, "--tree", "--messages"]);
      expect(r.code).to.equal(0);
      const lines = r.stdout.split("\n");
      for (const l of [
        `Task:     ${root.taskId}`,
        "Action:   deploy_nodes",
        "Status:   REQUESTED",
        "Result:   INCOMPLETE",
        "Errors:   1",
        "Subtasks: 2",
        "Design:   file:///site.yaml",
      ])
        expect(lines).to.include(l);
      const tree = lines.indexOf("Subtask tree:");
      expect(lines.slice(tree + 1, tree + 4)).to.deep.equal([
        `deploy_nodes ${root.taskId.slice(0, 8)} REQUESTED INCOMPLETE`,
        `├─ prepare_node ${a.taskId.slice(0, 8)} COMPLETE FAILURE`,
        `└─ deploy_node ${b.taskId.slice(0, 8)} REQUESTED INCOMPLETE`,
      ]);
      const msgs = lines.indexOf("Messages (2):");
      expect(lines[msgs + 1]!.split(/\s{2,}/)).to.deep.equal(["SEQ", "TIME", "CONTEXT", "MESSAGE"]);
      expect(lines[msgs + 2]!.split(/\s{2,}/).filter((_, i) => i !== 1)).to.deep.equal(["1", "node n1", "message 1"]);
      expect(lines[msgs + 3]!.split(/\s{2,}/).filter((_, i) => i !== 1)).to.deep.equal(["2", "node n2", "ERROR message 2"]);
    });

    it("create stores the action, design, node filter and status given; terminate marks it", async () => {
      const dir = mkdtempSync(path.join(tmpdir(), "statemgmt-cli-"));
      const filter = path.join(dir, "nodes.json");
      writeFileSync(
        filter,
        JSON.stringify({ filterSetType: "FILTER_SET_TYPE_UNION", filterSet: [{ filterType: "FILTER_SET_TYPE_UNION", nodeNames: ["n1", "n2"] }] }),
      );
      const r = await run([...S(), "tasks", "create", "deploy_nodes", "--queued", "--design-ref", "file:///site.yaml", "--node-filter", filter, "-o", "json"]);
      expect(r.code, r.stderr).to.equal(0);
      const printed = JSON.parse(r.stdout) as { taskId: string };
      const stored = (await h.client.getTask({ taskId: printed.taskId })).task!;
      expect(printed).to.deep.equal(toJson(TaskSchema, stored));
      expect([stored.action, stored.status, stored.designRef, stored.nodeFilter?.filterSet[0]?.nodeNames]).to.deep.equal([
        "deploy_nodes",
        TaskStatus.QUEUED,
        "file:///site.yaml",
        ["n1", "n2"],
      ]);

      const t = await run([...S(), "tasks", "terminate", printed.taskId]);
      expect(t.code).to.equal(0);
      // A task no orchestrator holds goes to TERMINATING at once.
      expect(t.stdout).to.match(/^Status:\s+TERMINATING$/m);
      expect(t.stdout).to.match(/^Terminated:\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/m);
      const after = (await h.client.getTask({ taskId: printed.taskId })).task!;
      expect([after.terminate, after.status]).to.deep.equal([true, TaskStatus.TERMINATING]);

      const bad = await run([...S(), "tasks", "create", "deploy_nodes", "--node-filter", path.join(dir, "missing.json")]);
      expect(bad.code).to.equal(2);
      expect(bad.stderr).to.match(/^error: cannot read --node-filter .*missing\.json: ENOENT[^\n]*\n$/);
    });
  });

  describe("task id prefixes", () => {
    const hex = (n: number) => randomUUID().replace(/-/g, "").slice(0, n);

    it("a unique prefix (the 8 characters tables show) names the task wherever a task id is taken", async () => {
      const root = (await h.client.createTask({ action: "deploy_nodes" })).task!;
      const child = (await h.client.createTask({ action: "prepare_node", parentTaskId: root.taskId })).task!;
      await finish(child.taskId, ActionResult.SUCCESS);
      const short = root.taskId.slice(0, 8);
      const full = await run([...S(), "tasks", "get", root.taskId, "-o", "json"]);
      const byPrefix = await run([...S(), "tasks", "get", short, "-o", "json"]);
      expect([byPrefix.code, byPrefix.stderr, byPrefix.stdout]).to.deep.equal([0, "", full.stdout]);
      // Upper case, with a dash, and without the dashes.
      for (const p of [short.toUpperCase(), root.taskId.slice(0, 11), root.taskId.replace(/-/g, "").slice(0, 12)]) {
        const r = await run([...S(), "tasks", "get", p, "-o", "json"]);
        expect([r.code, JSON.parse(r.stdout).task.taskId], p).to.deep.equal([0, root.taskId]);
      }
      const listed = await run([...S(), "tasks", "list", "--parent", short, "-o", "json"]);
      expect((JSON.parse(listed.stdout) as { taskId: string }[]).map((t) => t.taskId)).to.deep.equal([child.taskId]);
      const watched = await run([...S(), "tasks", "watch", child.taskId.slice(0, 8)]);
      expect([watched.code, watched.stderr]).to.deep.equal([0, ""]);
      const made = await run([...S(), "tasks", "create", "deploy_node", "--parent", short, "-o", "json"]);
      expect((JSON.parse(made.stdout) as { parentTaskId: string }).parentTaskId).to.equal(root.taskId);
      const node = unique();
      const data = (
        await h.client.createBuildData({
          buildData: { nodeName: node, taskId: root.taskId, generator: "lshw", dataFormat: "text/plain", dataElement: new TextEncoder().encode("x") },
        })
      ).buildData!;
      const bd = await run([...S(), "builddata", "list", "--task", short, "-o", "json"]);
      expect((JSON.parse(bd.stdout) as { buildDataId: string }[]).map((b) => b.buildDataId)).to.deep.equal([String(data.buildDataId)]);
      await h.client.setBootActionContext({ nodeName: node, taskId: root.taskId });
      await h.client.createBootActions({ nodeName: node, taskId: root.taskId, actions: [{ actionName: "motd", signalling: false }] });
      const ba = await run([...S(), "bootactions", "list", "--task", short, "-o", "json"]);
      expect((JSON.parse(ba.stdout) as { actionName: string }[]).map((a) => a.actionName)).to.deep.equal(["motd"]);
      const t = await run([...S(), "tasks", "terminate", short, "-o", "json"]);
      expect([t.code, (JSON.parse(t.stdout) as { terminate: boolean }).terminate]).to.deep.equal([0, true]);
    });

    it("an ambiguous prefix lists the candidates (exit 2); a prefix of no task is NOT_FOUND (exit 4)", async () => {
      const p = hex(6);
      const a = (await h.client.createTask({ action: "deploy_nodes", taskId: `${p}aa-0000-4000-8000-000000000001` })).task!;
      const b = (await h.client.createTask({ action: "prepare_node", taskId: `${p}ab-0000-4000-8000-000000000002`, initialStatus: TaskStatus.QUEUED })).task!;
      const iso = (t: Task) => new Date(Number(t.created!.seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
      const r = await run([...S(), "tasks", "get", p]);
      expect(r.code).to.equal(2);
      expect(r.stdout).to.equal("");
      expect(r.stderr).to.equal(
        `error: task id ${p} is ambiguous: 2 tasks' ids start with it; give more of the id:\n` +
          `  ${a.taskId}  deploy_nodes  REQUESTED  ${iso(a)}\n` +
          `  ${b.taskId}  prepare_node  QUEUED  ${iso(b)}\n`,
      );
      const w = await run([...S(), "tasks", "list", "--parent", p]);
      expect([w.code, w.stderr.split("\n")[0]]).to.deep.equal([2, `error: --parent ${p} is ambiguous: 2 tasks' ids start with it; give more of the id:`]);
      const one = await run([...S(), "tasks", "get", `${p}ab`, "-o", "json"]);
      expect([one.code, JSON.parse(one.stdout).task.taskId]).to.deep.equal([0, b.taskId]);
      const none = `${p}ff`;
      const nf = await run([...S(), "tasks", "get", none]);
      expect([nf.code, nf.stdout, nf.stderr]).to.deep.equal([4, "", `error: NOT_FOUND: no task's id starts with ${none}\n`]);
    });
  });

  describe("tasks watch", () => {
    it("prints each of 500 messages appended meanwhile once, in order, then exits 0 on SUCCESS; no escape codes off a terminal", async () => {
      const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      const w = cli([...S(), "tasks", "watch", id]);
      // The first snapshot: the stream is established.
      await w.line((l) => l.startsWith("task deploy_nodes "), "the first snapshot");
      for (let i = 1; i <= 500; i += 10) await append(id, i, 10, (n) => n % 100 === 0);
      await finish(id, ActionResult.SUCCESS, "all done");
      expect(await w.exited).to.equal(0);
      const out = w.stdout();
      expect(out).to.not.contain(ESC);
      const lines = out.trimEnd().split("\n");
      const msgs = lines.filter((l) => l.startsWith("#"));
      expect(msgs.map(seqOf)).to.deep.equal(Array.from({ length: 500 }, (_, i) => i + 1));
      expect(msgs[99]).to.match(/^#100 \d\d:\d\d:\d\d\.\d{3} \[node n1\] ERROR message 100$/);
      expect(msgs[0]).to.match(/^#1 \d\d:\d\d:\d\d\.\d{3} \[node n1\] message 1$/);
      expect(lines[lines.length - 1]).to.equal(`task deploy_nodes ${id.slice(0, 8)} COMPLETE SUCCESS errors 5 "all done"`);
    });

    it("through a connection cut twice mid-way: still every message once, in order (-o json)", async function () {
      this.timeout(60_000);
      const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      const proxy = await TcpProxy.start("127.0.0.1", h.server.port);
      try {
        const w = cli(["--server", `127.0.0.1:${proxy.port}`, "-o", "json", "tasks", "watch", id]);
        await w.line((l) => l.startsWith('{"task"'), "the first snapshot");
        const appending = (async () => {
          for (let i = 1; i <= 500; i += 5) await append(id, i, 5);
        })();
        const seqAtLeast = (n: number) => (l: string) =>
          l.startsWith('{"message"') && Number((JSON.parse(l) as { message: { sequence: string } }).message.sequence) >= n;
        await w.line(seqAtLeast(100), "message 100");
        proxy.cut();
        proxy.resume();
        await w.line(seqAtLeast(300), "message 300");
        proxy.cut();
        proxy.resume();
        await appending;
        await finish(id, ActionResult.SUCCESS);
        expect(await w.exited, w.stderr()).to.equal(0);
        const events = w
          .stdout()
          .trimEnd()
          .split("\n")
          .map((l) => JSON.parse(l) as { task?: { status: string }; message?: { sequence: string; message: string } });
        const seqs = events.filter((e) => e.message).map((e) => Number(e.message!.sequence));
        expect(seqs).to.deep.equal(Array.from({ length: 500 }, (_, i) => i + 1));
        expect(events.filter((e) => e.message).every((e) => e.message!.message === `message ${e.message!.sequence}`)).to.equal(true);
        expect(events[events.length - 1]!.task?.status).to.equal("TASK_STATUS_COMPLETE");
        // Both cuts were noticed and resumed (the notes go to stderr, never into the JSON).
        expect(w.stderr().match(/^reconnecting after UNAVAILABLE; resuming after sequence \d+$/gm)?.length ?? 0).to.be.at.least(2);
      } finally {
        await proxy.close();
      }
    });

    it("a long outage: one note when reconnecting starts and one when it is back, not one per attempt (tasks watch and leader --watch)", async function () {
      this.timeout(90_000);
      const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      const election = unique();
      const gate = await Gate.start(h.server.port);
      try {
        const server = ["--server", `127.0.0.1:${gate.port}`];
        const w = cli([...server, "tasks", "watch", id]);
        const l = cli([...server, "leader", "--election", election, "--watch"]);
        await w.line((x) => x.startsWith("task deploy_nodes "), "the first snapshot");
        await l.line((x) => x.endsWith(`${election} no leader`), "no leader");
        await append(id, 1, 3);
        await w.line((x) => seqOf(x) === 3, "message 3");
        gate.goDown();
        // Several connection attempts of each CLI refused: a dozen failed stream attempts or more.
        await gate.refused(6);
        gate.comeBack();
        const back = /^reconnected after \d+\.\ds \((\d+) failed attempts?\)$/m;
        await new Promise<void>((resolve, reject) => {
          // Checked as each stderr chunk arrives (after watchOutput's own listener has added it); a
          // second "reconnecting" note is a failure, seen below.
          const again = (e: string) => (e.match(/^reconnecting after /gm)?.length ?? 0) > 1;
          const check = () => ((back.test(w.stderr()) && back.test(l.stderr())) || again(w.stderr()) || again(l.stderr())) && resolve();
          Promise.race([w.exited, l.exited]).then(
            () => reject(new Error(`a CLI exited: ${w.stderr()} ${l.stderr()}`)),
            () => {},
          );
          w.child.stderr!.on("data", check);
          l.child.stderr!.on("data", check);
          check();
        });
        expect(w.stderr().match(/^reconnecting after /gm)).to.have.length(1);
        expect(l.stderr().match(/^reconnecting after /gm)).to.have.length(1);
        await append(id, 4, 2);
        await finish(id, ActionResult.SUCCESS);
        expect(await w.exited, w.stderr()).to.equal(0);
        l.child.kill("SIGINT");
        expect(await l.exited).to.equal(130);
        expect(
          w
            .stdout()
            .split("\n")
            .filter((x) => x.startsWith("#"))
            .map(seqOf),
        ).to.deep.equal([1, 2, 3, 4, 5]);
        const notes = w.stderr().trimEnd().split("\n");
        expect(notes).to.have.length(2);
        expect(notes[0]).to.equal("reconnecting after UNAVAILABLE; resuming after sequence 3");
        expect(notes[1]).to.match(back);
        expect(Number(back.exec(notes[1]!)![1])).to.be.at.least(2);
        const leaderNotes = l.stderr().trimEnd().split("\n");
        expect(leaderNotes).to.have.length(2);
        expect(leaderNotes[0]).to.equal("reconnecting after UNAVAILABLE");
        expect(leaderNotes[1]).to.match(back);
      } finally {
        await gate.close();
      }
    });

    it("exit codes per result: 1 FAILURE, 1 PARTIAL_SUCCESS, 3 TERMINATED, 4 NOT_FOUND; --after-sequence skips what was seen", async () => {
      const failed = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      await append(failed, 1, 10);
      await finish(failed, ActionResult.FAILURE);
      const r = await run([...S(), "tasks", "watch", failed, "--after-sequence", "7"]);
      expect(r.code).to.equal(1);
      expect(
        r.stdout
          .split("\n")
          .filter((l) => l.startsWith("#"))
          .map(seqOf),
      ).to.deep.equal([8, 9, 10]);

      const partial = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      await finish(partial, ActionResult.PARTIAL_SUCCESS);
      expect((await run([...S(), "tasks", "watch", partial])).code).to.equal(1);

      const terminated = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      await h.client.terminateTask({ taskId: terminated });
      await h.client.updateTask({ task: { taskId: terminated, status: TaskStatus.TERMINATED }, updateMask: { paths: ["status"] } });
      const t = await run([...S(), "tasks", "watch", terminated]);
      expect(t.code).to.equal(3);
      expect(t.stdout.trimEnd().split("\n").pop()).to.equal(`task deploy_nodes ${terminated.slice(0, 8)} TERMINATED INCOMPLETE`);

      const missing = randomUUID();
      const nf = await run([...S(), "tasks", "watch", missing]);
      expect([nf.code, nf.stderr]).to.deep.equal([4, `error: NOT_FOUND TASK_NOT_FOUND: Task ${missing} does not exist\n`]);
    });

    it("Ctrl-C (SIGINT) ends a watch cleanly with exit 130; the task goes on", async () => {
      const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      const w = cli([...S(), "tasks", "watch", id]);
      await w.line((l) => l.startsWith("task deploy_nodes "), "the first snapshot");
      w.child.kill("SIGINT");
      expect(await w.exited).to.equal(130);
      expect(w.stderr()).to.equal("");
      expect((await h.client.getTask({ taskId: id })).task!.status).to.equal(TaskStatus.REQUESTED);
    });

    describe("on a terminal", () => {
      before(function () {
        if (!HAS_SCRIPT) this.skip();
      });
      const COLS = 100;
      const ROWS = 20;

      it("draws the header and the progress bar in place above the newest messages; the final screen shows the finished task", async () => {
        const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
        const subs = [];
        for (let i = 0; i < 2; i++)
          subs.push((await h.client.createTask({ action: "prepare_node", parentTaskId: id, initialStatus: TaskStatus.QUEUED })).task!.taskId);
        const w = cliOnTerminal([...S(), "tasks", "watch", id], COLS, ROWS);
        await w.shows("subtasks [░░░░░░░░░░░░░░░░░░░░] 0/2");
        await finish(subs[0]!, ActionResult.SUCCESS);
        await w.shows("subtasks [██████████░░░░░░░░░░] 1/2");
        await append(id, 1, 30, (i) => i === 29);
        await w.shows("messages 30  errors 1");
        await finish(subs[1]!, ActionResult.SUCCESS);
        await finish(id, ActionResult.SUCCESS, "all good");
        expect(await w.exited, w.stdout()).to.equal(0);
        const raw = w.stdout();
        // Redrawn in place (cursor up, erase line), with colours.
        // biome-ignore lint/suspicious/noControlCharactersInRegex: a terminal escape sequence (cursor up) starts with ESC
        expect(raw).to.match(/\x1b\[\d*A/);
        // biome-ignore lint/suspicious/noControlCharactersInRegex: a terminal escape sequence (erase line) starts with ESC
        expect(raw).to.match(/\x1b\[2K/);
        expect(raw).to.contain("\x1b[32mCOMPLETE");
        const s = await screen(raw.replace(/\r?\n/g, "\r\n"), COLS, ROWS);
        expect(s[0]).to.match(new RegExp(`^deploy_nodes  COMPLETE  SUCCESS  elapsed \\d\\d:\\d\\d:\\d\\d  ${id}$`));
        expect(s[1]).to.equal("subtasks [████████████████████] 2/2  messages 30  errors 1");
        expect(s[2]).to.equal("task finished: SUCCESS — all good");
        expect(s[3]).to.equal("─".repeat(COLS));
        // The newest messages that fit: 20 rows less 4 header lines, the cursor's line and one for the prompt.
        const shown = s.slice(4).filter((l) => l.startsWith("#"));
        expect(shown.map(seqOf)).to.deep.equal(Array.from({ length: 14 }, (_, i) => 17 + i));
        expect(s.find((l) => l.startsWith("#29 "))).to.match(/^#29 \d\d:\d\d:\d\d\.\d{3} \[node n2\] ERROR message 29$/);
      });

      it("Ctrl-C typed on the terminal ends it with exit 130 and a final frame", async () => {
        const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
        const w = cliOnTerminal([...S(), "tasks", "watch", id], COLS, ROWS);
        await w.shows("subtasks none");
        w.child.stdin!.write("\x03");
        expect(await w.exited).to.equal(130);
        const s = await screen(w.stdout().replace(/\r?\n/g, "\r\n"), COLS, ROWS);
        expect(s).to.include("interrupted (Ctrl-C); the task goes on");
        // The cursor log-update hid is shown again.
        expect(w.stdout().lastIndexOf("\x1b[?25h")).to.be.greaterThan(w.stdout().lastIndexOf("\x1b[?25l"));
      });

      it("with NO_COLOR: plain lines, no escape codes, even on a terminal", async () => {
        const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
        await append(id, 1, 3);
        await finish(id, ActionResult.SUCCESS);
        const w = cliOnTerminal([...S(), "tasks", "watch", id], COLS, ROWS, { NO_COLOR: "1" });
        expect(await w.exited).to.equal(0);
        expect(w.stdout()).to.not.contain(ESC);
        expect(
          w
            .stdout()
            .trimEnd()
            .split(/\r?\n/)
            .filter((l) => l.startsWith("#"))
            .map(seqOf),
        ).to.deep.equal([1, 2, 3]);
      });
    });
  });

  describe("tasks watch-all", () => {
    it("prints a snapshot per change of a matching task, and the last one of a task leaving the filter", async () => {
      const action = unique();
      const w = cli([...S(), "-o", "json", "tasks", "watch-all", "--action", action, "--status", "queued,running"]);
      const id = (await h.client.createTask({ action, initialStatus: TaskStatus.QUEUED })).task!.taskId;
      const status = (s: string) => (l: string) => {
        const t = (JSON.parse(l) as { task: { taskId: string; status: string } }).task;
        return t.taskId === id && t.status === s;
      };
      await w.line(status("TASK_STATUS_QUEUED"), "QUEUED");
      await h.client.claimNextTask({ instanceId: "orch-cli", actions: [action] });
      await w.line(status("TASK_STATUS_RUNNING"), "RUNNING");
      await finish(id, ActionResult.SUCCESS);
      await w.line(status("TASK_STATUS_COMPLETE"), "COMPLETE");
      w.child.kill("SIGINT");
      expect(await w.exited).to.equal(130);
      expect(w.stdout()).to.not.contain(ESC);
    });
  });

  describe("leader, builddata, design, health", () => {
    it("leader: a table row and the server's JSON; --watch prints each new term", async () => {
      const election = unique();
      const none = await run([...S(), "leader", "--election", election]);
      expect(
        none.stdout
          .trimEnd()
          .split("\n")
          .map((l) => l.split(/\s{2,}/)),
      ).to.deep.equal([
        ["ELECTION", "LEADER", "TERM", "ACQUIRED", "RENEWED", "EXPIRES"],
        [election, "-", "-", "-", "-", "-"],
      ]);
      const w = cli([...S(), "leader", "--election", election, "--watch"]);
      await w.line((l) => l.endsWith(`${election} no leader`), "no leader");
      const { leader } = await h.client.claimLeadership({ election, instanceId: "orch-1", ttl: { seconds: 60n } });
      await w.line((l) => l.includes(`${election} leader orch-1 term ${leader!.term} expires `), "the new term");
      w.child.kill("SIGINT");
      expect(await w.exited).to.equal(130);
      const j = await run([...S(), "leader", "--election", election, "-o", "json"]);
      const current = (await h.client.getLeader({ election })).leader!;
      expect(JSON.parse(j.stdout)).to.deep.equal({ leader: toJson(LeaderSchema, current) });
      const row = (await run([...S(), "leader", "--election", election])).stdout.split("\n")[1]!.split(/\s{2,}/);
      expect(row.slice(0, 3)).to.deep.equal([election, "orch-1", String(current.term)]);
    });

    it("builddata list (table and JSON) and get (the exact bytes, to stdout or -f FILE)", async () => {
      const node = unique();
      const taskId = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      const bytes = new Uint8Array(Array.from({ length: 256 }, (_, i) => i));
      const older = (
        await h.client.createBuildData({
          buildData: {
            nodeName: node,
            taskId,
            generator: "lshw",
            dataFormat: "application/octet-stream",
            dataElement: bytes,
            collectedAt: { seconds: 1_700_000_000n },
          },
        })
      ).buildData!;
      const newer = (
        await h.client.createBuildData({
          buildData: { nodeName: node, taskId, generator: "lldp", dataFormat: "text/plain", dataElement: new TextEncoder().encode("lldp data") },
        })
      ).buildData!;
      const j = await run([...S(), "builddata", "list", "--node", node, "-o", "json"]);
      const { buildData } = await h.client.listBuildData({ nodeName: node, view: 1 });
      expect(JSON.parse(j.stdout)).to.deep.equal(buildData.map((b) => toJson(BuildDataSchema, b)));
      expect(buildData.map((b) => b.buildDataId)).to.deep.equal([newer.buildDataId, older.buildDataId]);
      const t = await run([...S(), "builddata", "list", "--node", node]);
      expect(
        t.stdout
          .trimEnd()
          .split("\n")
          .map((l) => l.split(/\s{2,}/)),
      ).to.deep.equal([
        ["ID", "NODE", "GENERATOR", "FORMAT", "COLLECTED", "TASK"],
        [
          String(newer.buildDataId),
          node,
          "lldp",
          "text/plain",
          new Date(Number(newer.collectedAt!.seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"),
          taskId.slice(0, 8),
        ],
        [String(older.buildDataId), node, "lshw", "application/octet-stream", "2023-11-14T22:13:20Z", taskId.slice(0, 8)],
      ]);
      // Raw bytes on stdout: read as latin1 so each byte is one character.
      const raw = cli([...S(), "builddata", "get", "--node", node, "--generator", "lshw"]);
      raw.child.stdout!.setEncoding("latin1");
      expect(await raw.exited).to.equal(0);
      expect(Buffer.from(raw.stdout(), "latin1")).to.deep.equal(Buffer.from(bytes));
      const file = path.join(mkdtempSync(path.join(tmpdir(), "statemgmt-cli-")), "lldp.txt");
      const f = await run([...S(), "builddata", "get", "--node", node, "-f", file]);
      expect([f.code, f.stdout, readFileSync(file, "utf8")]).to.deep.equal([0, "", "lldp data"]);
      const nf = await run([...S(), "builddata", "get", "--node", node, "--generator", "ipmi"]);
      expect([nf.code, nf.stderr]).to.deep.equal([4, `error: NOT_FOUND: no build data for node ${node}, generator ipmi\n`]);
      expect((await run([...S(), "builddata", "list"])).code).to.equal(2);
    });

    it("bootactions list (table and JSON) and get; an unknown action exits 4", async () => {
      const node = unique();
      const taskId = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      const key = (await h.client.setBootActionContext({ nodeName: node, taskId })).generatedIdentityKey;
      const { bootActions } = await h.client.createBootActions({
        nodeName: node,
        taskId,
        actions: [
          { actionName: "promjoin", signalling: true },
          { actionName: "motd", signalling: false },
        ],
      });
      const reported = (await h.client.reportBootActionStatus({ actionId: bootActions[0]!.actionId, identityKey: key, status: 2 })).bootAction!;
      const j = await run([...S(), "bootactions", "list", "--node", node, "-o", "json"]);
      const listed = (await h.client.listBootActions({ nodeName: node })).bootActions;
      expect(JSON.parse(j.stdout)).to.deep.equal(listed.map((a) => toJson(BootActionSchema, a)));
      const iso = (ts: { seconds: bigint } | undefined) => new Date(Number(ts!.seconds) * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
      const t = await run([...S(), "bootactions", "list", "--task", taskId]);
      expect(
        t.stdout
          .trimEnd()
          .split("\n")
          .map((l) => l.split(/\s{2,}/)),
      ).to.deep.equal([
        ["ACTION ID", "NODE", "NAME", "STATUS", "CREATED", "REPORTED", "TASK"],
        [bootActions[0]!.actionId, node, "promjoin", "success", iso(bootActions[0]!.created), iso(reported.reported), taskId.slice(0, 8)],
        [bootActions[1]!.actionId, node, "motd", "unreported", iso(bootActions[1]!.created), "-", taskId.slice(0, 8)],
      ]);
      const g = await run([...S(), "bootactions", "get", bootActions[1]!.actionId, "-o", "json"]);
      expect(JSON.parse(g.stdout)).to.deep.equal(toJson(BootActionSchema, listed[1]!));
      const nf = await run([...S(), "bootactions", "get", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
      expect([nf.code, nf.stderr]).to.deep.equal([4, "error: NOT_FOUND BOOT_ACTION_NOT_FOUND: boot action 01ARZ3NDEKTSV4RRFFQ69G5FAV does not exist\n"]);
      expect((await run([...S(), "bootactions", "list"])).code).to.equal(2);
    });

    it("design fetch writes the design's bytes; NOT_FOUND exits 4", async () => {
      const file = path.join(designDir, "site.yaml");
      writeFileSync(file, "schema: drydock/Region/v1\n");
      const r = await run([...S(), "design", "fetch", `file://${file}`]);
      expect([r.code, r.stdout]).to.deep.equal([0, "schema: drydock/Region/v1\n"]);
      const missing = await run([...S(), "design", "fetch", `file://${designDir}/missing.yaml`]);
      expect(missing.code).to.equal(4);
      expect(missing.stderr).to.match(/^error: NOT_FOUND [A-Z_]+: design [^\n]*missing\.yaml does not exist\n$/);
    });

    it("health: SERVING, exit 0; -o json", async () => {
      expect(await run([...S(), "health"])).to.deep.include({ code: 0, stdout: "SERVING\n" });
      expect(JSON.parse((await run([...S(), "health", "-o", "json"])).stdout)).to.deep.equal({ status: "SERVING" });
    });
  });

  describe("output through a pipe", () => {
    it("a slow reader of 1 MB of build data gets every byte, as a file does (not the first 64 KiB)", async () => {
      const node = unique();
      const taskId = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      const data = new Uint8Array(1_000_000).map((_, i) => 32 + (i % 95));
      await h.client.createBuildData({ buildData: { nodeName: node, taskId, generator: "lshw", dataFormat: "text/plain", dataElement: data } });
      const args = [...S(), "builddata", "get", "--node", node];
      const file = await runToFile(args);
      expect([file.code, file.stdout.length, file.stderr]).to.deep.equal([0, 1_000_000, ""]);
      expect(file.stdout.equals(Buffer.from(data))).to.equal(true);
      const pipe = await runSlowReader(args);
      expect([pipe.code, pipe.stdout.length, pipe.stderr]).to.deep.equal([0, 1_000_000, ""]);
      expect(pipe.stdout.equals(file.stdout)).to.equal(true);
    });

    it("a slow reader of tasks get --tree of a 1,500-subtask deployment gets every line, as a file does", async function () {
      this.timeout(120_000);
      const root = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
      for (let i = 0; i < 1500; i += 100) {
        await Promise.all(Array.from({ length: 100 }, () => h.client.createTask({ action: "prepare_node", parentTaskId: root })));
      }
      const json = [...S(), "tasks", "get", root, "--tree", "-o", "json"];
      const file = await runToFile(json);
      expect(file.code, file.stderr).to.equal(0);
      expect((JSON.parse(file.stdout.toString()) as { subtasks: unknown[] }).subtasks).to.have.length(1500);
      const pipe = await runSlowReader(json);
      expect([pipe.code, pipe.stdout.length, pipe.stderr]).to.deep.equal([0, file.stdout.length, ""]);
      expect(pipe.stdout.toString()).to.equal(file.stdout.toString());

      // The text view: every line of the tree (the task's age may differ by a second between runs).
      const text = [...S(), "tasks", "get", root, "--tree"];
      const age = (b: Buffer) => b.toString().replace(/\(\d+[smhd] ago\)/, "(age)");
      const fileText = await runToFile(text);
      const pipeText = await runSlowReader(text);
      expect([fileText.code, pipeText.code]).to.deep.equal([0, 0]);
      expect(
        fileText.stdout
          .toString()
          .split("\n")
          .filter((l) => /^[├└]─ prepare_node /.test(l)),
      ).to.have.length(1500);
      expect(pipeText.stdout.length).to.be.greaterThan(65_536);
      expect(age(pipeText.stdout)).to.equal(age(fileText.stdout));
    });
  });

  describe("docs/cli.md", () => {
    it("documents every command and option of the CLI, and none it lacks", () => {
      const section = readFileSync(path.join(ROOT, "docs/cli.md"), "utf8");
      expect(section, "docs/cli.md is the CLI's page").to.match(/^# CLI\n/);
      const program = buildProgram(async () => {});
      const actual = new Set<string>();
      const walk = (cmd: typeof program, prefix: string) => {
        for (const o of cmd.options) if (o.long && o.long !== "--version") actual.add(o.long);
        for (const sub of cmd.commands) {
          const name = `${prefix} ${sub.name()}`.trim();
          expect(section, `docs/cli.md names "statemgmt ${name}"`).to.contain(`statemgmt ${name}`);
          walk(sub as typeof program, name);
        }
      };
      walk(program, "");
      for (const flag of actual) expect(section, `docs/cli.md documents ${flag}`).to.match(new RegExp(`(?<![\\w-])${flag}(?![\\w-])`));
      const documented = new Set(section!.match(/(?<![\w-])--[a-z][a-z-]*/g) ?? []);
      documented.delete("--help");
      for (const flag of documented) expect([...actual], `docs/cli.md's ${flag} is an option of the CLI`).to.include(flag);
    });
  });
});

describe("statemgmt tasks watch behind a small server buffer", function () {
  this.timeout(60_000);
  // The server ends a stream that falls 50 events behind (WATCH_BUFFER_FULL).
  const h = useServer({ watchBufferLimit: 50 });

  it("resumes after WATCH_BUFFER_FULL while its output was blocked: every message once, in order", async () => {
    const id = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    const w = cli(["--server", h.server.address, "tasks", "watch", id]);
    await w.line((l) => l.startsWith("task deploy_nodes "), "the first snapshot");
    // Stop reading its stdout: once the pipe is full the CLI blocks writing
    // (stdout to a pipe is synchronous on Linux), stops reading the stream, and
    // HTTP/2 flow control holds the server back until its buffer overflows.
    w.child.stdout!.pause();
    const big = "x".repeat(1000);
    for (let i = 0; i < 3; i++) {
      await h.client.appendResultMessages({ taskId: id, messages: Array.from({ length: 1000 }, (_, k) => ({ message: `${i * 1000 + k + 1} ${big}` })) });
    }
    await h.client.updateTask({
      task: { taskId: id, status: TaskStatus.COMPLETE, result: { status: ActionResult.SUCCESS } },
      updateMask: { paths: ["status", "result.status"] },
    });
    w.child.stdout!.resume();
    expect(await w.exited, w.stderr()).to.equal(0);
    expect(w.stderr()).to.match(/^reconnecting after RESOURCE_EXHAUSTED WATCH_BUFFER_FULL; resuming after sequence \d+$/m);
    const msgs = w
      .stdout()
      .split("\n")
      .filter((l) => l.startsWith("#"));
    expect(msgs.map(seqOf)).to.deep.equal(Array.from({ length: 3000 }, (_, i) => i + 1));
    for (const l of msgs) expect(l).to.match(/^#(\d+) \d\d:\d\d:\d\d\.\d{3} \1 x{1000}$/);
  });
});

describe("statemgmt errors that say what to do from the command line", function () {
  this.timeout(60_000);
  const dir = mkdtempSync(path.join(tmpdir(), "statemgmt-cli-hints-"));
  const token = randomUUID();
  const auth: AuthConfig = { tokensFile: path.join(dir, "tokens.json"), keystone: undefined, reflection: "open" };
  writeFileSync(auth.tokensFile!, JSON.stringify({ identities: [{ subject: "ops", roles: ["reader"], sha256: tokenHash(token) }] }));
  const tls: TlsFiles = { certFile: "", keyFile: "" };
  let caFile = "";
  before(async () => {
    const ca = await makeCa("statemgmt CLI test CA");
    Object.assign(tls, await writePair(dir, "server", await issue(ca, "statemgmt", "server")));
    caFile = path.join(dir, "ca.crt");
    writeFileSync(caFile, ca.cert);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  /** The CLI's error and hint lines (Node's own warnings left out). */
  const said = (stderr: string) => stderr.split("\n").filter((l) => /^(error|hint): /.test(l));

  describe("a server that needs a token", () => {
    const h = useServer({ auth });

    it("UNAUTHENTICATED: the server's message, then a hint naming --token and STATEMGMT_TOKEN; a refused token says so", async () => {
      const none = await run(["--server", h.server.address, "tasks", "list"]);
      expect([none.code, none.stdout, none.stderr]).to.deep.equal([
        7,
        "",
        "error: UNAUTHENTICATED: this server needs credentials: send the metadata `authorization: Bearer <token>`\n" +
          "hint: give the CLI a token with --token TOKEN or STATEMGMT_TOKEN=TOKEN (it sends it as `authorization: Bearer TOKEN`)\n",
      ]);
      const refused =
        "error: UNAUTHENTICATED TOKEN_INVALID: the token is unknown, expired or revoked\n" +
        "hint: the server refused the token given with --token or STATEMGMT_TOKEN: check that it is the whole token and that it has not expired or been revoked\n";
      const wrong = await run(["--server", h.server.address, "--token", "wrong", "tasks", "list"]);
      expect([wrong.code, wrong.stderr]).to.deep.equal([7, refused]);
      const wrongEnv = await run(["--server", h.server.address, "tasks", "watch", randomUUID()], { STATEMGMT_TOKEN: "wrong" });
      expect([wrongEnv.code, wrongEnv.stderr]).to.deep.equal([7, refused]);
      const ok = await run(["--server", h.server.address, "tasks", "list"], { STATEMGMT_TOKEN: token });
      expect([ok.code, ok.stderr]).to.deep.equal([0, "no tasks match\n"]);
    });
  });

  describe("a TLS server", () => {
    const h = useServer({ tls });

    it("a plaintext call: a hint to add --cacert or --tls; without the server's CA: a hint to give it with --cacert", async () => {
      const plain = await run(["--server", h.server.address, "tasks", "list"]);
      expect(plain.code).to.equal(6);
      expect(said(plain.stderr)).to.have.length(2);
      expect(said(plain.stderr)[0]).to.match(new RegExp(`^error: UNAVAILABLE: server ${h.server.address}: No connection established`));
      expect(said(plain.stderr)[1]).to.equal(
        `hint: ${h.server.address} did not take a plaintext connection: if it serves TLS, add --cacert FILE (the CA that issued its certificate) or --tls (the system's CAs)`,
      );
      const systemCas = await run(["--server", h.server.address, "--tls", "tasks", "list"]);
      expect([systemCas.code, said(systemCas.stderr)[1]]).to.deep.equal([
        6,
        "hint: the server's certificate did not verify against the system's CAs: give the CA that issued it with --cacert FILE",
      ]);
      const ok = await run(["--server", h.server.address, "--cacert", caFile, "tasks", "list"]);
      expect([ok.code, said(ok.stderr)]).to.deep.equal([0, []]);
    });
  });

  describe("a plaintext server", () => {
    const h = useServer();

    it("a TLS call: a hint to leave out the TLS options", async () => {
      for (const extra of [["--cacert", caFile], ["--tls"]]) {
        const r = await run(["--server", h.server.address, ...extra, "tasks", "list"]);
        expect([r.code, said(r.stderr)[1]], extra.join(" ")).to.deep.equal([
          6,
          `hint: ${h.server.address} did not answer TLS: if it serves plaintext, leave out --tls, --cacert, --cert and --key`,
        ]);
      }
    });
  });
});
