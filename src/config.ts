// Configuration from command-line flags and environment, validated once at
// start-up. Flags win over environment variables. What it makes is the
// server's Settings (server/settings.ts, with the defaults); a new setting is
// a field there and a line here.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import path from "node:path";
import type { DesignConfig } from "./design/config.js";
import type { KeystoneOptions } from "./keystone/tokens.js";
import { DEFAULT_MAX_PENDING, type KeystoneAuthOptions } from "./auth/keystone.js";
import { isRole, ROLES, type Role } from "./auth/roles.js";
import type { CoalescerOptions } from "./store/coalesce.js";
import { limitsProblem, type ConnectionLimits } from "./server/connections.js";
import type { TlsFiles } from "./server/tls.js";
import { defaultSettings, type Settings } from "./server/settings.js";
import type { LogLevel } from "./core/log.js";
import type { AuthConfig } from "./auth/config.js";

export type { LogLevel };

const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export type { Settings };

export { NO_AUTH, type AuthConfig } from "./auth/config.js";

export { defaultDesignConfig, type DesignConfig } from "./design/config.js";

export class ConfigError extends Error {}

const USAGE = `usage: statemgmt [--listen HOST:PORT] [--data-dir DIR] [--database-url URL] [--log-level LEVEL]

  --listen        STATEMGMT_LISTEN     address to serve gRPC on (default 127.0.0.1:50051; port 0 = any free port)
  --database-url  DATABASE_URL         PostgreSQL to use; when unset an embedded PostgreSQL is started
  --data-dir      STATEMGMT_DATA_DIR   data directory of the embedded PostgreSQL (default .data/)
  --log-level     STATEMGMT_LOG_LEVEL  fatal|error|warn|info|debug|trace|silent (default info)
                  STATEMGMT_SHUTDOWN_GRACE_MS  time in-flight calls get on shutdown (default 10000)
                  STATEMGMT_DB_POOL_SIZE       database connections for single statements (default 10)
                  STATEMGMT_DB_TX_POOL_SIZE    database connections for transactions, one each (default 5)
                  STATEMGMT_DB_STATEMENT_TIMEOUT_MS  statement bound of calls without a deadline (default 30000; 0 = none)
                  STATEMGMT_DB_LOCK_TIMEOUT_MS       longest row lock wait of any call (default 5000; 0 = none)
                  STATEMGMT_DB_IDLE_IN_TRANSACTION_MS  PostgreSQL ends sessions idle in a transaction this long (default 10000)
                  STATEMGMT_DB_CONNECT_TIMEOUT_MS    longest wait for one new database connection (default 2000)
                  STATEMGMT_DB_OPEN_TIMEOUT_MS       start-up opens every database connection within this (default 20000)
                  STATEMGMT_HEALTH_INTERVAL_MS database health probe interval, Keystone's while it is down (default 5000)
                  STATEMGMT_WATCH_BUFFER       events a watch stream may fall behind (default 10000)
                  STATEMGMT_WATCH_STREAM_MAX_BYTES  unsent bytes a WatchTask stream may hold (default 16777216)
                  STATEMGMT_WATCH_MAX_BYTES    unsent bytes all WatchTask streams may hold together (default 268435456)
                  STATEMGMT_RESPONSE_MAX_BYTES estimated bytes of a list page or GetTask FULL response (default 4194304)
                  STATEMGMT_HEARTBEAT_MS       LISTEN connection heartbeat interval (default 5000; timeout 3 intervals)
                  STATEMGMT_WATCH_FINISH_LINGER_MS  WatchTask stays open this long after its task finished (default 3000)
                  STATEMGMT_BUILD_DATA_MAX_BYTES largest build data element (default 16777216)
                  STATEMGMT_WRITE_BATCH_MAX    concurrent CreateTask inserts / appends written in one statement (default 100; 1 = off)
                  STATEMGMT_WRITE_BATCHES_IN_FLIGHT  such statements of each kind running at once (default 1)
                  STATEMGMT_MAX_CONNECTIONS, STATEMGMT_HANDSHAKE_TIMEOUT_MS, STATEMGMT_CONNECTION_IDLE_MS,
                  STATEMGMT_CONNECTION_MAX_AGE_MS, STATEMGMT_CONNECTION_AGE_GRACE_MS,
                  STATEMGMT_MAX_STREAMS_PER_CONNECTION, STATEMGMT_MAX_STREAMS, STATEMGMT_MAX_HEALTH_STREAMS,
                  STATEMGMT_MAX_REFLECTION_STREAMS: connection and stream limits, see README.md
                  STATEMGMT_BOOT_ACTION_MAX_DETAILS       detail messages the reports on one boot action may store (default 1000)
                  STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES  their bytes, text plus extra as JSON (default 1048576)
                  STATEMGMT_NODE_CALL_RATE     ReportBootActionStatus/VerifyBootActionKey calls per second per client IP (default 50; 0 = no limit)
                  STATEMGMT_NODE_CALL_BURST    such calls an idle client IP may make at once (default 100)
  --tls-cert      STATEMGMT_TLS_CERT      serve TLS with this PEM certificate (chain); re-read when it changes
  --tls-key       STATEMGMT_TLS_KEY       its PEM private key
  --tls-client-ca STATEMGMT_TLS_CLIENT_CA require client certificates from this PEM CA (mutual TLS)
  --insecure      STATEMGMT_INSECURE=1    allow a non-loopback --listen without TLS and authentication, and a non-loopback --metrics-listen
  --auth-tokens   STATEMGMT_AUTH_TOKENS  JSON file of bearer token hashes and certificate subjects with their roles (see README.md)
                  STATEMGMT_AUTH_KEYSTONE=1    validate callers' tokens with Keystone (STATEMGMT_KEYSTONE_*; roles: STATEMGMT_KEYSTONE_ROLES)
  --reflection    STATEMGMT_REFLECTION   open (default) or authenticated
  --metrics-listen STATEMGMT_METRICS_LISTEN  serve /metrics, /healthz, /readyz over HTTP on HOST:PORT (off when unset; beyond loopback needs --insecure)
  --design-root   STATEMGMT_DESIGN_ROOTS  directories file:// design references may read (":"-separated; none by default)
                  STATEMGMT_DESIGN_CA_FILE, STATEMGMT_DESIGN_ALLOWED_HOSTS, STATEMGMT_DESIGN_MAX_BYTES, STATEMGMT_DESIGN_CACHE_TTL_MS,
                  STATEMGMT_DECKHAND_TOKEN or STATEMGMT_KEYSTONE_URL/_USERNAME/_PASSWORD/_PROJECT: see README.md`;

