// Entry point: config -> database (DATABASE_URL or embedded) -> migrations ->
// gRPC server; on SIGTERM/SIGINT the reverse, embedded PostgreSQL last.
import { ConfigError, loadConfig } from "./config.js";
import { connect } from "./db/connect.js";
import { DataDirInUseError, startEmbedded, type EmbeddedDatabase } from "./db/embedded.js";
import { migrate } from "./db/migrate.js";
import { createTransactor } from "./store/transactions.js";
import { createLogger } from "./log.js";
import { startServer } from "./server/server.js";

async function main(): Promise<number> {
  const started = Date.now();
  let config;
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

  let embedded: EmbeddedDatabase | undefined;
  try {
    if (!config.databaseUrl) embedded = await startEmbedded(config.dataDir, log.child({ component: "embedded-postgres" }));
  } catch (err) {
    log.fatal({ err: err instanceof DataDirInUseError ? err.message : err }, "cannot start the embedded database");
    return 1;
  }
  const databaseUrl = config.databaseUrl ?? embedded!.url;
  const sql = connect({ url: databaseUrl, max: config.dbPoolSize, timeouts: config.dbTimeouts });
  const tx = createTransactor({ url: databaseUrl, slots: config.dbTxPoolSize, timeouts: config.dbTimeouts });
  let server;
  try {
    const applied = await migrate(tx);
    log.info({ applied }, applied.length ? "applied migrations" : "schema up to date");
    server = await startServer({
      db: { sql, tx },
      log,
      host: config.listen.host,
      port: config.listen.port,
      healthIntervalMs: config.healthIntervalMs,
      databaseUrl,
      watchBufferLimit: config.watchBufferLimit,
      heartbeatMs: config.heartbeatMs,
      buildDataMaxBytes: config.buildDataMaxBytes,
      limits: config.limits,
      design: config.design,
    });
  } catch (err) {
    log.fatal({ err }, "start-up failed");
    await Promise.all([sql.end({ timeout: 5 }), tx.end()]).catch(() => {});
    await embedded?.stop();
    return 1;
  }
  log.info({ address: server.address, startupMs: Date.now() - started, embedded: !!embedded }, "ready");

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  log.info({ signal }, "shutting down");
  // A second signal means "now".
  const hard = () => {
    log.warn("second signal: exiting at once");
    process.exit(1);
  };
  process.once("SIGTERM", hard).once("SIGINT", hard);
  await server.shutdown(config.shutdownGraceMs);
  await Promise.all([sql.end({ timeout: 5 }), tx.end()]);
  await embedded?.stop();
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
