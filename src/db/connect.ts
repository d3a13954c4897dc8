import postgres from "postgres";
import { parseTimestamptz, formatMicros, type Micros } from "./time.js";
import { Lender } from "../lender.js";

export type Sql = postgres.Sql<{ micros: Micros; bigint: bigint }>;
/** A pool or a transaction's connection (store/transactions.ts): what store functions run their queries on. */
export type Queryable = Sql;

export interface ConnectOptions {
  url: string;
  max?: number;
  applicationName?: string;
  /** Session TimeZone (default UTC); outcomes never depend on it. */
  timeZone?: string;
  /** Called with notices and connection errors worth logging. */
  onNotice?: (notice: postgres.Notice) => void;
  /** Queries sent down one connection before earlier ones answer (default MAX_PIPELINE). */
  pipeline?: number;
  /** Server-side bounds of every session (default DEFAULT_TIMEOUTS). */
  timeouts?: DatabaseTimeouts;
}

/**
 * Server-side bounds of database work, set on every session. A transaction
 * narrows them to its call's deadline (store/transactions.ts); a single
 * statement runs under them as they are.
 */
export interface DatabaseTimeouts {
  /** statement_timeout: longest statement of a call without a deadline; 0 = none. */
  statementTimeoutMs: number;
  /** lock_timeout: longest wait for a row lock, even within a longer deadline; 0 = none. */
  lockTimeoutMs: number;
  /** idle_in_transaction_session_timeout: PostgreSQL ends a session whose transaction sits idle this long. */
  idleInTransactionMs: number;
}

/** Longest wait for a new database connection (postgres.js takes seconds). */
export const CONNECT_TIMEOUT_S = 2;

export const DEFAULT_TIMEOUTS: DatabaseTimeouts = { statementTimeoutMs: 30_000, lockTimeoutMs: 5_000, idleInTransactionMs: 10_000 };

/**
 * Delay before reconnecting after a failed connection attempt, in seconds
 * (postgres.js's unit). Its default grows to 20 s, during which every call
 * waits; capped at 0.25 s, a call made while PostgreSQL is down fails
 * UNAVAILABLE about as fast as the connection is refused.
 */
export const reconnectBackoff = (retries: number): number => Math.min(0.25, 0.01 * 2 ** retries) * (0.5 + Math.random() / 2);

/**
 * Queries postgres.js may send down a connection that is already running
 * one. 0: none, so a query waits in the pool's queue for a free connection,
 * where a call that gives up can still withdraw it (store/sql.ts run). With
 * 1 (measured in bench/, BENCHMARKS.md) postgres.js still queued one query
 * behind a running one, and a query queued behind a statement blocked on a
 * row lock could neither be withdrawn nor run until the lock was released.
 */
export const MAX_PIPELINE = 0;
/** Options postgres.js reads (src/index.js) but its types omit. */
export const UNTYPED_OPTIONS = { max_pipeline: MAX_PIPELINE };

/**
 * The target_session_attrs to hand postgres.js for a URL (its query
 * parameter, else PGTARGETSESSIONATTRS), so that a multi-host URL settles
 * on the primary. libpq's read-write means "not in hot standby, and
 * default_transaction_read_only off"; postgres.js 3.4.9 checks only the
 * latter, which a PostgreSQL 14+ standby reports as off, so it would
 * connect to a read-only standby (porsager/postgres issue 815). We ask it
 * for "primary" (not in hot standby) instead, which is what following a
 * promoted standby needs; a primary set to default_transaction_read_only
 * is still reached, and its refusals (25006) answer UNAVAILABLE
 * (store/sql.ts). Every other value goes through as it is.
 */
