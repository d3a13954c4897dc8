// What a node's reports may store per boot action (STATEMGMT_BOOT_ACTION_MAX_DETAILS,
// STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES): a report that would pass either is
// refused whole with RESOURCE_EXHAUSTED BOOT_ACTION_REPORT_LIMIT, also when
// many reports race. Against the server's defaults (1,000 details, 1 MiB).
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { BootActionStatus } from "../gen/drydock/statemgmt/v1/boot_action_pb.js";
import { ConfigError, loadConfig } from "../src/config.js";
import { expectError, useServer, type StateClient } from "./harness.js";

async function reportingAction(client: StateClient, nodeName: string) {
  const taskId = (await client.createTask({ action: "deploy_nodes" })).task!.taskId;
  const key = Buffer.from((await client.setBootActionContext({ nodeName, taskId })).generatedIdentityKey);
  const { bootActions } = await client.createBootActions({ nodeName, taskId, actions: [{ actionName: "promjoin", signalling: true }] });
  return { taskId, key, actionId: bootActions[0]!.actionId };
}

const details = (n: number, prefix = "step") => Array.from({ length: n }, (_, i) => ({ message: `${prefix} ${i}`, error: true }));

describe("boot action report limits", () => {
  const h = useServer({ dbTxPoolSize: 5 });

  /** What the action's task holds: its messages (count), error count and version. */
  async function stored(taskId: string) {
    const { rows } = await h.pg.query("select count(*)::int as n from result_messages where task_id = $1", [taskId]);
    const task = (await h.client.getTask({ taskId })).task!;
    return { messages: rows[0].n as number, errorCount: task.result!.errorCount, version: task.version };
  }

  it("takes 1,000 details per action by default, then refuses the next report whole, naming the limit; a status alone still passes", async function () {
    this.timeout(20_000);
    const { taskId, key, actionId } = await reportingAction(h.client, "node-count");
    const first = await h.client.reportBootActionStatus({ actionId, identityKey: key, details: details(600) });
    expect(first.sequences).to.have.length(600);
    const before = await stored(taskId);
    expect(before.messages).to.equal(600);
    expect(before.errorCount).to.equal(600);

    const over = await expectError(h.client.reportBootActionStatus({ actionId, identityKey: key, details: details(401) }), grpc.status.RESOURCE_EXHAUSTED);
    expect(over.errorInfo!.reason).to.equal("BOOT_ACTION_REPORT_LIMIT");
    expect(over.errorInfo!.metadata).to.deep.equal({
      action_id: actionId,
      limit_name: "STATEMGMT_BOOT_ACTION_MAX_DETAILS",
      limit: "1000",
      current: "600",
      requested: "401",
    });
    expect(over.message).to.contain("1000").and.contain("STATEMGMT_BOOT_ACTION_MAX_DETAILS");
    expect(await stored(taskId)).to.deep.equal(before);

    // With a final status: refused whole, the status too.
    await expectError(
      h.client.reportBootActionStatus({ actionId, identityKey: key, status: BootActionStatus.FAILURE, details: details(401) }),
      grpc.status.RESOURCE_EXHAUSTED,
    );
    expect((await h.client.getBootAction({ actionId })).bootAction!.status).to.equal(BootActionStatus.INCOMPLETE);
    expect(await stored(taskId)).to.deep.equal(before);

    // Up to the limit exactly, then not one more.
    expect((await h.client.reportBootActionStatus({ actionId, identityKey: key, details: details(400) })).sequences).to.have.length(400);
    const full = await expectError(h.client.reportBootActionStatus({ actionId, identityKey: key, details: details(1) }), grpc.status.RESOURCE_EXHAUSTED);
    expect(full.errorInfo!.metadata).to.include({ limit: "1000", current: "1000", requested: "1" });
    const done = await h.client.reportBootActionStatus({ actionId, identityKey: key, status: BootActionStatus.SUCCESS });
    expect(done.bootAction!.status).to.equal(BootActionStatus.SUCCESS);
    expect(done.sequences).to.deep.equal([]);
    expect((await stored(taskId)).messages).to.equal(1000);
    const row = await h.pg.query("select detail_count, detail_bytes::int as bytes from boot_actions where action_id = $1", [actionId]);
    const bytes = [...details(600), ...details(400)].reduce((sum, d) => sum + Buffer.byteLength(d.message), 0);
    expect(row.rows[0]).to.deep.equal({ detail_count: 1000, bytes });
  });

  it("takes 1 MiB of details per action by default (text in UTF-8 plus extra as JSON), then refuses the next report whole", async () => {
    const { taskId, key, actionId } = await reportingAction(h.client, "node-bytes");
    // 15 details of 65,536 bytes each: "é" is 2 bytes; {"pad":"xx…"} is 10 bytes more than its padding.
    const big = (i: number) => ({ message: `é${i}`.padEnd(8, "."), extra: { pad: "x".repeat(65_536 - 9 - 10) } });
    expect(Buffer.byteLength(big(0).message) + Buffer.byteLength(JSON.stringify(big(0).extra))).to.equal(65_536);
    await h.client.reportBootActionStatus({ actionId, identityKey: key, details: Array.from({ length: 15 }, (_, i) => big(i)) });
    const before = await stored(taskId);
    expect(before.messages).to.equal(15);

    const over = await expectError(
      h.client.reportBootActionStatus({ actionId, identityKey: key, details: [big(15), big(16)] }),
      grpc.status.RESOURCE_EXHAUSTED,
    );
    expect(over.errorInfo!.reason).to.equal("BOOT_ACTION_REPORT_LIMIT");
    expect(over.errorInfo!.metadata).to.deep.equal({
      action_id: actionId,
      limit_name: "STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES",
      limit: String(1024 * 1024),
      current: String(15 * 65_536),
      requested: String(2 * 65_536),
    });
    expect(await stored(taskId)).to.deep.equal(before);
    // The one that still fits passes.
    await h.client.reportBootActionStatus({ actionId, identityKey: key, details: [big(15)] });
    expect((await stored(taskId)).messages).to.equal(16);
  });

  it("lets concurrent reports together store no more than the limit: exactly the ones that fit pass", async function () {
    this.timeout(30_000);
    const { taskId, key, actionId } = await reportingAction(h.client, "node-race");
    // 30 reports of 100 details at once: 10 fit.
    const outcomes = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) => h.client.reportBootActionStatus({ actionId, identityKey: key, details: details(100, `r${i}`) })),
    );
    const ok = outcomes.filter((o) => o.status === "fulfilled");
    const refused = outcomes.filter((o) => o.status === "rejected").map((o) => (o as PromiseRejectedResult).reason as grpc.ServiceError);
    expect(refused.map((e) => grpc.status[e.code])).to.deep.equal(Array(20).fill("RESOURCE_EXHAUSTED"));
    expect(ok).to.have.length(10);
    const s = await stored(taskId);
    expect(s.messages).to.equal(1000);
    expect(s.errorCount).to.equal(1000);
    // Each report landed whole or not at all: 100 messages of each passing one, in consecutive sequences.
    const { rows } = await h.pg.query(
      "select split_part(message, ' ', 1) as report, count(*)::int as n, max(seq) - min(seq) as span from result_messages where task_id = $1 group by 1",
      [taskId],
    );
    expect(rows).to.have.length(10);
    for (const r of rows) expect({ n: r.n, span: Number(r.span) }).to.deep.equal({ n: 100, span: 99 });
    const row = await h.pg.query("select detail_count from boot_actions where action_id = $1", [actionId]);
    expect(row.rows[0].detail_count).to.equal(1000);
  });

  it("reads the limits from STATEMGMT_BOOT_ACTION_MAX_DETAILS and _MAX_DETAIL_BYTES", () => {
    expect(loadConfig([], {}).bootActionReportLimits).to.deep.equal({ maxDetails: 1000, maxDetailBytes: 1024 * 1024 });
    expect(loadConfig([], { STATEMGMT_BOOT_ACTION_MAX_DETAILS: "50", STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES: "65536" }).bootActionReportLimits).to.deep.equal({
      maxDetails: 50,
      maxDetailBytes: 65_536,
    });
    expect(() => loadConfig([], { STATEMGMT_BOOT_ACTION_MAX_DETAILS: "0" })).to.throw(ConfigError, /STATEMGMT_BOOT_ACTION_MAX_DETAILS/);
    expect(() => loadConfig([], { STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES: "1k" })).to.throw(ConfigError, /STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES/);
  });
});

describe("boot action report limits, configured", () => {
  const h = useServer({ bootActionReportLimits: { maxDetails: 3, maxDetailBytes: 100 } });

  it("applies the server's settings", async () => {
    const { key, actionId } = await reportingAction(h.client, "node-configured");
    await h.client.reportBootActionStatus({ actionId, identityKey: key, details: details(2) });
    const count = await expectError(h.client.reportBootActionStatus({ actionId, identityKey: key, details: details(2) }), grpc.status.RESOURCE_EXHAUSTED);
    expect(count.errorInfo!.metadata).to.include({ limit_name: "STATEMGMT_BOOT_ACTION_MAX_DETAILS", limit: "3", current: "2", requested: "2" });
    const bytes = await expectError(
      h.client.reportBootActionStatus({ actionId, identityKey: key, details: [{ message: "m".repeat(100) }] }),
      grpc.status.RESOURCE_EXHAUSTED,
    );
    expect(bytes.errorInfo!.metadata).to.include({ limit_name: "STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES", limit: "100", current: "12", requested: "100" });
  });
});
