import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { BuildDataView } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { defaultDesignConfig } from "../src/config.js";
import { expectError, expectInvalid, useServer } from "./harness.js";

const bytes = (s: string) => new TextEncoder().encode(s);
const tsOf = (d: Date) => ({ seconds: BigInt(Math.floor(d.getTime() / 1000)), nanos: (d.getTime() % 1000) * 1_000_000 });

describe("build data", () => {
  const h = useServer({ buildDataMaxBytes: 64 * 1024 });
  let taskId: string;
  before(async () => {
    taskId = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
  });

  it("stores a record without collected_at at the server's time", async () => {
    const before = Date.now();
    const { buildData } = await h.client.createBuildData({
      buildData: { nodeName: "node-a", taskId, generator: "lshw", dataFormat: "text/plain", dataElement: bytes("inventory") },
    });
    expect(buildData!.buildDataId > 0n).to.equal(true);
    const ms = Number(buildData!.collectedAt!.seconds) * 1000 + buildData!.collectedAt!.nanos / 1e6;
    expect(ms).to.be.within(before - 5000, Date.now() + 5000);
  });

  it("reads a record back equal in every field, to the microsecond", async () => {
    const collectedAt = { seconds: 1_700_000_123n, nanos: 654_321_000 };
    const data = {
      nodeName: "n".repeat(255),
      taskId,
      collectedAt,
      generator: "deploy:maas-script",
      dataFormat: "application/json; charset=utf-8",
      dataElement: bytes('{"a":1}'),
    };
    const { buildData } = await h.client.createBuildData({ buildData: data });
    const { buildData: list } = await h.client.listBuildData({ nodeName: data.nodeName });
    expect(list).to.have.length(1);
    const got = list[0]!;
    expect(got.buildDataId).to.equal(buildData!.buildDataId);
    expect(got.nodeName).to.equal(data.nodeName);
    expect(got.taskId).to.equal(taskId);
    expect(got.collectedAt!.seconds).to.equal(collectedAt.seconds);
    expect(got.collectedAt!.nanos).to.equal(collectedAt.nanos);
    expect(got.generator).to.equal(data.generator);
    expect(got.dataFormat).to.equal(data.dataFormat);
    expect(Buffer.from(got.dataElement).toString()).to.equal('{"a":1}');
  });

  it("returns only the newer of two records for a node with latest", async () => {
    const now = new Date();
    const dayAgo = new Date(now.getTime() - 86_400_000);
    await h.client.createBuildData({
      buildData: { nodeName: "foo", taskId, collectedAt: tsOf(dayAgo), generator: "lshw", dataFormat: "text/plain", dataElement: bytes("old") },
    });
    await h.client.createBuildData({
      buildData: { nodeName: "foo", taskId, collectedAt: tsOf(now), generator: "lshw", dataFormat: "text/plain", dataElement: bytes("new") },
    });
    const all = await h.client.listBuildData({ nodeName: "foo" });
    expect(all.buildData.map((b) => Buffer.from(b.dataElement).toString())).to.deep.equal(["new", "old"]);
    const latest = await h.client.listBuildData({ nodeName: "foo", latest: true });
    expect(latest.buildData.map((b) => Buffer.from(b.dataElement).toString())).to.deep.equal(["new"]);
  });

  it("returns one record per generator with latest: hello, hello, bye → 2", async () => {
    const t2 = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    for (const generator of ["hello", "hello", "bye"]) {
      await h.client.createBuildData({ buildData: { nodeName: "bar", taskId: t2, generator, dataFormat: "text/plain", dataElement: bytes(generator) } });
    }
    expect((await h.client.listBuildData({ taskId: t2, latest: true })).buildData).to.have.length(2);
    expect((await h.client.listBuildData({ nodeName: "bar", latest: true })).buildData).to.have.length(2);
    // The whole table: one per generator (the original raised a syntax error here).
    const everything = await h.client.listBuildData({ latest: true, pageSize: 100 });
    const gens = everything.buildData.map((b) => b.generator);
    expect(new Set(gens).size).to.equal(gens.length);
    expect(gens).to.include.members(["hello", "bye", "lshw", "deploy:maas-script"]);
  });

  it("applies the node and task filters together, pages newest first, and can leave the data out", async () => {
    const t3 = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    const t4 = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    const base = Date.UTC(2026, 5, 1);
    for (let i = 0; i < 25; i++) {
      const collectedAt = tsOf(new Date(base + i * 1000));
      await h.client.createBuildData({
        buildData: { nodeName: "baz", taskId: i % 5 === 0 ? t4 : t3, collectedAt, generator: `g${i}`, dataFormat: "text/plain", dataElement: bytes(`d${i}`) },
      });
    }
    const both = await h.client.listBuildData({ nodeName: "baz", taskId: t4 });
    expect(both.buildData.map((b) => b.generator)).to.deep.equal(["g20", "g15", "g10", "g5", "g0"]);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const res = await h.client.listBuildData({ nodeName: "baz", taskId: t3, pageSize: 7, pageToken, view: BuildDataView.BASIC });
      res.buildData.forEach((b) => expect(b.dataElement.length).to.equal(0));
      seen.push(...res.buildData.map((b) => b.generator));
      pageToken = res.nextPageToken;
    } while (pageToken);
    expect(seen).to.deep.equal(
      Array.from({ length: 25 }, (_, i) => 24 - i)
        .filter((i) => i % 5 !== 0)
        .map((i) => `g${i}`),
    );
  });

  it("outlives its task: a purge deletes the task, never its build data", async () => {
    const t5 = (await h.client.createTask({ action: "deploy_nodes" })).task!.taskId;
    await h.client.createBuildData({ buildData: { nodeName: "redeployed", taskId: t5, generator: "lshw", dataFormat: "text/plain", dataElement: bytes("x") } });
    await h.client.updateTask({ task: { taskId: t5, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const purged = await h.client.purgeTasks({ olderThanDays: 0 });
    expect(purged.tasksDeleted >= 1n).to.equal(true);
    await expectError(h.client.getTask({ taskId: t5 }), grpc.status.NOT_FOUND);
    const kept = await h.client.listBuildData({ nodeName: "redeployed" });
    expect(kept.buildData).to.have.length(1);
    expect(kept.buildData[0]!.taskId).to.equal(t5);
  });

  it("refuses bad records with INVALID_ARGUMENT naming the field, and an unknown task with NOT_FOUND", async () => {
    const ok = { nodeName: "n", taskId, generator: "lshw", dataFormat: "text/plain", dataElement: bytes("x") };
    await expectInvalid(h.client.createBuildData({}), "build_data");
    await expectInvalid(h.client.createBuildData({ buildData: { ...ok, nodeName: "" } }), "build_data.node_name");
    await expectInvalid(h.client.createBuildData({ buildData: { ...ok, nodeName: "n".repeat(256) } }), "build_data.node_name");
    await expectInvalid(h.client.createBuildData({ buildData: { ...ok, generator: "" } }), "build_data.generator");
    await expectInvalid(h.client.createBuildData({ buildData: { ...ok, generator: "g".repeat(257) } }), "build_data.generator");
    await expectInvalid(h.client.createBuildData({ buildData: { ...ok, dataFormat: "plain text" } }), "build_data.data_format");
    await expectInvalid(h.client.createBuildData({ buildData: { ...ok, dataElement: new Uint8Array(0) } }), "build_data.data_element");
    const big = await expectInvalid(h.client.createBuildData({ buildData: { ...ok, dataElement: new Uint8Array(64 * 1024 + 1) } }), "build_data.data_element");
    expect(big.message).to.contain(String(64 * 1024));
    await expectInvalid(h.client.createBuildData({ buildData: { ...ok, taskId: "t" } }), "build_data.task_id");
    await expectError(h.client.createBuildData({ buildData: { ...ok, taskId: randomUUID() } }), grpc.status.NOT_FOUND);
    await expectInvalid(h.client.listBuildData({ pageSize: 101 }), "page_size");
    const { rows } = await h.pg.query("select count(*)::int n from build_data where node_name = 'n'");
    expect(rows[0].n).to.equal(0);
  });
});

describe("build data larger than the design limit", () => {
  // The server's send limit once followed the design limit only: a build data
  // element above it was stored, then its response failed RESOURCE_EXHAUSTED
  // (so a retry stored it twice) and ListBuildData could never return it.
  const h = useServer({ buildDataMaxBytes: 3 * 1024 * 1024, design: defaultDesignConfig({ maxBytes: 1024 * 1024 }) });

  it("stores, answers and lists a 2 MiB element", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const element = new Uint8Array(2 * 1024 * 1024).fill(65);
    const created = await h.client.createBuildData({
      buildData: { nodeName: "big", taskId: task!.taskId, generator: "lshw", dataFormat: "text/plain", dataElement: element },
    });
    expect(created.buildData!.dataElement.length).to.equal(element.length);
    const listed = await h.client.listBuildData({ nodeName: "big" }, { deadlineMs: 10_000 });
    expect(listed.buildData.map((b) => b.dataElement.length)).to.deep.equal([element.length]);
  });
});
