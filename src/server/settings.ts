// Every setting of the server, in one shape: config.ts fills it from flags
// and the environment, main.ts hands it to startServer() as it is, and tests
// override some of it (test/harness.ts). The defaults are here, once; the
// values come from the modules that own them.
import type { LogLevel } from "../core/log.js";
import type { AuthConfig } from "../auth/config.js";
import { NO_AUTH } from "../auth/config.js";
import { defaultDesignConfig, type DesignConfig } from "../design/config.js";
import { connect, CONNECT_TIMEOUT_MS, DEFAULT_TIMEOUTS, OPEN_TIMEOUT_MS, type DatabaseTimeouts } from "../db/connect.js";
import { DEFAULT_COALESCING, type CoalescerOptions } from "../store/coalesce.js";
import { DEFAULT_REPORT_LIMITS } from "../store/bootActions.js";
import { createTransactor, type Db } from "../store/transactions.js";
import { DEFAULT_WATCH_BYTES } from "../watch/budget.js";
import { DEFAULT_RESPONSE_MAX_BYTES } from "../rpc/budget.js";
import type { RpcSettings } from "../rpc/settings.js";
import { DEFAULT_LIMITS, type ConnectionLimits } from "./connections.js";
import { DEFAULT_NODE_CALL_LIMIT, type RateLimit } from "./rateLimit.js";
import type { TlsFiles } from "./tls.js";

/** The handlers' settings (rpc/settings.ts) and everything else the process is configured with. */
export interface Settings extends RpcSettings {
  /** host:port to listen on; port 0 picks a free port. */
  listen: { host: string; port: number };
  /** HTTP address of /metrics, /healthz and /readyz (port 0: any free port); unset: off. */
  metricsListen: { host: string; port: number } | undefined;
  /** TLS files (with a client CA: mutual TLS); unset: plaintext (then only on loopback, unless insecure). */
  tls: TlsFiles | undefined;
  /** The operator allowed a non-loopback listen without TLS and authentication. */
  insecure: boolean;
  /** PostgreSQL URL; when absent an embedded PostgreSQL is started in dataDir. */
  databaseUrl: string | undefined;
  /** Data directory of the embedded PostgreSQL. */
  dataDir: string;
  logLevel: LogLevel;
  /** Longest time in-flight calls get to finish on shutdown. */
  shutdownGraceMs: number;
  /** Connections in the service's database pool (single statements). */
  dbPoolSize: number;
  /** Transactions that may run at once, each on a connection of its own. */
  dbTxPoolSize: number;
  /** Server-side bounds of database work (statement, lock wait, idle transaction). */
  dbTimeouts: DatabaseTimeouts;
  /** Longest wait for one new database connection. */
  dbConnectTimeoutMs: number;
  /**
   * Longest start-up waits for every connection of the pool and of the
   * transaction slots to open; past it, startServer() fails with PoolOpenError.
   */
  dbOpenTimeoutMs: number;
  /** How often the health service re-checks the database (and Keystone while it is down). */
  healthIntervalMs: number;
  /** Events a watch stream may fall behind before it is ended with RESOURCE_EXHAUSTED. */
  watchBufferLimit: number;
  /** Unsent bytes one WatchTask stream may hold before it is ended with RESOURCE_EXHAUSTED. */
  watchStreamMaxBytes: number;
  /** Unsent bytes all WatchTask streams together may hold before one that is behind is ended. */
  watchMaxBytes: number;
  /** Heartbeat interval of the LISTEN connection (its timeout is three intervals). */
  heartbeatMs: number;
  /** How long a WatchTask stream stays open after its task finished. */
  watchFinishLingerMs: number;
  /** Coalescing of concurrent CreateTask inserts, appends and GetTask reads; null: off. */
  writeCoalescing: CoalescerOptions | null;
  /** Connection and stream limits. */
  limits: ConnectionLimits;
  /** Key-authorized calls (nodes' reports and key checks) per client address; ratePerSecond 0: no limit. */
  nodeCallLimit: RateLimit;
  /** Design fetcher configuration. */
  design: DesignConfig;
  /** Authentication of callers. */
  auth: AuthConfig;
}

/** The settings of a server started with no flags and no environment (docs/configuration.md). */
export function defaultSettings(): Settings {
  return {
    listen: { host: "127.0.0.1", port: 50051 },
    metricsListen: undefined,
    tls: undefined,
    insecure: false,
    databaseUrl: undefined,
    dataDir: ".data",
    logLevel: "info",
    shutdownGraceMs: 10_000,
    dbPoolSize: 10,
    dbTxPoolSize: 5,
    dbTimeouts: DEFAULT_TIMEOUTS,
    dbConnectTimeoutMs: CONNECT_TIMEOUT_MS,
    dbOpenTimeoutMs: OPEN_TIMEOUT_MS,
    healthIntervalMs: 5_000,
    watchBufferLimit: 10_000,
    watchStreamMaxBytes: DEFAULT_WATCH_BYTES.streamBytes,
    watchMaxBytes: DEFAULT_WATCH_BYTES.serverBytes,
    responseMaxBytes: DEFAULT_RESPONSE_MAX_BYTES,
    heartbeatMs: 5_000,
    watchFinishLingerMs: 3_000,
    buildDataMaxBytes: 16 * 1024 * 1024,
    writeCoalescing: DEFAULT_COALESCING,
    limits: DEFAULT_LIMITS,
    bootActionReportLimits: DEFAULT_REPORT_LIMITS,
    nodeCallLimit: DEFAULT_NODE_CALL_LIMIT,
    design: defaultDesignConfig(),
    auth: NO_AUTH,
  };
}

/**
 * The defaults with each layer of overrides on top, in order. Only the
 * fields of Settings are read (a layer may be a larger object, such as
 * startServer()'s options); one a layer leaves undefined keeps what is below
 * it, and null is a value (writeCoalescing null turns coalescing off).
 */
export function settingsWith(...layers: Partial<Settings>[]): Settings {
  const out = defaultSettings();
  const fields = out as Record<keyof Settings, unknown>;
  for (const layer of layers) {
    for (const key of Object.keys(out) as (keyof Settings)[]) {
      if (layer[key] !== undefined) fields[key] = layer[key];
    }
  }
  return out;
}

/**
 * The service's pool and transaction slots on `url`, as the settings size and
 * bound them (main.ts and the tests' harness). Connections open lazily, or
 * all at once in startServer(); the caller ends both.
 */
export function connectDb(url: string, s: Settings, session: { timeZone?: string } = {}): Db {
  const common = { url, timeouts: s.dbTimeouts, connectTimeoutMs: s.dbConnectTimeoutMs, timeZone: session.timeZone };
  return { sql: connect({ ...common, max: s.dbPoolSize }), tx: createTransactor({ ...common, slots: s.dbTxPoolSize }) };
}
