// What PostgreSQL knows and signals to nobody: sessions waiting for a lock.
// Tests that block calls behind a lock held from a session of their own ask
// it (through eventually()).
import type pg from "pg";

/** The server's sessions: its pool and its transaction slots (its LISTEN connection never waits for a row lock). */
const SERVER_APPLICATIONS = ["drydock-statemgmt", "drydock-statemgmt-tx"];

/**
 * Sessions of `db`'s database waiting for a lock now: the server's own
 * (`whose` "server", the default) or any. `db` may be inside a transaction,
 * where pg_stat_activity would repeat the transaction's first snapshot: the
 * snapshot is cleared first.
 */
export async function lockWaiters(db: pg.Client, whose: "server" | "any" = "server"): Promise<number> {
  await db.query("select pg_stat_clear_snapshot()");
  const { rows } = await db.query<{ n: number }>(
    `select count(*)::int as n from pg_stat_activity
     where datname = current_database() and wait_event_type = 'Lock' and ($1::text[] is null or application_name = any($1))`,
    [whose === "server" ? SERVER_APPLICATIONS : null],
  );
  return rows[0]!.n;
}
