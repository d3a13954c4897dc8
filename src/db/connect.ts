import postgres from "postgres";
import { parseTimestamptz, formatMicros, type Micros } from "./time.js";

export type Sql = postgres.Sql<{ micros: Micros; bigint: bigint }>;
export type TxSql = postgres.TransactionSql<{ micros: Micros; bigint: bigint }>;
/** A pool or an open transaction: what store functions run their queries on. */
export type Queryable = Sql | TxSql;

export interface ConnectOptions {
  url: string;
  max?: number;
  applicationName?: string;
  /** Session TimeZone (default UTC); outcomes never depend on it. */
  timeZone?: string;
  /** Called with notices and connection errors worth logging. */
  onNotice?: (notice: postgres.Notice) => void;
}

/**
 * Queries postgres.js may send down one connection before the previous ones
 * answer. Its default (100) lets concurrent calls queue behind each other on
 * a busy connection while others sit idle; 1 gives each query a free
 * connection or a wait for one. Measured in bench/ (BENCHMARKS.md).
 */
export const MAX_PIPELINE = 1;
/** Options postgres.js reads (src/index.js) but its types omit. */
export const UNTYPED_OPTIONS = { max_pipeline: MAX_PIPELINE };

/**
 * Opens the service's pool. timestamptz is read as exact microseconds and
 * int8 as bigint; sessions run in UTC (the parser does not depend on it).
 */
export function connect(opts: ConnectOptions): Sql {
  return postgres(opts.url, {
    max: opts.max ?? 10,
    ...UNTYPED_OPTIONS,
    // Fail fast when the database is unreachable: calls answer UNAVAILABLE
    // instead of hanging for postgres.js's default 30 s.
    connect_timeout: 5,
    idle_timeout: 60,
    onnotice: opts.onNotice ?? (() => {}),
    connection: { application_name: opts.applicationName ?? "drydock-statemgmt", TimeZone: opts.timeZone ?? "UTC" },
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
}