export function loadConfig(argv: string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): Settings {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        listen: { type: "string" },
        "database-url": { type: "string" },
        "data-dir": { type: "string" },
        "log-level": { type: "string" },
        "design-root": { type: "string", multiple: true },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-client-ca": { type: "string" },
        insecure: { type: "boolean" },
        "auth-tokens": { type: "string" },
        reflection: { type: "string" },
        "metrics-listen": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) throw new ConfigError(USAGE);

  const str = (flag: string, name: string): string | undefined => {
    const v = (values[flag] as string | undefined) ?? env[name];
    return v === undefined || v === "" ? undefined : v;
  };

  const d = defaultSettings();
  const logLevel = (str("log-level", "STATEMGMT_LOG_LEVEL") ?? d.logLevel) as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`STATEMGMT_LOG_LEVEL / --log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(", ")}`);
  }
  const databaseUrl = str("database-url", "DATABASE_URL");
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError("DATABASE_URL / --database-url: must start with postgres:// or postgresql://");
  }
  const listenAddr = str("listen", "STATEMGMT_LISTEN");
  const listen = listenAddr === undefined ? d.listen : parseListen(listenAddr);
  const tls = tlsFiles(str("tls-cert", "STATEMGMT_TLS_CERT"), str("tls-key", "STATEMGMT_TLS_KEY"), str("tls-client-ca", "STATEMGMT_TLS_CLIENT_CA"));
  const insecure = values.insecure === true || env.STATEMGMT_INSECURE === "1";
  const design = loadDesignConfig((values["design-root"] as string[] | undefined) ?? [], env, d.design);
  const auth = loadAuthConfig(str("auth-tokens", "STATEMGMT_AUTH_TOKENS"), str("reflection", "STATEMGMT_REFLECTION"), env, design.keystone);
  const authenticated = auth.tokensFile !== undefined || auth.keystone !== undefined;
  if (!isLoopback(listen.host) && !(tls && authenticated) && !insecure) {
    throw new ConfigError(
      `refusing to serve ${listen.host}:${listen.port} beyond loopback without ${tls ? "" : "TLS (--tls-cert, --tls-key)"}${!tls && !authenticated ? " and " : ""}${authenticated ? "" : "authentication (STATEMGMT_AUTH_TOKENS or STATEMGMT_AUTH_KEYSTONE=1)"}; ` +
        `configure them, listen on 127.0.0.1, or pass --insecure (STATEMGMT_INSECURE=1) to expose it anyway`,
    );
  }
  const metricsAddr = str("metrics-listen", "STATEMGMT_METRICS_LISTEN");
  const metricsListen = metricsAddr === undefined ? undefined : parseListen(metricsAddr, "STATEMGMT_METRICS_LISTEN / --metrics-listen");
  // The metrics port has neither TLS nor authentication: beyond loopback only when the operator says so.
  if (metricsListen && !isLoopback(metricsListen.host) && !insecure) {
    throw new ConfigError(
      `refusing to serve metrics on ${metricsListen.host}:${metricsListen.port} beyond loopback: /metrics has no TLS or authentication; ` +
        `set STATEMGMT_METRICS_LISTEN / --metrics-listen to 127.0.0.1:PORT, or pass --insecure (STATEMGMT_INSECURE=1) to expose it anyway`,
    );
  }
  return {
    listen,
    metricsListen,
    tls,
    insecure,
    databaseUrl,
    dataDir: path.resolve(str("data-dir", "STATEMGMT_DATA_DIR") ?? d.dataDir),
    logLevel,
    shutdownGraceMs: intEnv(env, "STATEMGMT_SHUTDOWN_GRACE_MS", d.shutdownGraceMs, 0, 600_000),
    dbPoolSize: intEnv(env, "STATEMGMT_DB_POOL_SIZE", d.dbPoolSize, 1, 1000),
    dbTxPoolSize: intEnv(env, "STATEMGMT_DB_TX_POOL_SIZE", d.dbTxPoolSize, 1, 1000),
    dbTimeouts: {
      statementTimeoutMs: intEnv(env, "STATEMGMT_DB_STATEMENT_TIMEOUT_MS", d.dbTimeouts.statementTimeoutMs, 0, 86_400_000),
      lockTimeoutMs: intEnv(env, "STATEMGMT_DB_LOCK_TIMEOUT_MS", d.dbTimeouts.lockTimeoutMs, 0, 86_400_000),
      idleInTransactionMs: intEnv(env, "STATEMGMT_DB_IDLE_IN_TRANSACTION_MS", d.dbTimeouts.idleInTransactionMs, 100, 86_400_000),
    },
    dbConnectTimeoutMs: intEnv(env, "STATEMGMT_DB_CONNECT_TIMEOUT_MS", d.dbConnectTimeoutMs, 100, 600_000),
    dbOpenTimeoutMs: intEnv(env, "STATEMGMT_DB_OPEN_TIMEOUT_MS", d.dbOpenTimeoutMs, 100, 3_600_000),
    healthIntervalMs: intEnv(env, "STATEMGMT_HEALTH_INTERVAL_MS", d.healthIntervalMs, 10, 3_600_000),
    watchBufferLimit: intEnv(env, "STATEMGMT_WATCH_BUFFER", d.watchBufferLimit, 10, 10_000_000),
    ...loadByteBudgets(env, d),
    heartbeatMs: intEnv(env, "STATEMGMT_HEARTBEAT_MS", d.heartbeatMs, 50, 600_000),
    watchFinishLingerMs: intEnv(env, "STATEMGMT_WATCH_FINISH_LINGER_MS", d.watchFinishLingerMs, 0, 600_000),
    buildDataMaxBytes: intEnv(env, "STATEMGMT_BUILD_DATA_MAX_BYTES", d.buildDataMaxBytes, 1024, 512 * 1024 * 1024),
    writeCoalescing: loadCoalescing(env, d.writeCoalescing),
    limits: loadLimits(env, d.limits),
    bootActionReportLimits: {
      maxDetails: intEnv(env, "STATEMGMT_BOOT_ACTION_MAX_DETAILS", d.bootActionReportLimits.maxDetails, 1, 10_000_000),
      maxDetailBytes: intEnv(env, "STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES", d.bootActionReportLimits.maxDetailBytes, 1024, 2 ** 40),
    },
    nodeCallLimit: {
      ratePerSecond: intEnv(env, "STATEMGMT_NODE_CALL_RATE", d.nodeCallLimit.ratePerSecond, 0, 1_000_000),
      burst: intEnv(env, "STATEMGMT_NODE_CALL_BURST", d.nodeCallLimit.burst, 1, 1_000_000),
    },
    design,
    auth,
  };
}

