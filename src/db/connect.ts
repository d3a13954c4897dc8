import postgres from "postgres";
import { parseTimestamptz, formatMicros, type Micros } from "../core/time.js";
import { Lender } from "../util/lender.js";
import { Backoff, backoffDelay } from "../util/backoff.js";

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
  /** Called when one of the pool's connections has closed (tests wait on it). */
  onClose?: (connectionId: number) => void;
  /** Queries sent down one connection before earlier ones answer (default MAX_PIPELINE). */
  pipeline?: number;
  /** Server-side bounds of every session (default DEFAULT_TIMEOUTS). */
  timeouts?: DatabaseTimeouts;
  /** Longest wait for one new connection, in ms (default CONNECT_TIMEOUT_MS). */
  connectTimeoutMs?: number;
  /**
   * Whether store/sql.ts run() retries a query that failed before it was sent
   * (default true). False for a transaction's connection (store/transactions.ts):
   * there a query after BEGIN that never reached the server means the
   * transaction's session is gone, and a retry would run outside it.
   */
  retryUnsent?: boolean;
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

/**
 * Longest wait for a new database connection (STATEMGMT_DB_CONNECT_TIMEOUT_MS).
 * During a restart PostgreSQL's port can take a connection and not answer it
 * (a restart test once saw a call wait out a 5 s bound); 2 s bounds that, and
 * is still ample for a TLS handshake across a site network.
 */
export const CONNECT_TIMEOUT_MS = 2000;

/**
 * Attempts of a query that keeps failing before it was sent (store/sql.ts
 * run(), ConnectRetries): the first and up to two retries, within the call's
 * deadline, and only one of them after a connect timeout.
 */
export const CONNECT_ATTEMPTS = 3;

/** Delays between those attempts (src/util/backoff.ts): 50 ms doubling to 500 ms, equal jitter. */
export const CONNECT_RETRY_BACKOFF = { initialMs: 50, maxMs: 500, jitter: 0.5 } as const;

/** Longest start-up may take to open every connection of the pools (STATEMGMT_DB_OPEN_TIMEOUT_MS). */
export const OPEN_TIMEOUT_MS = 20_000;

export const DEFAULT_TIMEOUTS: DatabaseTimeouts = { statementTimeoutMs: 30_000, lockTimeoutMs: 5_000, idleInTransactionMs: 10_000 };

/**
 * Delays before reconnecting after a failed connection attempt: 10 ms
 * doubling to 250 ms, equal jitter. postgres.js's default grows to 20 s,
 * during which every call waits; capped at 0.25 s, a call made while
 * PostgreSQL is down fails UNAVAILABLE about as fast as the connection is
 * refused.
 */
export const RECONNECT_BACKOFF = { initialMs: 10, maxMs: 250, jitter: 0.5 } as const;

/**
 * postgres.js's backoff option: the delay in seconds (its unit) for its own
 * count of failed attempts, which starts at 1, so the first delay is 10–20 ms.
 */
export const reconnectBackoff = (retries: number): number => backoffDelay(RECONNECT_BACKOFF, retries) / 1000;

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
export function targetSessionAttrs(url: string): Pick<postgres.Options<Record<string, never>>, "target_session_attrs"> {
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
  const connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
  const sql = postgres(opts.url, {
    max,
    ...UNTYPED_OPTIONS,
    ...(opts.pipeline === undefined ? {} : { max_pipeline: opts.pipeline }),
    backoff: reconnectBackoff,
    ...targetSessionAttrs(opts.url),
    // Fail fast when the database is unreachable: calls answer UNAVAILABLE
    // instead of hanging for postgres.js's default 30 s (CONNECT_TIMEOUT_MS).
    // postgres.js takes seconds.
    connect_timeout: connectTimeoutMs / 1000,
    // None: the pool, opened to its size at start-up (openPool), stays at it,
    // so a burst of calls after a quiet minute does not wait for connections
    // to open (with 10,000 watch streams opening at once, the event loop
    // stalled past the connect timeout and their opening reads failed).
    // postgres.js still replaces each connection after its max_lifetime
    // (30 to 60 minutes); that one opens lazily again.
    idle_timeout: 0,
    onnotice: opts.onNotice ?? (() => {}),
    ...(opts.onClose ? { onclose: opts.onClose } : {}),
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
        serialize: (x: Micros | string | Date) => (typeof x === "bigint" ? formatMicros(x) : x instanceof Date ? x.toISOString() : String(x)),
        parse: (x: string) => parseTimestamptz(x),
      },
      bigint: postgres.BigInt,
    },
  }) as unknown as Sql;
  pools.set(sql, { permits: new Lender(Array.from({ length: max }, (_, i) => i)), connectTimeoutMs, retryUnsent: opts.retryUnsent ?? true });
  return sql;
}

/** The first connect failure, and how many connections were open, when openPool() gave up. */
export class PoolOpenError extends Error {}

/**
 * Opens every connection of a pool made by connect() (postgres.js opens
 * them only when a query needs one), within `timeoutMs`: a query on each,
 * all at once, so each goes to a different connection; rounds repeat with
 * backoff for the connections whose attempt failed. Holds every permit
 * meanwhile, so no call's query is queued behind it. Throws PoolOpenError
 * saying how many of them opened and why the others did not.
 */
export async function openPool(sql: Sql, { timeoutMs = OPEN_TIMEOUT_MS, signal }: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<void> {
  const { permits } = poolOf(sql);
  const held: number[] = [];
  try {
    for (let i = 0; i < permits.size; i++) held.push(await permits.acquire(signal));
    await openConnections(sql, permits.size, Date.now() + timeoutMs, signal);
  } finally {
    for (const p of held) permits.release(p);
  }
}

/**
 * Opens `count` connections of `sql` (see openPool); the caller keeps
 * every other query off it meanwhile.
 */
export async function openConnections(sql: Sql, count: number, until: number, signal?: AbortSignal): Promise<void> {
  const backoff = new Backoff(CONNECT_RETRY_BACKOFF);
  const started = Date.now();
  for (;;) {
    const round = await Promise.allSettled(
      Array.from({ length: count }, () => sql<{ pid: number }[]>`select pg_backend_pid() as pid`.then(([row]) => row!.pid)),
    );
    const pids = new Set(round.flatMap((r) => (r.status === "fulfilled" ? [r.value] : [])));
    // Each query of a round went to a connection of its own: all answered, all open.
    if (pids.size >= count) return;
    const failed = round.find((r): r is PromiseRejectedResult => r.status === "rejected")?.reason as unknown;
    const wait = backoff.next();
    if (signal?.aborted || Date.now() + wait >= until) {
      const why = failed instanceof Error ? failed.message : failed === undefined ? "a query shared a connection" : String(failed);
      throw new PoolOpenError(
        `could not open the database pool's ${count} connections within ${until - started} ms (${pids.size} open; ${backoff.attempt} attempts): ${why}`,
        { cause: failed },
      );
    }
    await new Promise((r) => setTimeout(r, wait));
  }
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
  /** The connect timeout of its connections, in ms (named in the errors of calls that could not connect). */
  readonly connectTimeoutMs: number;
  /** run() retries a query that failed before it was sent (false on a transaction's connection). */
  readonly retryUnsent: boolean;
  observer?: QueryObserver;
}

const pools = new WeakMap<Sql, PoolState>();

export function poolOf(sql: Sql): PoolState {
  const p = pools.get(sql);
  if (!p) throw new Error("poolOf: not a pool made by connect()");
  return p;
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
