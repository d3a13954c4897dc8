// PostgreSQL failover under load: a server on a multi-host DATABASE_URL with
// target_session_attrs=read-write follows a promoted standby. With synchronous
// replication every acknowledged append is on the new primary, watchers get
// every message exactly once and in order, health is SERVING again, and the
// leader keeps (or re-claims) its lease.
//
// Two embedded clusters in temporary directories: a primary started by
// startEmbedded, stopped cleanly and copied into a standby (a base backup
// without pg_basebackup, which the embedded binaries lack), then both run
// from pg_ctl as the clusters' owner. The standby is listed first in the URL,
// so before the failover the driver must skip it (it is up, but read-only).
import { execFileSync } from "node:child_process";
import { appendFile, chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import pg from "pg";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { HealthCheckResponse_ServingStatus as Serving } from "../gen/grpc/health/v1/health_pb.js";
import { createClient } from "../src/client/client.js";
import { DEFAULT_TIMEOUTS } from "../src/db/connect.js";
import { startEmbedded } from "../src/db/embedded.js";
import { migrate } from "../src/db/migrate.js";
import { createLogger } from "../src/core/log.js";
import type { StateServer } from "../src/server/server.js";
import { createTransactor } from "../src/store/transactions.js";
import { LISTENER_APPLICATION_NAME } from "../src/watch/listener.js";
import { Cluster, decodeError, eventually, quietPeriod, startTestServer, type TestServer } from "./kit/index.js";
import { expectStoredAsAcknowledged, healthBecomes, startWatchers, startWriters } from "./load.js";

const WRITERS = 4;
const WATCHERS_PER_TASK = 2;
const LEASE_TTL_MS = 3000;
const ELECTION = "failover";
const STANDBY_NAME = "standby1";

/** The leader renews every ttl/3 (as the orchestrator does), and retries a failed call after RETRY_MS. */
const RENEW_EVERY_MS = LEASE_TTL_MS / 3;
const RETRY_MS = 100;
const ttl = (ms: number) => ({ seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });

async function query<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(text, values)).rows;
  } finally {
    await c.end();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

describe("PostgreSQL failover to a promoted standby", () => {
  let dirs: string[] = [];
  let primary: Cluster;
  let standby: Cluster;
  let primaryUrl: string;
  let standbyUrl: string;
  let multiUrl: string;
  let started: TestServer;
  let server: StateServer;

  before(async function () {
    this.timeout(120_000);
    const primaryDir = await mkdtemp(path.join(tmpdir(), "statemgmt-primary-"));
    const standbyDir = await mkdtemp(path.join(tmpdir(), "statemgmt-standby-"));
    dirs = [primaryDir, standbyDir];
    const embedded = await startEmbedded(primaryDir, createLogger("silent"));
    primaryUrl = embedded.url;
    const pgdata = path.join(primaryDir, "pg");
    primary = await Cluster.running(pgdata);
    const migrator = createTransactor({ url: primaryUrl, slots: 1, timeouts: DEFAULT_TIMEOUTS });
    await migrate(migrator);
    await migrator.end();
    // initdb --auth=password lets replication connections from 127.0.0.1 in; say so if that changes.
    const hba = await readFile(path.join(pgdata, "pg_hba.conf"), "utf8");
    expect(hba, "pg_hba.conf admits replication over 127.0.0.1").to.match(/^host\s+replication\s+all\s+127\.0\.0\.1\/32\s+(password|scram-sha-256|md5)\s*$/m);

    // Base backup: a clean stop, then a copy keeping owner and modes (0700).
    await embedded.stop();
    const copy = path.join(standbyDir, "pg");
    await chmod(standbyDir, 0o755); // the cluster owner must reach its data directory (startEmbedded does this for the primary's)
    execFileSync("cp", ["-a", pgdata, copy]);
    standby = primary.sibling(copy, await freePort());
    const password = decodeURIComponent(new URL(primaryUrl).password);
    await writeFile(path.join(copy, "standby.signal"), "");
    await standby.own(path.join(copy, "standby.signal"));
    await appendFile(
      path.join(copy, "postgresql.auto.conf"),
      `primary_conninfo = 'host=127.0.0.1 port=${primary.port} user=postgres password=${password} application_name=${STANDBY_NAME}'\n`,
    );
    const settings = ["lc_messages=C", "log_connections=on"];
    await primary.start("failover.log", settings);
    await standby.start("failover.log", settings);
    const standbyAddress = `127.0.0.1:${standby.port}`;
    standbyUrl = primaryUrl.replace(`127.0.0.1:${primary.port}`, standbyAddress);
    // The standby first: the driver must pass over it while it is read-only.
    multiUrl = `${primaryUrl.replace(`127.0.0.1:${primary.port}`, `${standbyAddress},127.0.0.1:${primary.port}`)}?target_session_attrs=read-write`;

    const replication = () =>
      query<{ state: string; sync_state: string }>(primaryUrl, "select state, sync_state from pg_stat_replication where application_name = $1", [STANDBY_NAME]);
    let last: unknown;
    const replicationState = async () => {
      const rows = await replication();
      last = rows;
      return rows[0];
    };
    const lastSeen = (what: string) => () => `${what} (last: ${JSON.stringify(last)})`;
    await eventually(async () => (await replicationState())?.state === "streaming", 20_000, lastSeen("the standby streaming"));
    await query(primaryUrl, "alter system set synchronous_standby_names = '*'");
    await query(primaryUrl, "select pg_reload_conf()");
    await eventually(async () => (await replicationState())?.sync_state === "sync", 20_000, lastSeen("the standby synchronous"));

    started = await startTestServer({ url: multiUrl }, { dbPoolSize: 8, dbTxPoolSize: 4, healthIntervalMs: 2000, heartbeatMs: 1000 });
    server = started.server;
  });

  after(async function () {
    this.timeout(60_000);
    await started?.stop(1000);
    // The old primary is down already (never restarted: that would be a split brain).
    await primary?.stop("immediate").catch(() => {});
    await standby?.stop("fast").catch(() => {});
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("kill the primary, promote the standby: no acknowledged append lost or repeated, watchers get every message once, SERVING, lease held", async function () {
    this.timeout(60_000);
    const client = createClient(StateService, server.address);
    const tasks: string[] = [];
    for (let i = 0; i < WRITERS; i++) tasks.push((await client.createTask({ action: "failover" })).task!.taskId);

    // Before the failover every connection is on the primary, none on the read-only standby.
    const ours = (url: string) =>
      query<{ application_name: string; n: number }>(
        url,
        "select application_name, count(*)::int as n from pg_stat_activity where application_name like 'drydock-statemgmt%' group by 1 order by 1",
      );
    expect(await ours(standbyUrl), "our sessions on the standby").to.deep.equal([]);
    expect((await ours(primaryUrl)).map((r) => r.application_name)).to.include(LISTENER_APPLICATION_NAME);

    const watchers = startWatchers(server.address, tasks, WATCHERS_PER_TASK);
    let killedAt = 0;
    let down = false;
    let firstWriteAfterKill = 0;
    const writers = startWriters(client, tasks, (_taskId, started) => {
      if (down && started >= killedAt && !firstWriteAfterKill) firstWriteAfterKill = Date.now();
    });
    const { acked, failures } = writers;

    // The leader claims with a ttl and renews every ttl/3; a lost lease is claimed again.
    let leading = true;
    const leader = { terms: [] as bigint[], renewedAfterKill: 0, reclaimed: 0, failures: [] as string[], term: 0n };
    const leaderLoop = (async () => {
      while (leading) {
        const started = Date.now();
        try {
          if (leader.term === 0n) {
            const r = await client.claimLeadership({ election: ELECTION, instanceId: "orch-1", ttl: ttl(LEASE_TTL_MS) }, { deadlineMs: 2000 });
            expect(r.isLeader, "nobody else claims").to.equal(true);
            leader.term = r.leader!.term;
            leader.terms.push(leader.term);
          } else {
            await client.renewLeadership({ election: ELECTION, instanceId: "orch-1", term: leader.term }, { deadlineMs: 2000 });
            if (down && started >= killedAt) leader.renewedAfterKill++;
          }
          await quietPeriod(RENEW_EVERY_MS, "paces the leader's renewals");
        } catch (err) {
          const d = decodeError(err);
          leader.failures.push(d.errorInfo?.reason ?? grpc.status[d.code]!);
          if (d.errorInfo?.reason === "LEADERSHIP_LOST") {
            leader.term = 0n;
            leader.reclaimed++;
          }
          await quietPeriod(RETRY_MS, "paces the leader's retries");
        }
      }
    })();

    const waitForAcks = (n: number) => writers.waitForAcks(n, 30_000);
    await waitForAcks(20);
    const before = new Map(acked);

    // Failover: the primary dies at once, the standby is promoted.
    const relistened = new Promise<number>((resolve) => server.hub.once("listening", () => resolve(Date.now())));
    killedAt = Date.now();
    await primary.stop("immediate");
    down = true;
    await healthBecomes(server, Serving.NOT_SERVING);
    const promoting = Date.now();
    // log_connections: the sessions the driver opened on the standby (and dropped, it being read-only) before the promotion.
    const refused = (await readFile(path.join(standby.pgdata, "failover.log"), "utf8")).split("connection authorized").length - 1;
    await standby.promote();
    const promotedAt = Date.now();
    await waitForAcks(Math.max(...before.values()) + 20);
    const listeningAt = await relistened;
    await writers.stop();
    // Health is SERVING on the new primary (it may never have left SERVING if no probe fell in the outage).
    expect(await server.health.probe(), "health after the failover").to.equal(Serving.SERVING);
    // The lease is held: renewed (or claimed again) on the new primary.
    await eventually(() => leader.renewedAfterKill > 0, 20_000, "the lease renewed after the failover");
    leading = false;
    await leaderLoop;
    const lease = await client.getLeader({ election: ELECTION });

    await watchers.stopWhenCaughtUp(acked);
    client.close();

    // Stored on the new primary = acknowledged, gapless, each once.
    const { acked: ackedTotal, stored: storedTotal } = await expectStoredAsAcknowledged(standbyUrl, acked, watchers.seen);
    const sessions = await ours(standbyUrl);
    console.log(
      `      failover: ${ackedTotal} acknowledged, ${storedTotal} stored (0 lost); first write ${firstWriteAfterKill - killedAt} ms after the kill, ` +
        `${firstWriteAfterKill - promoting} ms after pg_ctl promote began ` +
        `(promoted ${promoting - killedAt} ms after the kill, once health was NOT_SERVING; promotion took ${promotedAt - promoting} ms; ` +
        `${refused} sessions opened on the standby and dropped before; LISTEN again ${listeningAt - killedAt} ms after the kill); ` +
        `${WRITERS * WATCHERS_PER_TASK} watchers each got every message once (resumed after: ${watchers.resumes.join(", ") || "nothing"}); ` +
        `lease terms ${leader.terms.join(" → ")}, now term ${lease.leader?.term} held by ${lease.leader?.instanceId}, ${leader.reclaimed} re-claims, ` +
        `leader call failures: ${leader.failures.join(", ") || "none"}; write failures: ${summarize(failures)}`,
    );
    expect(storedTotal).to.equal(ackedTotal);
    expect(firstWriteAfterKill, "a write succeeded after the kill").to.be.greaterThan(0);
    expect(lease.leader?.instanceId).to.equal("orch-1");
    expect(lease.leader?.term).to.equal(leader.term);
    expect(
      sessions.map((r) => r.application_name),
      "the LISTEN connection is on the new primary",
    ).to.include(LISTENER_APPLICATION_NAME);
    expect(
      failures.filter((f) => f.code !== "UNAVAILABLE" && f.code !== "DEADLINE_EXCEEDED"),
      "writes during the failover fail UNAVAILABLE or DEADLINE_EXCEEDED",
    ).to.deep.equal([]);
  });

  it("a primary set read-only (default_transaction_read_only) answers writes UNAVAILABLE and health NOT_SERVING, until it is writable again", async function () {
    this.timeout(30_000);
    const client = createClient(StateService, server.address);
    try {
      const { task } = await client.createTask({ action: "failover" });
      const append = () => client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "x" }] }, { deadlineMs: 5000 });
      const readOnly = async (on: boolean) => {
        await query(standbyUrl, `alter system set default_transaction_read_only = ${on ? "on" : "off"}`);
        await query(standbyUrl, "select pg_reload_conf()");
      };
      await readOnly(true);
      // Sessions pick the new default up when they next go idle: wait for the probe to see it.
      await eventually(async () => (await server.health.probe()) === Serving.NOT_SERVING, 20_000, "health seeing the read-only database");
      let err: unknown;
      await append().catch((e: unknown) => (err = e));
      const d = decodeError(err);
      expect(grpc.status[d.code]).to.equal("UNAVAILABLE");
      expect(d.errorInfo?.reason).to.equal("DATABASE_UNAVAILABLE");
      expect(await query(standbyUrl, "select 1 from result_messages where task_id = $1", [task!.taskId]), "nothing written").to.deep.equal([]);

      await readOnly(false);
      await eventually(async () => (await server.health.probe()) === Serving.SERVING, 20_000, "health seeing the writable database");
      expect((await append()).sequences).to.deep.equal([1n]);
    } finally {
      client.close();
    }
  });
});

function summarize(fs: { code: string; ms: number; message: string }[]): string {
  const by = new Map<string, number[]>();
  for (const f of fs) {
    const key = `${f.code} (${f.message.slice(0, 80)})`;
    by.set(key, [...(by.get(key) ?? []), f.ms]);
  }
  return [...by].map(([c, ms]) => `${c} ×${ms.length} (max ${Math.max(...ms)} ms)`).join(", ") || "none";
}
