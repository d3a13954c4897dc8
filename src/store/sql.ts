// The one place where database failures become domain errors, and where a
// call's AbortSignal ends its wait for the database.
import type { PendingQuery, Row } from "postgres";
import { AbortedError, abortError, DeadlineExceededError, DomainError, UnavailableError } from "../core/errors.js";
import { abortable } from "../util/abortable.js";
import { CONNECT_ATTEMPTS, CONNECT_RETRY_BACKOFF, poolOf, type PoolState, type Sql } from "../db/connect.js";
import { Backoff } from "../util/backoff.js";

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

export { DeadlineReason } from "../core/errors.js";

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
export function interpretError(err: unknown, signal?: AbortSignal, connect?: ConnectFailure): unknown {
  if (err instanceof DomainError) return err;
  const code = pgCode(err);
  if (code === "CONNECT_TIMEOUT" && connect) {
    // No connection answered within the connect timeout (the database or the
    // network is down, or this process's event loop was stalled past it).
    const tries = connect.attempts > 1 ? ` (${connect.attempts} attempts)` : "";
    return new UnavailableError(`could not connect to the database within ${connect.timeoutMs} ms${tries}; nothing was sent, retry with backoff`, {
      cause: err,
      reason: "DATABASE_CONNECT_TIMEOUT",
      metadata: { connect_timeout_ms: String(connect.timeoutMs), attempts: String(connect.attempts) },
    });
  }
  if (code === SQLSTATE.queryCanceled) {
    if (signal?.aborted) return abortError(signal, err);
    // Not ours (we never cancel): the session's statement_timeout, or an
    // operator's pg_cancel_backend. The statement was rolled back.
    return new DeadlineExceededError("the database ended the statement at its time limit (STATEMGMT_DB_STATEMENT_TIMEOUT_MS); nothing was written", {
      cause: err,
    });
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
    return new AbortedError(
      "TRANSACTION_CONFLICT",
      "the database rolled this call back to resolve a conflict with a concurrent one; nothing was written, retry",
      {},
      { cause: err },
    );
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
    return new UnavailableError("the database is read-only (a standby, or default_transaction_read_only is on); nothing was written, retry with backoff", {
      cause: err,
    });
  }
  return err;
}

/** What interpretError() says of a call that could not connect: the connect timeout, and the attempts made. */
export interface ConnectFailure {
  timeoutMs: number;
  attempts: number;
}

/**
 * Failures of a connection attempt: a query that failed with one of these
 * and was never handed to a connection (unsent()) did not reach PostgreSQL.
 * Not CONNECTION_ENDED/DESTROYED (the pool is being closed), nor the
 * refusals of a bad configuration (password, database name).
 */
const CONNECT_FAILURES = new Set([
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "CONNECTION_CLOSED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  SQLSTATE.cannotConnectNow,
  SQLSTATE.tooManyConnections,
  SQLSTATE.adminShutdown,
  SQLSTATE.crashShutdown,
]);

/**
 * Whether `query` failed before postgres.js wrote any of it to a socket:
 * its connection could not be opened. postgres.js 3.4.9 hands a query to a
 * connection in connection.js execute(), which first sets its `state` (the
 * backend it runs on); a query that fails while its connection connects
 * (the query that opened it, as `initial`, or one queued behind it) never
 * got there. CONNECT_TIMEOUT is cancelled at ReadyForQuery, before the
 * first query is executed, and ECONNREFUSED only happens while connecting;
 * the state check also covers codes that arrive either way (a reset while
 * connecting, or one after the query was sent).
 */
export function unsent(query: object, err: unknown): boolean {
  const code = pgCode(err);
  const q = query as unknown as { state: unknown; statement: unknown };
  return code !== undefined && CONNECT_FAILURES.has(code) && q.state === null && q.statement === null;
}