type ByteBudgets = Pick<Settings, "watchStreamMaxBytes" | "watchMaxBytes" | "responseMaxBytes">;

function loadByteBudgets(env: NodeJS.ProcessEnv, d: ByteBudgets): ByteBudgets {
  const watchStreamMaxBytes = intEnv(env, "STATEMGMT_WATCH_STREAM_MAX_BYTES", d.watchStreamMaxBytes, 64 * 1024, 4 * 1024 ** 3);
  const watchMaxBytes = intEnv(env, "STATEMGMT_WATCH_MAX_BYTES", d.watchMaxBytes, 64 * 1024, 64 * 1024 ** 3);
  if (watchMaxBytes < watchStreamMaxBytes) {
    throw new ConfigError(`STATEMGMT_WATCH_MAX_BYTES (${watchMaxBytes}) must not be below STATEMGMT_WATCH_STREAM_MAX_BYTES (${watchStreamMaxBytes})`);
  }
  const responseMaxBytes = intEnv(env, "STATEMGMT_RESPONSE_MAX_BYTES", d.responseMaxBytes, 64 * 1024, 256 * 1024 * 1024);
  return { watchStreamMaxBytes, watchMaxBytes, responseMaxBytes };
}

/** Coalescing off is a batch of 1. */
function loadCoalescing(env: NodeJS.ProcessEnv, d: CoalescerOptions | null): CoalescerOptions | null {
  const maxBatch = intEnv(env, "STATEMGMT_WRITE_BATCH_MAX", d?.maxBatch ?? 1, 1, 1000);
  const maxInFlight = intEnv(env, "STATEMGMT_WRITE_BATCHES_IN_FLIGHT", d?.maxInFlight ?? 1, 1, 100);
  return maxBatch === 1 ? null : { maxBatch, maxInFlight };
}

