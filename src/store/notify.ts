// The notification channel of task changes. Every transaction that creates or
// changes a task, or appends to its messages, sends one pg_notify on it with
// the task id as payload (36 bytes, far below PostgreSQL's 8000-byte limit);
// PostgreSQL delivers it at commit and folds duplicates within a transaction.
import type { Queryable } from "../db/connect.js";
import type { Micros } from "../core/time.js";

export const TASK_CHANNEL = "statemgmt_tasks";
/** Heartbeat channel: a listener that does not hear its own pings is replaced. */
export const HEARTBEAT_CHANNEL = "statemgmt_heartbeat";
/** Lease changes (a new term, a resignation); payload: the election name. */
export const LEASE_CHANNEL = "statemgmt_leases";

/** Sends one heartbeat (payload: the listener's nonce); returns the database's time of sending. */
export async function notifyHeartbeat(sql: Queryable, p: { nonce: string }): Promise<Micros> {
  const [row] = await sql<{ now: Micros }[]>`select pg_notify(${HEARTBEAT_CHANNEL}, ${p.nonce}), now() as now`;
  return row!.now;
}