/**
 * A new query like `query`, which failed unsent: postgres.js queries run
 * once (each is the promise of its outcome). Tagged queries are made again
 * from their template and arguments, unsafe() ones from their text; their
 * options (simple, prepare) are kept. The service uses no other kind (no
 * cursor, forEach, raw or describe), and anything else is not retried.
 */
function again<T extends readonly (object | undefined)[]>(sql: Sql, query: PendingQuery<T>): PendingQuery<T> | undefined {
  const q = query as unknown as { tagged: boolean; strings: TemplateStringsArray; args: unknown[]; options: Record<string, unknown> } & Record<string, unknown>;
  if (q.cursorFn || q.forEachFn || q.isRaw || q.onlyDescribe || q.streaming) return undefined;
  const made = (
    q.tagged
      ? (sql as unknown as (s: TemplateStringsArray, ...a: unknown[]) => unknown)(q.strings, ...q.args)
      : sql.unsafe(q.strings[0]!, q.args as never[], {})
  ) as {
    options: Record<string, unknown>;
  };
  Object.assign(made.options, q.options);
  return made as unknown as PendingQuery<T>;
}

/** Waits `ms`, or rejects with the call's abort error when its signal aborts first. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return abortable(new Promise<void>((resolve) => setTimeout(resolve, ms)), signal);
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
  const pool = poolOf(sql);
  const retries = new ConnectRetries();
  for (let current = query; ; ) {
    try {
      return await attemptQuery(pool, signal, statement, current, held);
    } catch (err) {
      // A query that never reached PostgreSQL (its connection could not be
      // opened: a connect timeout, a refusal while the database restarts) is
      // safe to send again, a write too; a few times, within the call's deadline.
      const retry = pool.retryUnsent && retries.allow(current, err, signal) ? again(sql, current) : undefined;
      if (!retry) throw interpretError(err, signal, { timeoutMs: pool.connectTimeoutMs, attempts: retries.attempts });
      await pause(retries.delay(), signal); // the call's abort error if it ends meanwhile
      retries.attempts++;
      current = retry;
    }
  }
}

/**
 * How often one query that failed before it was sent is sent again: up to
 * CONNECT_ATTEMPTS attempts, after the connect retry backoff, but only one
 * of them after a connect timeout. A first timeout may be this process's
 * own doing (an event loop stalled past the timer by a burst of calls); a
 * second one means the database is not answering, and the call fails
 * within about two connect timeouts rather than three (test/restart.test.ts).
 */
export class ConnectRetries {
  /** Attempts made so far, the current one included. */
  attempts = 1;
  private timedOut = false;
  private backoff: Backoff | undefined;

  /** Whether `query`, failed with `err`, may be sent again. */
  allow(query: object, err: unknown, signal?: AbortSignal): boolean {
    if (signal?.aborted || this.attempts >= CONNECT_ATTEMPTS || !unsent(query, err)) return false;
    if (pgCode(err) === "CONNECT_TIMEOUT") {
      if (this.timedOut) return false;
      this.timedOut = true;
    }
    return true;
  }

  /** The wait before the next attempt. */
  delay(): number {
    this.backoff ??= new Backoff(CONNECT_RETRY_BACKOFF);
    return this.backoff.next();
  }
}

/** One attempt of run(): the query once, under a permit. */
async function attemptQuery<T extends readonly (object | undefined)[]>(
  pool: PoolState,
  signal: AbortSignal | undefined,
  statement: string,
  query: PendingQuery<T>,
  held: Permit | undefined,
): Promise<T> {
  // postgres.js sends a query when it is first awaited: until then it is inert.
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
  return abortable(running, signal);
}

/** One of a pool's connections, held across several queries run() is given it for. */
export type Permit = number;

/** Waits for one of the pool's connections to be free and holds it until releaseConnection() (coalesced writes). */
export const holdConnection = (sql: Sql): Promise<Permit> => poolOf(sql).permits.acquire();
export const releaseConnection = (sql: Sql, permit: Permit): void => poolOf(sql).permits.release(permit);

/** The statement name of queries run without one. */
export const UNNAMED = "unnamed";
