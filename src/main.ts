// Entry point: config -> database (DATABASE_URL or embedded) -> migrations ->
// gRPC server; on SIGTERM/SIGINT (at any point) the reverse, embedded PostgreSQL last.
import { once } from "node:events";
import { abortable } from "./util/abortable.js";
import { ConfigError, loadConfig, type Settings } from "./config.js";
import { DataDirUnreachableError, startEmbedded, type EmbeddedDatabase } from "./db/embedded.js";
import { migrate } from "./db/migrate.js";
import { createLogger, type Logger } from "./core/log.js";
import { startServer, type StateServer } from "./server/server.js";
import { connectDb } from "./server/settings.js";
import type { ReloadResult } from "./auth/tokenFile.js";

async function main(): Promise<number> {
  const started = Date.now();
  let config: Settings;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`statemgmt: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logLevel);

  // Signals count from the start: one during start-up stops what has been
  // started so far (server, pools, embedded PostgreSQL); a second means "now".
  const stopping = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping.signal.aborted) {
      log.warn("second signal: exiting at once");
      process.exit(1);
    }
    log.info({ signal }, "shutting down");
    stopping.abort();
  };
  process.on("SIGTERM", onSignal).on("SIGINT", onSignal);
  // SIGHUP re-reads the auth token file (and never ends the process, as it would by default).
  let reloadAuth: (() => Promise<ReloadResult | undefined>) | undefined;
  process.on("SIGHUP", () => {
    if (!reloadAuth) return void log.info("SIGHUP before the server is ready: nothing to re-read yet");
    void reloadAuth().then((r) => log.info({ ...r }, r ? "auth token file re-read (SIGHUP)" : "SIGHUP: no auth token file to re-read"));
  });

  let embedded: EmbeddedDatabase | undefined;
  if (!config.databaseUrl) {
    try {
      embedded = await startEmbedded(config.dataDir, log.child({ component: "embedded-postgres" }), { signal: stopping.signal });
    } catch (err) {
      if (stopping.signal.aborted) return stopped(log);
      // EmbeddedStartError messages are one line saying what to do; no stack.
      log.fatal({ err: err instanceof Error ? err.message : String(err) }, "cannot start the embedded database");
      return err instanceof DataDirUnreachableError ? 2 : 1;
    }
  }
  const databaseUrl = config.databaseUrl ?? embedded!.url;
  const { sql, tx } = connectDb(databaseUrl, config);
  let starting: Promise<StateServer> | undefined;
  let server: StateServer;
  try {
    // A migration may wait long (for another replica's migration lock, or a
    // large table): a signal stops waiting for it.
    const applied = await abortable(migrate(tx, undefined, log), stopping.signal);
    log.info({ applied }, applied.length ? "applied migrations" : "schema up to date");
    starting = startServer({ ...config, db: { sql, tx }, databaseUrl, log });
    server = await abortable(starting, stopping.signal);
  } catch (err) {
    if (!stopping.signal.aborted) log.fatal({ err }, "start-up failed");
    // No call has been served: nothing to wait for. A migration still at work
    // is cut off and rolls back (migrations are transactional).
    await Promise.all([
      starting?.then(
        (s) => s.shutdown(0),
        () => {},
      ),
      sql.end({ timeout: 0 }),
      tx.end({ timeout: 0 }),
    ]).catch(() => {});
    await embedded?.stop();
    return stopping.signal.aborted ? stopped(log) : 1;
  }
  reloadAuth = () => server.auth.reload();
  log.info({ address: server.address, metrics: server.metricsAddress, startupMs: Date.now() - started, embedded: !!embedded }, "ready");

  if (!stopping.signal.aborted) await once(stopping.signal, "abort");
  await server.shutdown(config.shutdownGraceMs);
  await Promise.all([sql.end({ timeout: 5 }), tx.end()]);
  await embedded?.stop();
  return stopped(log);
}

function stopped(log: Logger): number {
  log.info("stopped");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`statemgmt: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
