// Transactions on connections of their own.
//
// postgres.js 3.4.9 can write a transaction's BEGIN to a pool connection
// without reserving it (the reservation hook sits at the end of a
// short-circuiting `&&` in connection.js execute(), skipped whenever BEGIN
// fills the connection's pipeline; a socket "drain" can also hand a reserved
// connection back to the pool: porsager/postgres issues 823 and 1189, fixes
// in PRs 1207/1218, unreleased). Other calls' statements then run inside that
// open transaction, so an acknowledged write can be rolled back.
//
// We therefore never use sql.begin() or sql.reserve() on the shared pool.
// Each transaction slot is a postgres.js instance with exactly one
// connection, and a slot is lent to one transaction at a time: only that
// transaction's statements ever reach its connection, whatever the driver
// does with its pipeline. test/transactions.test.ts is the regression guard
// (it fails on the shared-pool sql.begin this replaced).
//
// Each transaction bounds its own database waits on the server side
// (SET LOCAL statement_timeout / lock_timeout from the call's remaining
// deadline), so no cancel request ever races a connection.
import {
  connect,
  CONNECT_TIMEOUT_MS,
  observeQueries,
  OPEN_TIMEOUT_MS,
  openConnections,
  type ConnectOptions,
  type DatabaseTimeouts,
  type QueryObserver,
  type Sql,
} from "../db/connect.js";
import { AbortedError, abortError, DeadlineExceededError, UnavailableError } from "../core/errors.js";
import { ConnectRetries, interpretError, pgCode, SQLSTATE, type ConnectFailure } from "./sql.js";
import { Lender } from "../util/lender.js";

export interface TransactionScope {
  signal?: AbortSignal;
  /** The call's deadline (epoch ms): bounds every statement and lock wait of the transaction. */
  deadline?: number;
}

/** Runs functions inside transactions, each on a connection no other call uses meanwhile. */
export interface Transactor {
  /**
   * Runs fn in a transaction: commits when it resolves, rolls back when it
   * throws. Rejects with the call's abort error as soon as the signal
   * aborts; the connection returns to the pool only once its transaction
   * has ended.
   */
  transaction<T>(scope: TransactionScope, fn: (tx: Sql) => Promise<T>): Promise<T>;
  /**
   * Opens the connection of every slot (postgres.js opens one only when a
   * query needs it) within `timeoutMs` (default OPEN_TIMEOUT_MS); throws
   * PoolOpenError when it cannot (db/connect.ts openConnections()).
   */
  open(options?: { timeoutMs?: number; signal?: AbortSignal }): Promise<void>;
  /** Like transaction(), without a statement timeout (migrations). */
  unbounded<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
  /** Closes the connections once their transactions end, or after `timeout` seconds (default 5) cuts them. */
  end(options?: { timeout?: number }): Promise<void>;
  /** The slots now: how many there are, lent to a transaction, and transactions waiting for one. */
  usage(): PoolUsage;
  /** Reports every statement its transactions run through store/sql.ts run() to `observer`. */
  observe(observer: QueryObserver | undefined): void;
}

export interface PoolUsage {
  size: number;
  inUse: number;
  waiting: number;
}

export interface TransactorOptions extends Omit<ConnectOptions, "max" | "pipeline" | "timeouts" | "retryUnsent"> {
  /** Transactions that may run at once (one connection each). */
  slots: number;
  timeouts: DatabaseTimeouts;
}

