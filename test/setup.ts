// Root hooks: one PostgreSQL for the whole run (DATABASE_URL, or an embedded
// one in a temporary directory), with a migrated template database that each
// test file clones (see harness.ts).
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

let embedded: EmbeddedDatabase | undefined;
let dir: string | undefined;

export const mochaHooks = {
  async beforeAll(this: Mocha.Context) {
    this.timeout(120_000);
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
  },
};
