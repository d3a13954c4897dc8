// Assembles the gRPC server: StateService, health, reflection.
import type { EventEmitter } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { file_drydock_statemgmt_v1_state_service, StateService } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { file_grpc_health_v1_health, Health } from "../../gen/grpc/health/v1/health_pb.js";
import { file_google_rpc_error_details } from "../../gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status } from "../../gen/google/rpc/status_pb.js";
import * as reflV1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as reflV1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { Db } from "../store/transactions.js";
import { openPool, poolUsage } from "../db/connect.js";
import { ShuttingDownError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { taskRpcs } from "../rpc/tasks.js";
import { createReaders } from "../store/readers.js";
import { createWriters } from "../store/writers.js";
import { messageRpcs } from "../rpc/messages.js";
import { watchRpcs } from "../rpc/watch.js";
import { bootActionRpcs } from "../rpc/bootActions.js";
import { exportImportRpcs } from "../rpc/exportImport.js";
import { buildDataRpcs } from "../rpc/buildData.js";
import { leadershipRpcs } from "../rpc/leadership.js";
import { designRpcs } from "../rpc/design.js";
import { createDesignFetcher } from "../design/index.js";
import type { DesignFetcher } from "../design/fetcher.js";
import { WatchHub } from "../watch/hub.js";
import { SYSTEM_CLOCK, type Clock } from "../core/clock.js";
import { NO_ELECTION_COUNTERS, NO_WATCH_COUNTERS } from "../metrics/watchCounters.js";
import { PageTokens } from "../rpc/pagination.js";
import { secretsGet } from "../store/secrets.js";
import { addService, StreamBudget, type OpenCalls, type ServiceEdge } from "./adapter.js";
import { ConnectionListener, grpcServerOptions, type ConnectionSignals } from "./connections.js";
import { TlsSource } from "./tls.js";
import { Metrics } from "../metrics/registry.js";
import { startMetricsServer } from "../metrics/http.js";
import { HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import { VERSION } from "../core/version.js";
import { DatabaseHealth, healthRpcs, KeystoneHealth } from "./health.js";
import { ReflectionIndex, reflectionV1, reflectionV1alpha } from "./reflection.js";
import { keepRepeatedCredentials, startAuth, type EdgeAuth } from "./auth.js";
import { limitKeyAuthorized, PeerRateLimiter } from "./rateLimit.js";
import { settingsWith, type Settings } from "./settings.js";

/**
 * What startServer() is given to work with, and the settings it runs with:
 * any left out (or undefined) are the defaults (settings.ts). main.ts passes
 * the whole of config.ts's Settings.
 */
export interface ServerOptions extends Partial<Settings> {
  /** The shared pool and the transaction slots; the caller owns and ends them. */
  db: Db;
  /** URL of the same database, for the LISTEN connection of the watch hub. */
  databaseUrl: string;
  log: Logger;
  /** Tests only (main.ts never sets it): the clock of leases and the design cache (default: the database's). */
  clock?: Clock;
  /** Tests only: longest a scrape reuses the COMPLETE and TERMINATED counts (default 5 minutes; 0: every scrape). */
  metricsFinishedCountMaxAgeMs?: number;
}

export interface StateServer {
  /** host:port actually bound (port 0 resolved). */
  address: string;
  port: number;
  health: DatabaseHealth;
  hub: WatchHub;
  /** Where /metrics is served, when it is. */
  metricsAddress?: string;
  metrics?: Metrics;
  /** The TCP listener's signals: connections opened, vouched for, closed, and calls in progress. */
  connections: EventEmitter<ConnectionSignals>;
  /** The TLS certificate source, when serving TLS. */
  tls?: TlsSource;
  design: DesignFetcher;
  /** Authentication: the token file's reload (SIGHUP) and its events. */
  auth: EdgeAuth;
  /**
   * Stops accepting calls, ends open streams with UNAVAILABLE, gives unary
   * calls up to graceMs to finish, then cancels what is left.
   */
  shutdown(graceMs: number): Promise<void>;
}

export async function startServer(o: ServerOptions): Promise<StateServer> {
  const s = settingsWith(o);
  const { limits, design: designConfig } = s;
  const clock = o.clock ?? SYSTEM_CLOCK;
  // Every database connection opens now, not under the first burst of calls
  // (a burst that stalls the event loop past the connect timeout would fail
  // the queries waiting for them).
  await Promise.all([openPool(o.db.sql, { timeoutMs: s.dbOpenTimeoutMs }), o.db.tx.open({ timeoutMs: s.dbOpenTimeoutMs })]);
  o.log.info({ pool: poolUsage(o.db.sql).size, transactionSlots: o.db.tx.usage().size }, "database connections open");
  const server = new grpc.Server({
    // Room for the largest response we build: a design document, a build
    // data element (CreateBuildData and ListBuildData return it), or a page
    // (its budget is an estimate: room to spare), plus metadata.
    "grpc.max_send_message_length": Math.max(designConfig.maxBytes, s.buildDataMaxBytes, 2 * s.responseMaxBytes) + 1024 * 1024,
    // Room for the largest build data element plus its record, so that an
    // oversized element gets our INVALID_ARGUMENT naming the limit; and for
    // an ImportRecords call carrying it as a base64 record (4/3 of its size).
    "grpc.max_receive_message_length": Math.ceil((s.buildDataMaxBytes * 4) / 3) + 1024 * 1024,
    // Detect dead peers: a ping every minute on a connection with calls,
    // closed when unanswered for 20 s.
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
    ...grpcServerOptions(limits),
  });
  const tlsSource = s.tls ? await TlsSource.start(s.tls, o.log.child({ component: "tls" })) : undefined;
  const injector = server.createConnectionInjector(tlsSource ? tlsSource.serverCredentials() : grpc.ServerCredentials.createInsecure());
  keepRepeatedCredentials(server); // before any connection: a repeated authorization header is refused
  const listener = new ConnectionListener(injector, limits, o.log.child({ component: "connections" }), !!tlsSource);
  const metrics = s.metricsListen ? new Metrics({ db: o.db, version: VERSION, finishedCountMaxAgeMs: o.metricsFinishedCountMaxAgeMs }) : undefined;
  const calls: OpenCalls = {
    observer: metrics?.calls,
    unary: new Set(),
    streams: new Set(),
    streamEndsAt: (peer) => listener.streamEndsAt(peer),
    onCall: {
      started: (peer) => listener.callStarted(peer),
      ended: (peer) => listener.callEnded(peer),
      vouched: (peer) => listener.vouch(peer),
    },
  };
  // Each service's streams count against a budget of their own: health and
  // reflection are open to anyone (reflection unless STATEMGMT_REFLECTION=authenticated),
  // so their streams must never use up the StateService's.
  const budgets = {
    stateService: new StreamBudget(limits.maxStreams, "STATEMGMT_MAX_STREAMS", "StateService streaming calls"),
    health: new StreamBudget(limits.maxHealthStreams, "STATEMGMT_MAX_HEALTH_STREAMS", "health Watch streams"),
    reflection: new StreamBudget(limits.maxReflectionStreams, "STATEMGMT_MAX_REFLECTION_STREAMS", "server reflection streams"),
  };
  const health = new DatabaseHealth(o.db.sql, s.healthIntervalMs, o.log.child({ component: "health" }));
  const index = new ReflectionIndex(
    [StateService.typeName, Health.typeName, reflV1.ServerReflection.typeName, reflV1alpha.ServerReflection.typeName],
    [
      file_drydock_statemgmt_v1_state_service,
      file_grpc_health_v1_health,
      reflV1.file_grpc_reflection_v1_reflection,
      reflV1alpha.file_grpc_reflection_v1alpha_reflection,
    ],
    // The types errors carry in grpc-status-details-bin (google.rpc.Status of
    // ErrorInfo and BadRequest Anys), so grpcurl can decode them.
    [file_google_rpc_status, file_google_rpc_error_details],
  );
  const hub = new WatchHub({
    sql: o.db.sql,
    listenUrl: o.databaseUrl,
    log: o.log.child({ component: "watch" }),
    bufferLimit: s.watchBufferLimit,
    bytes: { streamBytes: s.watchStreamMaxBytes, serverBytes: s.watchMaxBytes },
    heartbeatMs: s.heartbeatMs,
    // Well above the interval: an event-loop stall of a busy server must not
    // look like a hung connection (its replacement makes every feed re-read).
    heartbeatTimeoutMs: 3 * s.heartbeatMs,
    finishLingerMs: s.watchFinishLingerMs,
    counters: metrics?.watch ?? NO_WATCH_COUNTERS,
    clock,
  });
  const tokens = new PageTokens(await secretsGet(o.db.sql, { name: "page_token" }));
  const auth = await startAuth(s.auth, o.log.child({ component: "auth" }), designConfig.extraCa);
  // Keystone's own health entry: probed while it answers every 30 s, while it does not at the database's interval.
  const keystoneHealth = auth.keystone ? new KeystoneHealth(auth.keystone, s.healthIntervalMs, o.log.child({ component: "health" })) : undefined;
  if (keystoneHealth) metrics?.keystone.observe(auth.keystone!.origin, () => keystoneHealth.status === Status.SERVING);
  const design = createDesignFetcher(designConfig, () => clock.nowMs(), metrics?.design);
  // Calls nodes make without a token: a rate limit per client address, checked before their guard.
  const stateGuard =
    s.nodeCallLimit.ratePerSecond > 0
      ? limitKeyAuthorized(
          auth.stateService,
          new PeerRateLimiter(
            s.nodeCallLimit,
            () => clock.nowMs(),
            () => metrics?.calls.nodeCallRateLimited(),
          ),
        )
      : auth.stateService;
  const writers = createWriters(o.db.sql, s.writeCoalescing);
  const readers = createReaders(o.db.sql, s.writeCoalescing);
  // A failure from here on stops what was started: the caller gets no handle to do it.
  const abandon = async (err: unknown): Promise<never> => {
    health.stop();
    keystoneHealth?.stop();
    listener.close();
    tlsSource?.close();
    server.forceShutdown();
    await hub.stop().catch(() => {});
    await design.close().catch(() => {});
    await auth.close().catch(() => {});
    throw err;
  };
  await hub.start().catch(abandon);
  addService(
    server,
    StateService,
    {
      ...taskRpcs(o.db, tokens, writers, readers, s, clock),
      ...messageRpcs(o.db.sql, tokens, writers, s, metrics?.calls),
      ...watchRpcs(hub),
      ...buildDataRpcs(o.db.sql, tokens, s, metrics?.calls),
      ...leadershipRpcs(o.db, hub, clock, metrics?.watch ?? NO_ELECTION_COUNTERS),
      ...designRpcs(design.fetcher),
      ...bootActionRpcs(o.db, tokens, s),
      ...exportImportRpcs(o.db),
    },
    o.log,
    calls,
    { guard: stateGuard, streams: budgets.stateService, okVouches: true },
  );
  addService(server, Health, healthRpcs(health, keystoneHealth), o.log, calls, { guard: auth.health, streams: budgets.health });
  // Both reflection versions share one budget.
  const reflection: ServiceEdge = { guard: auth.reflection, streams: budgets.reflection };
  addService(server, reflV1.ServerReflection, reflectionV1(index), o.log, calls, reflection);
  addService(server, reflV1alpha.ServerReflection, reflectionV1alpha(index), o.log, calls, reflection);

  const host = s.listen.host.includes(":") ? `[${s.listen.host}]` : s.listen.host;
  const port = await listener
    .listen(s.listen.host, s.listen.port)
    .catch((err: Error) => abandon(new Error(`cannot listen on ${host}:${s.listen.port}: ${err.message}`, { cause: err })));
  await health.start().catch(abandon);
  keystoneHealth?.start();
  const metricsServer =
    metrics && s.metricsListen
      ? await startMetricsServer({
          ...s.metricsListen,
          metrics,
          ready: () => health.status === Status.SERVING,
          log: o.log.child({ component: "metrics" }),
        }).catch((err: Error) =>
          abandon(new Error(`cannot serve metrics on ${s.metricsListen!.host}:${s.metricsListen!.port}: ${err.message}`, { cause: err })),
        )
      : undefined;
  const address = `${host}:${port}`;
  o.log.info({ address, tls: tlsSource ? (tlsSource.requireClientCertificate ? "mutual" : "server") : "off" }, "serving gRPC");

  let shuttingDown: Promise<void> | undefined;
  return {
    address,
    port,
    health,
    hub,
    design: design.fetcher,
    auth,
    metricsAddress: metricsServer?.address,
    metrics,
    connections: listener,
    tls: tlsSource,
    shutdown(graceMs) {
      shuttingDown ??= (async () => {
        health.stop();
        keystoneHealth?.stop();
        listener.close();
        tlsSource?.close();
        const abort = (set: Set<AbortController>) => [...set].forEach((ac) => ac.abort(new ShuttingDownError()));
        abort(calls.streams);
        const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), graceMs)));
        if ((await Promise.race([drained, late])) === "late") {
          o.log.warn({ open: calls.unary.size }, "grace period over; cancelling the calls still running");
          abort(calls.unary);
          await new Promise((r) => setImmediate(r));
          server.forceShutdown();
        }
        clearTimeout(timer);
        await hub.stop();
        await design.close();
        await auth.close();
        await metricsServer?.close();
      })();
      return shuttingDown;
    },
  };
}