/** Keystone role names mapped to ours when STATEMGMT_KEYSTONE_ROLES is unset: only Keystone's admin is trusted. */
const DEFAULT_KEYSTONE_ROLES = "admin=admin";

function loadAuthConfig(
  tokensFile: string | undefined,
  reflection: string | undefined,
  env: NodeJS.ProcessEnv,
  service: KeystoneOptions | undefined,
): AuthConfig {
  const flag = env.STATEMGMT_AUTH_KEYSTONE ?? "";
  if (!["", "0", "1", "false", "true"].includes(flag)) throw new ConfigError(`STATEMGMT_AUTH_KEYSTONE: "${flag}" is not 1 or 0`);
  let keystone: KeystoneAuthOptions | undefined;
  if (flag === "1" || flag === "true") {
    if (!service)
      throw new ConfigError("STATEMGMT_AUTH_KEYSTONE=1 needs STATEMGMT_KEYSTONE_URL, _USERNAME, _PASSWORD and _PROJECT (the service's own credentials)");
    keystone = {
      keystone: service,
      roles: parseKeystoneRoles(env.STATEMGMT_KEYSTONE_ROLES || DEFAULT_KEYSTONE_ROLES),
      maxPending: intEnv(env, "STATEMGMT_KEYSTONE_MAX_PENDING", DEFAULT_MAX_PENDING, 1, 100_000),
    };
  }
  const r = reflection ?? "open";
  if (r !== "open" && r !== "authenticated") throw new ConfigError(`STATEMGMT_REFLECTION / --reflection: "${r}" is not open or authenticated`);
  if (r === "authenticated" && !tokensFile && !keystone) {
    throw new ConfigError("STATEMGMT_REFLECTION / --reflection: authenticated needs authentication (--auth-tokens or STATEMGMT_AUTH_KEYSTONE=1)");
  }
  return { tokensFile: tokensFile && path.resolve(tokensFile), keystone, reflection: r };
}

