import { randomUUID } from "node:crypto";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
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