export function targetSessionAttrs(url: string): Pick<postgres.Options<{}>, "target_session_attrs"> {
  const query = /\?([^#]*)/.exec(url)?.[1] ?? "";
  const fromUrl = new URLSearchParams(query).get("target_session_attrs");
  const attrs = fromUrl ?? process.env.PGTARGETSESSIONATTRS;
  if (!attrs) return {};
  // Values postgres.js does not know are its to refuse ("... is not supported").
  return { target_session_attrs: (attrs === "read-write" ? "primary" : attrs) as "primary" };
}

/** Connection parameters (GUCs) that carry DatabaseTimeouts to a session. */
function timeoutParameters(t: DatabaseTimeouts): Record<string, string> {
  return {
    statement_timeout: String(t.statementTimeoutMs),
    lock_timeout: String(t.lockTimeoutMs),
    idle_in_transaction_session_timeout: String(t.idleInTransactionMs),
  };
}

/**
 * Opens the service's pool. timestamptz is read as exact microseconds and
 * int8 as bigint; sessions run in UTC (the parser does not depend on it).
 */
export function connect(opts: ConnectOptions): Sql {
  const max = opts.max ?? 10;
  const sql = postgres(opts.url, {
    max,
    ...UNTYPED_OPTIONS,
    ...(opts.pipeline === undefined ? {} : { max_pipeline: opts.pipeline }),
    backoff: reconnectBackoff,
    ...targetSessionAttrs(opts.url),
    // Fail fast when the database is unreachable: calls answer UNAVAILABLE
    // instead of hanging for postgres.js's default 30 s. During a restart
    // PostgreSQL's port can take a connection and not answer it (a restart
    // test once saw a call wait out a 5 s bound); 2 s bounds that, and is
    // still ample for a TLS handshake across a site network.
    connect_timeout: CONNECT_TIMEOUT_S,
    idle_timeout: 60,
    onnotice: opts.onNotice ?? (() => {}),
    connection: {
      application_name: opts.applicationName ?? "drydock-statemgmt",
      TimeZone: opts.timeZone ?? "UTC",
      ...timeoutParameters(opts.timeouts ?? DEFAULT_TIMEOUTS),
    },
    types: {
      micros: {
        to: 1184,
        from: [1184],
        // Parameters of type timestamptz: our Micros, or RFC 3339 text passed
        // through unchanged (postgres.js's default would go through a Date and
        // drop the microseconds).
        serialize: (x: Micros | string | Date) =>
          typeof x === "bigint" ? formatMicros(x) : x instanceof Date ? x.toISOString() : String(x),
        parse: (x: string) => parseTimestamptz(x),
      },
      bigint: postgres.BigInt,
    },
  }) as unknown as Sql;
  pools.set(sql, { permits: new Lender(Array.from({ length: max }, (_, i) => i)) });
  return sql;
}

/**
 * Told about every statement store/sql.ts run() sends on a pool (metrics;
 * src/metrics implements it). Called once the statement has settled, on
 * the driver's callback: keep it cheap.
 */
export interface QueryObserver {
  /**
   * `statement` is the store function's fixed name for it (`tasks.get`, ...);
   * `seconds` runs from the moment it had a connection to its outcome;
   * `errorCode` is the SQLSTATE (or postgres.js code) it failed with.
   */
  queried(statement: string, seconds: number, errorCode: string | undefined): void;
}

/** What run() needs of a pool made by connect(). */
export interface PoolState {
  /** One permit per connection: store/sql.ts run() hands a query to the driver only with one. */
  readonly permits: Lender<number>;
  observer?: QueryObserver;
}

const pools = new WeakMap<Sql, PoolState>();

export function poolOf(sql: Sql): PoolState {
  const p = pools.get(sql);
  if (!p) throw new Error("poolOf: not a pool made by connect()");
  return p;
}

export function permitsOf(sql: Sql): Lender<number> {
  return poolOf(sql).permits;
}

/** The shared pool's connections now: its size, those running a statement, and statements waiting for one. */
export function poolUsage(sql: Sql): { size: number; inUse: number; waiting: number } {
  const { permits } = poolOf(sql);
  return { size: permits.size, inUse: permits.lent, waiting: permits.waiters };
}

/** Reports the pool's statements to `observer` from now on (undefined: to nobody). */
export function observeQueries(sql: Sql, observer: QueryObserver | undefined): void {
  poolOf(sql).observer = observer;
}
