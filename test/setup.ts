// Root hooks: one PostgreSQL for the whole run (DATABASE_URL, or an embedded
// one in a temporary directory), with a migrated template database that each
// test file clones (see harness.ts); and the check that each test file leaves
// nothing behind that keeps the process alive (mocha runs without --exit:
// a leaked server, client, pool or timer would hang the run).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import postgres from "postgres";
import { startEmbedded, type EmbeddedDatabase } from "../src/db/embedded.js";
import { DEFAULT_TIMEOUTS } from "../src/db/connect.js";
import { createTransactor } from "../src/store/transactions.js";
import { migrate } from "../src/db/migrate.js";
import { createLogger } from "../src/core/log.js";
import { shared, TEMPLATE_DB, withDatabase } from "./harness.js";
import { eventually } from "./kit/eventually.js";
import { activeResources, beyond } from "./kit/handles.js";

let embedded: EmbeddedDatabase | undefined;
let dir: string | undefined;

/**
 * How long a file's handles get to close after its last hook: sockets
 * closed by a shutdown are released by the event loop a few turns later.
 */
const SETTLE_MS = 3000;

/**
 * Handles a dependency leaves open that no test can close, by kind, with why.
 * Each is tolerated once per file beyond the baseline. (None so far.)
 */
const ALLOWED: Record<string, { count: number; why: string }> = {};

const handles = {
  /** Before anything of the run: what mocha and the process hold themselves. */
  start: {} as Record<string, number>,
  /** Once the shared PostgreSQL runs: what every file starts and must end with. */
  baseline: {} as Record<string, number>,
  /** What each file left behind. */
  leaks: [] as string[],
};

/** What is open beyond `base`, less the allowed; empty once it settles within SETTLE_MS. */
async function leftOpen(base: Record<string, number>): Promise<string[]> {
  const allowed = Object.fromEntries(Object.entries(base).map(([kind, n]) => [kind, n + (ALLOWED[kind]?.count ?? 0)]));
  let left: string[] = [];
  await eventually(
    () => {
      left = beyond(allowed, activeResources());
      return left.length === 0;
    },
    SETTLE_MS,
    "the handles closing",
  ).catch(() => {});
  return left;
}

/**
 * Fails the test file that just finished (its last suite's last "after all"
 * hook) if it left something open; what it left becomes the next files'
 * baseline, so that each leak is reported once, by the file that made it.
 */
async function checkFile(file: string): Promise<void> {
  const left = await leftOpen(handles.baseline);
  if (left.length === 0) return;
  const leak = `${path.relative(process.cwd(), file)}: ${left.join(", ")}`;
  handles.leaks.push(leak);
  handles.baseline = activeResources();
  throw new Error(`handles left open (process.getActiveResourcesInfo()) by ${leak}`);
}

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(120_000);
    // Measured after a turn, as every later count is: mocha arms this hook's
    // own timeout timer once the hook has returned its promise.
    await Promise.resolve();
    handles.start = activeResources();
    const log = createLogger((process.env.TEST_LOG_LEVEL as never) ?? "silent");
    if (process.env.DATABASE_URL) {
      shared.adminUrl = process.env.DATABASE_URL;
    } else {
      dir = await mkdtemp(path.join(tmpdir(), "statemgmt-test-"));
      embedded = await startEmbedded(dir, log);
      shared.adminUrl = embedded.url;
    }
    const admin = postgres(shared.adminUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop database if exists ${TEMPLATE_DB}`);
    await admin.unsafe(`create database ${TEMPLATE_DB}`);
    await admin.end();
    const tx = createTransactor({ url: withDatabase(shared.adminUrl, TEMPLATE_DB), slots: 1, timeouts: DEFAULT_TIMEOUTS });
    await migrate(tx);
    await tx.end();
    handles.baseline = activeResources();
    // A check after each file: an "after all" hook of its last top-level
    // suite, registered last, so that it runs after the file's own.
    const lastSuiteOf = new Map<string, Mocha.Suite>();
    for (const suite of this.test?.parent?.suites ?? []) if (suite.file) lastSuiteOf.set(suite.file, suite);
    for (const [file, suite] of lastSuiteOf) {
      suite.afterAll(`leaves no handle open (${path.basename(file)})`, async function () {
        this.timeout(SETTLE_MS + 5000);
        await checkFile(file);
      });
    }
  },
  async afterAll(this: Mocha.Context) {
    this.timeout(60_000);
    if (shared.adminUrl) {
      const admin = postgres(shared.adminUrl, { max: 1, onnotice: () => {} });
      await admin.unsafe(`drop database if exists ${TEMPLATE_DB}`).catch(() => {});
      await admin.end();
    }
    await embedded?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
    // What the files left is reported already (and still open): judge the run's own only without it.
    const left = handles.leaks.length > 0 ? [] : await leftOpen(handles.start);
    if (left.length > 0) handles.leaks.push(`the run's own PostgreSQL and template: ${left.join(", ")}`);
    if (handles.leaks.length > 0) {
      // Fail, and exit even so: what leaked would keep the process alive.
      setTimeout(() => process.exit(process.exitCode || 1), 5000).unref();
      throw new Error(`handles left open (process.getActiveResourcesInfo()), by test file:\n  ${handles.leaks.join("\n  ")}`);
    }
  },
};