/** "admin=admin,member=orchestrator": Keystone role name (any case) → our role. */
export function parseKeystoneRoles(text: string): Map<string, Role> {
  const out = new Map<string, Role>();
  for (const pair of text
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "")) {
    const [ks, ours, ...rest] = pair.split("=").map((x) => x.trim());
    if (!ks || !ours || rest.length || !isRole(ours)) {
      throw new ConfigError(`STATEMGMT_KEYSTONE_ROLES: "${pair}" is not keystone_role=role with role one of ${ROLES.join(", ")}`);
    }
    out.set(ks.toLowerCase(), ours);
  }
  return out;
}

function loadLimits(env: NodeJS.ProcessEnv, d: ConnectionLimits): ConnectionLimits {
  const limits: ConnectionLimits = {
    maxConnections: intEnv(env, "STATEMGMT_MAX_CONNECTIONS", d.maxConnections, 1, 1_000_000),
    handshakeTimeoutMs: intEnv(env, "STATEMGMT_HANDSHAKE_TIMEOUT_MS", d.handshakeTimeoutMs, 100, 600_000),
    idleTimeoutMs: intEnv(env, "STATEMGMT_CONNECTION_IDLE_MS", d.idleTimeoutMs, 1000, 86_400_000),
    maxAgeMs: intEnv(env, "STATEMGMT_CONNECTION_MAX_AGE_MS", d.maxAgeMs, 1000, 2_000_000_000),
    ageGraceMs: intEnv(env, "STATEMGMT_CONNECTION_AGE_GRACE_MS", d.ageGraceMs, 1000, 2_000_000_000),
    maxStreamsPerConnection: intEnv(env, "STATEMGMT_MAX_STREAMS_PER_CONNECTION", d.maxStreamsPerConnection, 1, 1_000_000),
    maxStreams: intEnv(env, "STATEMGMT_MAX_STREAMS", d.maxStreams, 1, 10_000_000),
    maxHealthStreams: intEnv(env, "STATEMGMT_MAX_HEALTH_STREAMS", d.maxHealthStreams, 0, 10_000_000),
    maxReflectionStreams: intEnv(env, "STATEMGMT_MAX_REFLECTION_STREAMS", d.maxReflectionStreams, 0, 10_000_000),
  };
  const problem = limitsProblem(limits);
  if (problem) throw new ConfigError(`STATEMGMT_CONNECTION_AGE_GRACE_MS / STATEMGMT_CONNECTION_MAX_AGE_MS: ${problem}`);
  return limits;
}