export function createTransactor(o: TransactorOptions): Transactor {
  const all = Array.from({ length: o.slots }, () => connect({ applicationName: "drydock-statemgmt-tx", ...o, max: 1, pipeline: 100, retryUnsent: false }));
  const connectTimeoutMs = o.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  const slots = new Lender(all);

  /** SET LOCAL values for a transaction: the call's remaining time, capped for lock waits. */
  const limits = (scope: TransactionScope | null) => {
    if (scope === null) return { statement: 0, lock: 0 };
    const t = o.timeouts;
    if (scope.deadline === undefined) return { statement: t.statementTimeoutMs, lock: t.lockTimeoutMs };
    const left = Math.max(1, Math.floor(scope.deadline - Date.now()));
    return { statement: left, lock: t.lockTimeoutMs > 0 ? Math.min(left, t.lockTimeoutMs) : left };
  };

  const run = async <T>(scope: TransactionScope | null, fn: (tx: Sql) => Promise<T>): Promise<T> => {
    const signal = scope?.signal;
    const slot = await slots.acquire(signal);
    const { statement, lock } = limits(scope);
    // The slot goes back only after its transaction ended, even when the
    // caller stopped waiting earlier (then this runs on, unobserved).
    const work = (async () => {
      let began = false;
      const retries = new ConnectRetries();
      try {
        // Integers we computed: safe to inline; one round trip. A BEGIN
        // that failed before it was sent (the slot's connection could not
        // be opened) is sent again, as store/sql.ts run() does for single
        // statements; once it ran, nothing of the transaction is retried.
        const begin = () => slot.unsafe(`begin; set local statement_timeout = ${statement}; set local lock_timeout = ${lock}`).simple();
        for (let query = begin(); ; query = begin(), retries.attempts++) {
          try {
            await query;
            break;
          } catch (err) {
            if (!retries.allow(query, err, signal)) throw err;
            await new Promise((r) => setTimeout(r, retries.delay()));
            if (signal?.aborted) throw err;
          }
        }
        began = true;
        const result = await fn(slot);
        const done = await slot.unsafe("commit");
        // COMMIT of a transaction that failed (an error swallowed inside fn)
        // is answered with ROLLBACK: nothing was written.
        if (done.command !== "COMMIT")
          throw new AbortedError("TRANSACTION_ROLLED_BACK", "the database rolled the transaction back; nothing was written, retry");
        return result;
      } catch (err) {
        if (began) await slot.unsafe("rollback").catch(() => {}); // a broken connection is replaced on its next use
        throw interpretTransactionError(err, scope, lock, { timeoutMs: connectTimeoutMs, attempts: began ? 1 : retries.attempts });
      } finally {
        slots.release(slot);
      }
    })();
    if (!signal) return work;
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(abortError(signal, signal.reason));
      signal.addEventListener("abort", onAbort, { once: true });
      work.then(
        (v) => {
          signal.removeEventListener("abort", onAbort);
          resolve(v);
        },
        (err: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(signal.aborted ? abortError(signal, err) : err);
        },
      );
    });
  };

  return {
    async open({ timeoutMs = OPEN_TIMEOUT_MS, signal } = {}) {
      // Every slot, so that no transaction runs on one while it opens.
      const held: Sql[] = [];
      try {
        for (let i = 0; i < all.length; i++) held.push(await slots.acquire(signal));
        const until = Date.now() + timeoutMs;
        await Promise.all(held.map((slot) => openConnections(slot, 1, until, signal)));
      } finally {
        for (const slot of held) slots.release(slot);
      }
    },
    transaction: (scope, fn) => run(scope, fn),
    unbounded: (fn) => run(null, fn),
    usage: () => ({ size: slots.size, inUse: slots.lent, waiting: slots.waiters }),
    observe: (observer) => all.forEach((slot) => observeQueries(slot, observer)),
    async end({ timeout = 5 } = {}) {
      slots.close(() => new UnavailableError("the server is shutting down; retry on another replica"));
      await Promise.all(all.map((s) => s.end({ timeout })));
    },
  };
}

function interpretTransactionError(err: unknown, scope: TransactionScope | null, lockMs: number, connect: ConnectFailure): unknown {
  const signal = scope?.signal;
  if (signal?.aborted) return abortError(signal, err);
  // run() may already have made a domain error of it: look at its cause.
  const code = pgCode(err) ?? pgCode((err as { cause?: unknown } | null)?.cause);
  const byDeadline = scope?.deadline !== undefined && scope.deadline - Date.now() < 50;
  if (code === SQLSTATE.queryCanceled || (code === SQLSTATE.lockNotAvailable && byDeadline)) {
    return new DeadlineExceededError(
      byDeadline
        ? "the call's deadline passed while its transaction waited for the database; nothing was written"
        : "the database ended the transaction at its statement time limit (STATEMGMT_DB_STATEMENT_TIMEOUT_MS); nothing was written",
      { cause: err },
    );
  }
  if (code === SQLSTATE.lockNotAvailable) return lockTimeout(lockMs, err);
  return interpretError(err, signal, connect);
}

/** A row the call needed stayed locked by another transaction longer than lock_timeout. */
const lockTimeout = (ms: number, cause: unknown) =>
  new AbortedError(
    "LOCK_TIMEOUT",
    `a row this call needs stayed locked by another transaction for ${ms} ms; nothing was written, retry with backoff`,
    { lock_timeout_ms: String(ms) },
    { cause },
  );

/** The shared pool for single statements, and the transaction slots. */
export interface Db {
  sql: Sql;
  tx: Transactor;
}
