// The one place where database failures become domain errors, and where a
// call's AbortSignal ends its wait for the database.
import type { PendingQuery, Row } from "postgres";
import { AbortedError, abortError, DeadlineExceededError, DomainError, UnavailableError } from "../errors.js";
import { abortable } from "../abortable.js";
import { poolOf, type Sql } from "../db/connect.js";

/** Named SQLSTATEs we act on. */
export const SQLSTATE = {
  uniqueViolation: "23505",
  foreignKeyViolation: "23503",
  checkViolation: "23514",
  /** statement_timeout expired (we never send cancel requests; an operator's pg_cancel_backend also lands here). */
  queryCanceled: "57014",
  /** lock_timeout expired. */
  lockNotAvailable: "55P03",
  /** The database broke a deadlock by rolling this transaction back. */
  deadlockDetected: "40P01",
  serializationFailure: "40001",
  adminShutdown: "57P01",
  crashShutdown: "57P02",
  cannotConnectNow: "57P03",
  tooManyConnections: "53300",
  /** A write (or LISTEN) on a read-only session: a standby, or default_transaction_read_only on. */
  readOnlySqlTransaction: "25006",
  invalidAuthorization: "28000",
  invalidPassword: "28P01",
  unknownDatabase: "3D000",
} as const;

export { DeadlineReason } from "../errors.js";

/** postgres.js connection-level error codes (not SQLSTATEs). */
const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
]);

export function pgCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : undefined;
}

/**
 * Translates driver errors the service understands (cancellation, lost
 * database); anything else is returned unchanged and becomes INTERNAL.
 */
export function interpretError(err: unknown, signal?: AbortSignal): unknown {
  if (err instanceof DomainError) return err;
  const code = pgCode(err);
  if (code === SQLSTATE.queryCanceled) {
    if (signal?.aborted) return abortError(signal, err);
    // Not ours (we never cancel): the session's statement_timeout, or an
    // operator's pg_cancel_backend. The statement was rolled back.
    return new DeadlineExceededError("the database ended the statement at its time limit (STATEMGMT_DB_STATEMENT_TIMEOUT_MS); nothing was written", { cause: err });
  }
  if (code === SQLSTATE.lockNotAvailable) {
    if (signal?.aborted) return abortError(signal, err);
    return new AbortedError(
      "LOCK_TIMEOUT",
      "a row this call needs stayed locked by another transaction past the lock timeout (STATEMGMT_DB_LOCK_TIMEOUT_MS); nothing was written, retry with backoff",
      {},
      { cause: err },
    );
  }
  if (code === SQLSTATE.deadlockDetected || code === SQLSTATE.serializationFailure) {
    if (signal?.aborted) return abortError(signal, err);
    return new AbortedError("TRANSACTION_CONFLICT", "the database rolled this call back to resolve a conflict with a concurrent one; nothing was written, retry", {}, { cause: err });
  }
  if (
    (code && CONNECTION_CODES.has(code)) ||
    code === SQLSTATE.adminShutdown ||
    code === SQLSTATE.crashShutdown ||
    code === SQLSTATE.cannotConnectNow ||
    code === SQLSTATE.tooManyConnections ||
    code === SQLSTATE.invalidAuthorization ||
    code === SQLSTATE.invalidPassword ||
    code === SQLSTATE.unknownDatabase ||
    code?.startsWith("08")
  ) {
    return new UnavailableError("the database is unavailable; retry with backoff", { cause: err });
  }
  if (code === SQLSTATE.readOnlySqlTransaction) {
    // The statement was refused, so nothing was written; a failover may be
    // under way (a primary fenced read-only, a standby not yet promoted).
    return new UnavailableError("the database is read-only (a standby, or default_transaction_read_only is on); nothing was written, retry with backoff", { cause: err });
  }
  return err;
}


/** Throws the matching error if the call is already over. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortError(signal, signal.reason);
}

/**
 * Runs one query of a call. The query reaches the driver only once one of
 * the pool's connections is free for it (a permit per connection, see
 * db/connect.ts): while it waits for one, the call's signal withdraws it and
 * it never runs. Once running, an abort stops the wait at once and leaves
 * the query to finish, its outcome ignored: inside a transaction the
 * transaction then rolls back; a single-statement write may still commit
 * (gRPC's DEADLINE_EXCEEDED and CANCELLED mean "outcome unknown" for that
 * reason). Server-side statement_timeout and lock_timeout bound how long it
 * can keep its connection.
 *
 * We never send PostgreSQL a cancel request (a cancel names a connection,
 * not a query: one that arrives late hits the next query on that connection,
 * another call's), and never use the driver's query.cancel() either: on a
 * query whose connection is still connecting it leaves that connection
 * stuck for good (postgres.js 3.4.9; test/health.test.ts "withdraws").
 */
export function run<T extends readonly (object | undefined)[] = Row[]>(
  sql: Sql,
  signal: AbortSignal | undefined,
  query: PendingQuery<T>,
  held?: Permit,
): Promise<T>;
/**
 * `statement` names the query in the metrics (statemgmt_db_query_duration_seconds):
 * a fixed, low-cardinality name per store function, `table.what` (`tasks.get`).
 * `held`: a permit of `sql` the caller already holds (holdConnection()): the
 * query uses it, and the caller releases it.
 */
export function run<T extends readonly (object | undefined)[] = Row[]>(
  sql: Sql,
  signal: AbortSignal | undefined,
  statement: string,
  query: PendingQuery<T>,
  held?: Permit,
): Promise<T>;
export async function run<T extends readonly (object | undefined)[] = Row[]>(
  sql: Sql,
  signal: AbortSignal | undefined,
  statementOrQuery: string | PendingQuery<T>,
  queryOrHeld?: PendingQuery<T> | Permit,
  heldIfNamed?: Permit,
): Promise<T> {
  const [statement, query, held] =
    typeof statementOrQuery === "string"
      ? [statementOrQuery, queryOrHeld as PendingQuery<T>, heldIfNamed]
      : [UNNAMED, statementOrQuery, queryOrHeld as Permit | undefined];
  // postgres.js sends a query when it is first awaited: until then it is inert.
  const pool = poolOf(sql);
  const permit = held ?? (await pool.permits.acquire(signal));
  const sent = performance.now();
  const running = Promise.resolve(query as unknown as Promise<T>);
  // Released (unless the caller holds the permit) and observed when the
  // statement ends, even after its caller stopped waiting: a lock timeout
  // seen only then is still counted.
  const release = () => {
    if (held === undefined) pool.permits.release(permit);
  };
  void running.then(
    () => {
      release();
      pool.observer?.queried(statement, (performance.now() - sent) / 1000, undefined);
    },
    (err: unknown) => {
      release();
      pool.observer?.queried(statement, (performance.now() - sent) / 1000, pgCode(err));
    },
  );
  return abortable(running, signal).catch((err: unknown) => {
    throw interpretError(err, signal);
  });
}

/** One of a pool's connections, held across several queries run() is given it for. */
export type Permit = number;

/** Waits for one of the pool's connections to be free and holds it until releaseConnection() (coalesced writes). */
export const holdConnection = (sql: Sql): Promise<Permit> => poolOf(sql).permits.acquire();
export const releaseConnection = (sql: Sql, permit: Permit): void => poolOf(sql).permits.release(permit);

/** The statement name of queries run without one. */
export const UNNAMED = "unnamed";