function loadDesignConfig(rootFlags: string[], env: NodeJS.ProcessEnv, d: DesignConfig): DesignConfig {
  const roots = [...rootFlags, ...(env.STATEMGMT_DESIGN_ROOTS ?? "").split(":")].filter((r) => r !== "");
  for (const r of roots) {
    if (!path.isAbsolute(r)) throw new ConfigError(`STATEMGMT_DESIGN_ROOTS / --design-root: "${r}" is not an absolute path`);
  }
  let extraCa: string | undefined;
  if (env.STATEMGMT_DESIGN_CA_FILE) {
    try {
      extraCa = readFileSync(env.STATEMGMT_DESIGN_CA_FILE, "utf8");
    } catch (err) {
      throw new ConfigError(`STATEMGMT_DESIGN_CA_FILE: cannot read ${env.STATEMGMT_DESIGN_CA_FILE}: ${(err as Error).message}`);
    }
    if (!extraCa.includes("-----BEGIN CERTIFICATE-----")) throw new ConfigError("STATEMGMT_DESIGN_CA_FILE: not a PEM certificate bundle");
  }
  let keystone: KeystoneOptions | undefined;
  if (env.STATEMGMT_KEYSTONE_URL) {
    const need = ["STATEMGMT_KEYSTONE_USERNAME", "STATEMGMT_KEYSTONE_PASSWORD", "STATEMGMT_KEYSTONE_PROJECT"].filter((k) => !env[k]);
    if (need.length) throw new ConfigError(`STATEMGMT_KEYSTONE_URL is set but ${need.join(", ")} ${need.length > 1 ? "are" : "is"} not`);
    keystone = {
      url: env.STATEMGMT_KEYSTONE_URL,
      username: env.STATEMGMT_KEYSTONE_USERNAME!,
      password: env.STATEMGMT_KEYSTONE_PASSWORD!,
      projectName: env.STATEMGMT_KEYSTONE_PROJECT!,
      userDomain: env.STATEMGMT_KEYSTONE_USER_DOMAIN || "Default",
      projectDomain: env.STATEMGMT_KEYSTONE_PROJECT_DOMAIN || "Default",
    };
  }
  return {
    ...d,
    roots: roots.map((r) => path.resolve(r)),
    extraCa,
    allowedHosts: (env.STATEMGMT_DESIGN_ALLOWED_HOSTS ?? "")
      .split(",")
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== ""),
    connectTimeoutMs: intEnv(env, "STATEMGMT_DESIGN_CONNECT_TIMEOUT_MS", d.connectTimeoutMs, 100, 600_000),
    idleTimeoutMs: intEnv(env, "STATEMGMT_DESIGN_IDLE_TIMEOUT_MS", d.idleTimeoutMs, 100, 3_600_000),
    maxRedirects: intEnv(env, "STATEMGMT_DESIGN_MAX_REDIRECTS", d.maxRedirects, 0, 20),
    retries: intEnv(env, "STATEMGMT_DESIGN_RETRIES", d.retries, 0, 10),
    timeoutMs: intEnv(env, "STATEMGMT_DESIGN_TIMEOUT_MS", d.timeoutMs, 100, 3_600_000),
    cacheTtlMs: intEnv(env, "STATEMGMT_DESIGN_CACHE_TTL_MS", d.cacheTtlMs, 0, 86_400_000),
    cacheMaxBytes: intEnv(env, "STATEMGMT_DESIGN_CACHE_MAX_BYTES", d.cacheMaxBytes, 0, 16 * 1024 * 1024 * 1024),
    maxBytes: intEnv(env, "STATEMGMT_DESIGN_MAX_BYTES", d.maxBytes, 1024, 1024 * 1024 * 1024),
    deckhandToken: env.STATEMGMT_DECKHAND_TOKEN || undefined,
    keystone,
  };
}

function tlsFiles(certFile: string | undefined, keyFile: string | undefined, clientCaFile: string | undefined): TlsFiles | undefined {
  if (!certFile && !keyFile) {
    if (clientCaFile) throw new ConfigError("STATEMGMT_TLS_CLIENT_CA / --tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS");
    return undefined;
  }
  if (!certFile || !keyFile) throw new ConfigError("TLS needs both --tls-cert (STATEMGMT_TLS_CERT) and --tls-key (STATEMGMT_TLS_KEY)");
  return { certFile: path.resolve(certFile), keyFile: path.resolve(keyFile), clientCaFile: clientCaFile ? path.resolve(clientCaFile) : undefined };
}

/** 127.0.0.0/8, ::1 and localhost: reachable only from this machine. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export function parseListen(value: string, what = "STATEMGMT_LISTEN / --listen"): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new ConfigError(`${what}: "${value}" is not HOST:PORT (e.g. 127.0.0.1:50051, [::1]:0)`);
  }
  return { host: m[1] ?? (m[2] || "0.0.0.0"), port };
}

function intEnv(env: NodeJS.ProcessEnv, name: string, dflt: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name}: "${raw}" is not an integer between ${min} and ${max}`);
  }
  return n;
}
