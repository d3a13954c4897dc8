import { randomUUID } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { filterFingerprint } from "../src/rpc/pagination.js";
import { expectInvalid, useServer } from "./harness.js";

describe("ListTasks", () => {
  const h = useServer();

  it("lists an empty database, then exactly the one task created", async () => {
    expect((await h.client.listTasks({})).tasks).to.deep.equal([]);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const res = await h.client.listTasks({});
    expect(res.tasks.map((t) => t.taskId)).to.deep.equal([task!.taskId]);
    expect(res.nextPageToken).to.equal("");
  });

  it("filters on statuses, actions, parent and creation time together", async () => {
    const { task: parent } = await h.client.createTask({ action: "filter_parent" });
    const a = (await h.client.createTask({ action: "filter_a", parentTaskId: parent!.taskId, initialStatus: TaskStatus.QUEUED })).task!;
    await h.client.createTask({ action: "filter_b", parentTaskId: parent!.taskId, initialStatus: TaskStatus.QUEUED });
    await h.client.createTask({ action: "filter_a", parentTaskId: parent!.taskId });
    await h.client.createTask({ action: "filter_a", initialStatus: TaskStatus.QUEUED });
    const res = await h.client.listTasks({
      statuses: [TaskStatus.QUEUED],
      actions: ["filter_a"],
      parentTaskId: parent!.taskId,
      createdAfter: parent!.created,
    });
    expect(res.tasks.map((t) => t.taskId)).to.deep.equal([a.taskId]);
    const none = await h.client.listTasks({ actions: ["filter_a"], createdBefore: parent!.created });
    expect(none.tasks).to.deep.equal([]);
  });

  it("pages in (created, task_id) order with a default of 50 and a maximum of 1000", async () => {
    await h.pg.query(`insert into tasks (task_id, action, status) select gen_random_uuid(), 'page_me', 'requested' from generate_series(1, 120)`);
    const first = await h.client.listTasks({ actions: ["page_me"] });
    expect(first.tasks).to.have.length(50);
    const all = await h.client.listTasks({ actions: ["page_me"], pageSize: 1000 });
    expect(all.tasks).to.have.length(120);
    expect(all.nextPageToken).to.equal("");
    const { rows } = await h.pg.query("select task_id from tasks where action = 'page_me' order by created, task_id");
    expect(all.tasks.map((t) => t.taskId)).to.deep.equal(rows.map((r) => r.task_id));
    const second = await h.client.listTasks({ actions: ["page_me"], pageToken: first.nextPageToken });
    expect(second.tasks.map((t) => t.taskId)).to.deep.equal(rows.slice(50, 100).map((r) => r.task_id));
  });

  it("refuses a negative or oversized page size, a foreign or forged token", async () => {
    await expectInvalid(h.client.listTasks({ pageSize: -1 }), "page_size");
    await expectInvalid(h.client.listTasks({ pageSize: 1001 }), "page_size");
    await h.pg.query(`insert into tasks (task_id, action, status) select gen_random_uuid(), 'tok', 'requested' from generate_series(1, 3)`);
    const { nextPageToken } = await h.client.listTasks({ actions: ["tok"], pageSize: 1 });
    expect(nextPageToken).to.not.equal("");
    const d = await expectInvalid(h.client.listTasks({ actions: ["other"], pageToken: nextPageToken }), "page_token");
    expect(d.message).to.contain("different filters");
    await expectInvalid(h.client.listTasks({ pageToken: "garbage!" }), "page_token");
    await expectInvalid(h.client.listTasks({ parentTaskId: "nope" }), "parent_task_id");
    await expectInvalid(h.client.listTasks({ statuses: [42 as TaskStatus] }), "statuses[0]");
    await expectInvalid(h.client.listTasks({ createdAfter: { ...timestampFromMs(0), nanos: 1 } }), "created_after");
  });

  it("refuses forged and altered page tokens on every paged RPC: INVALID_ARGUMENT, never INTERNAL", async () => {
    const { task } = await h.client.createTask({ action: "forge" });
    const id = task!.taskId;
    await h.client.createTask({ action: "forge", parentTaskId: id });
    await h.client.createTask({ action: "forge", parentTaskId: id });
    await h.client.appendResultMessages({ taskId: id, messages: [{ message: "a" }, { message: "b" }] });
    const b64 = (x: unknown) => Buffer.from(JSON.stringify(x)).toString("base64url");
    const fp = filterFingerprint({ statuses: [], actions: ["forge"], parentTaskId: null, createdAfter: null, createdBefore: null });
    // Unsigned tokens of the right shape whose keys hold junk (each answered INTERNAL before they were signed).
    const junkKeys = [["not-a-time", "x"], ["1e400", randomUUID()], [(2n ** 70n).toString(), randomUUID()], ["1", "not-a-uuid"], ["-1"], [String(2n ** 63n)]];
    const forged = [
      ...junkKeys.map((k) => b64({ v: 1, f: fp, k })),
      ...junkKeys.map((k) => `${b64({ v: 2, f: fp, k })}.${Buffer.alloc(16).toString("base64url")}`),
      "x".repeat(5000),
      ".",
      "..",
    ];
    const { nextPageToken: real } = await h.client.listTasks({ actions: ["forge"], pageSize: 1 });
    expect(real).to.contain(".");
    const [payload, mac] = real.split(".") as [string, string];
    const body = JSON.parse(Buffer.from(payload, "base64url").toString());
    // A real token whose cursor was changed, or whose signature was.
    forged.push(`${b64({ ...body, k: ["0", body.k[1]] })}.${mac}`);
    const flipped = Buffer.from(mac, "base64url");
    flipped[0] = flipped[0]! ^ 1;
    forged.push(`${payload}.${flipped.toString("base64url")}`);
    const calls: [string, (t: string) => Promise<unknown>][] = [
      ["ListTasks", (t) => h.client.listTasks({ actions: ["forge"], pageToken: t })],
      ["ListSubtasks", (t) => h.client.listSubtasks({ parentTaskId: id, pageToken: t })],
      ["ListResultMessages", (t) => h.client.listResultMessages({ taskId: id, pageToken: t })],
      ["ListBuildData", (t) => h.client.listBuildData({ taskId: id, pageToken: t })],
    ];
    for (const [name, call] of calls) {
      for (const t of forged) {
        const d = await expectInvalid(call(t), "page_token").catch((e: Error) => {
          throw new Error(`${name} with token ${t.slice(0, 80)}: ${e.message}`);
        });
        expect(d.message).to.contain("not a page token issued by this service");
      }
    }
    // The real one still works.
    const next = await h.client.listTasks({ actions: ["forge"], pageSize: 1, pageToken: real });
    expect(next.tasks).to.have.length(1);
  });

  it("returns timestamps to the microsecond", async () => {
    const id = randomUUID();
    await h.pg.query(`insert into tasks (task_id, action, status, created) values ($1, 'micro', 'requested', '2026-01-02 03:04:05.123456+00')`, [id]);
    const { task } = await h.client.getTask({ taskId: id });
    expect(task!.created!.seconds).to.equal(BigInt(Date.UTC(2026, 0, 2, 3, 4, 5) / 1000));
    expect(task!.created!.nanos).to.equal(123_456_000);
    // A page token must not lose the microseconds either: two tasks 1 µs apart page correctly.
    const id2 = randomUUID();
    await h.pg.query(`insert into tasks (task_id, action, status, created) values ($1, 'micro', 'requested', '2026-01-02 03:04:05.123457+00')`, [id2]);
    const p1 = await h.client.listTasks({ actions: ["micro"], pageSize: 1 });
    const p2 = await h.client.listTasks({ actions: ["micro"], pageSize: 1, pageToken: p1.nextPageToken });
    expect([p1.tasks[0]!.taskId, p2.tasks[0]!.taskId]).to.deep.equal([id, id2]);
  });
});
