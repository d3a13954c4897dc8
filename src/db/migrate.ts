// Forward-only migrations: migrations/NNNN_name.sql, applied in order at
// start-up in one transaction that first takes an advisory lock, so replicas
// starting together apply each migration exactly once.
import { readdir, readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";
import type { Logger } from "../core/log.js";
import type { Sql } from "./connect.js";

/** Arbitrary constant naming our advisory lock ("drydock" in ASCII). */
const MIGRATION_LOCK_KEY = 0x6472_7964_6f63_6bn;

/** What migrate() needs of store/transactions.ts's Transactor: a transaction without a statement timeout. */
export interface UnboundedTransactions {
  unbounded<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
}

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export async function loadMigrations(dir = resolveMigrationsDir()): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  const out: Migration[] = [];
  for (const file of files) {
    const m = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) throw new Error(`migration file ${file} is not named NNNN_name.sql`);
    const version = Number(m[1]);
    if (version !== out.length + 1) throw new Error(`migration ${file}: expected version ${out.length + 1}`);
    out.push({ version, name: m[2]!, sql: await readFile(path.join(dir, file), "utf8") });
  }
  return out;
}

/** Applies the migrations not yet recorded (logging each as it begins); returns the versions it applied. */
export async function migrate(t: UnboundedTransactions, migrations?: Migration[], log?: Pick<Logger, "info">): Promise<number[]> {
  const all = migrations ?? (await loadMigrations());
  // Without a statement timeout: a migration of a large table may take long.
  return t.unbounded(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY.toString()}::bigint)`;
    await tx`
      create table if not exists schema_migrations (
        version    integer primary key,
        name       text not null,
        applied_at timestamptz not null default now()
      )`;
    const rows = await tx<{ version: number }[]>`select version from schema_migrations`;
    const applied = new Set(rows.map((r) => r.version));
    const newlyApplied: number[] = [];
    for (const m of all) {
      if (applied.has(m.version)) continue;
      log?.info({ version: m.version, name: m.name }, "applying migration");
      await tx.unsafe(m.sql);
      await tx`insert into schema_migrations (version, name) values (${m.version}, ${m.name})`;
      newlyApplied.push(m.version);
    }
    const newest = all.length;
    const unknown = [...applied].filter((v) => v > newest);
    if (unknown.length) {
      throw new Error(`the database has migrations ${unknown.join(", ")} that this build does not know; run a newer build of drydock-statemgmt`);
    }
    return newlyApplied;
  });
}

/** migrations/ at the package root, whether running from src/ (tsx) or dist/src/. */
function resolveMigrationsDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = here.includes(`${path.sep}dist${path.sep}`) ? path.resolve(here, "../../..") : path.resolve(here, "../..");
  return path.join(root, "migrations");
}
