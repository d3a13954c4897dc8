// Byte budgets on reads (finding F3), scaled down: a task of 200 messages of
// 60 KB, a response budget of 256 KiB and a WatchTask budget of 256 KiB a
// stream. List pages shrink to fit, GetTask FULL refuses what it could not
// send, a paused WatchTask stream is ended once it holds its budget unsent
// and gives it back; its client resumes without gaps or duplicates.
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { BuildDataView, StateService, TaskView, type WatchTaskResponse } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { createClient } from "../src/client/client.js";
import { WatchBytes } from "../src/watch/budget.js";
import { BoundedQueue } from "../src/watch/queue.js";
import { decodeError, expectError, range, useServer, type StateClient } from "./kit/index.js";

const KB60 = 60 * 1024;
const BUDGET = 256 * 1024;
const extra = { blob: "x".repeat(KB60 - 64) };
/** Estimated bytes of one of these messages (store/messages.ts): its text, its extra as JSON text, 96. */
const MESSAGE_BYTES = `message 100`.length + JSON.stringify(extra).length + 1 + 96; // jsonb's text has a space after the colon
const PER_PAGE = Math.floor(BUDGET / MESSAGE_BYTES);

async function bigTask(client: StateClient, n: number): Promise<string> {
  const { task } = await client.createTask({ action: "f3_test", designRef: "deckhand+https://example/f3" });
  const taskId = task!.taskId;
  for (let i = 0; i < n; i += 10) {
    await client.appendResultMessages({
      taskId,
      messages: Array.from({ length: Math.min(10, n - i) }, (_, k) => ({ message: `message ${String(i + k + 1).padStart(3, "0")}`, extra })),
    });
  }
  return taskId;
}

describe("byte budgets on reads", function () {
  this.timeout(120_000);
  const h = useServer({ responseMaxBytes: BUDGET, watchStreamMaxBytes: BUDGET, watchMaxBytes: 64 * BUDGET, watchFinishLingerMs: 0 });
  let taskId: string;
  before(async function () {
    this.timeout(120_000);
    taskId = await bigTask(h.client, 200);
  });

  it("ListResultMessages: pages of page_size 1000 shrink to the byte budget, at least one message, none skipped or repeated", async () => {
    expect(PER_PAGE).to.equal(4);
    const pages: bigint[][] = [];
    let pageToken = "";
    do {
      const r = await h.client.listResultMessages({ taskId, pageSize: 1000, pageToken });
      pages.push(r.messages.map((m) => m.sequence));
      pageToken = r.nextPageToken;
    } while (pageToken);
    expect(pages.map((p) => p.length)).to.deep.equal(Array(50).fill(PER_PAGE));
    expect(pages.flat()).to.deep.equal(range(1, 200));
    // errors_only walks the same way; page_size still bounds a page of small rows.
    const small = await h.client.listResultMessages({ taskId, pageSize: 3 });
    expect(small.messages.map((m) => m.sequence)).to.deep.equal(range(1, 3));
    expect(small.nextPageToken).to.not.equal("");
  });

  it("ListResultMessages counts a big and a small message alike: both within one budget, one page", async () => {
    const tiny = await h.client.createTask({ action: "f3_test", designRef: "deckhand+https://example/f3" });
    const id = tiny.task!.taskId;
    await h.client.appendResultMessages({ taskId: id, messages: [{ message: "a", extra }, { message: "b" }] });
    const r = await h.client.listResultMessages({ taskId: id, pageSize: 10 });
    expect(r.messages.map((m) => m.message)).to.deep.equal(["a", "b"]);
  });

  it("GetTask FULL refuses a response past the budget with FAILED_PRECONDITION RESPONSE_TOO_LARGE, and answers one within it", async () => {
    const d = await expectError(h.client.getTask({ taskId, view: TaskView.FULL }), grpc.status.FAILED_PRECONDITION);
    expect(d.errorInfo?.reason).to.equal("RESPONSE_TOO_LARGE");
    expect(d.errorInfo?.metadata.limit).to.equal(String(BUDGET));
    expect(Number(d.errorInfo?.metadata.size)).to.be.greaterThan(BUDGET);
    expect(d.errorInfo?.metadata.task_id).to.equal(taskId);
    expect(d.message).to.contain("ListResultMessages").and.contain("STATEMGMT_RESPONSE_MAX_BYTES");
    const basic = await h.client.getTask({ taskId, view: TaskView.BASIC });
    expect(basic.task?.taskId).to.equal(taskId);

    const small = await bigTask(h.client, PER_PAGE - 1);
    const full = await h.client.getTask({ taskId: small, view: TaskView.FULL });
    expect(full.resultMessages.map((m) => m.sequence)).to.deep.equal(range(1, PER_PAGE - 1));
  });

  it("ListTasks and ListSubtasks: pages shrink to the byte budget, at least one task, none skipped or repeated", async () => {
    // Tasks of about 60 KB each (request context); four fit 256 KiB.
    const { task: parent } = await h.client.createTask({ action: "f3_parent" });
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      const { task } = await h.client.createTask({ action: "f3_list", parentTaskId: parent!.taskId, requestContext: { blob: `${i}`.padEnd(60_000, "y") } });
      ids.push(task!.taskId);
    }
    const walk = async (page: (token: string) => Promise<{ tasks: { taskId: string }[]; nextPageToken: string }>) => {
      const sizes: number[] = [];
      const seen: string[] = [];
      let token = "";
      do {
        const r = await page(token);
        sizes.push(r.tasks.length);
        seen.push(...r.tasks.map((t) => t.taskId));
        token = r.nextPageToken;
      } while (token);
      return { sizes, seen };
    };
    const listed = await walk((pageToken) => h.client.listTasks({ actions: ["f3_list"], pageSize: 1000, pageToken }));
    expect(listed.sizes).to.deep.equal([4, 4, 2]);
    expect(listed.seen).to.deep.equal(ids);
    const subtasks = await walk((pageToken) => h.client.listSubtasks({ parentTaskId: parent!.taskId, pageSize: 1000, pageToken }));
    expect(subtasks.sizes).to.deep.equal([4, 4, 2]);
    expect(subtasks.seen).to.deep.equal(ids);
    // page_size still bounds a page of tasks that fit.
    const small = await h.client.listTasks({ actions: ["f3_list"], pageSize: 3 });
    expect(small.tasks.length).to.equal(3);
  });

  it("ListBuildData: pages shrink to the byte budget, at least one record", async () => {
    const data = new Uint8Array(100 * 1024).fill(7);
    for (let i = 0; i < 5; i++) {
      await h.client.createBuildData({ buildData: { nodeName: "f3-node", taskId, generator: `g${i}`, dataFormat: "text/plain", dataElement: data } });
    }
    const sizes: number[] = [];
    let pageToken = "";
    do {
      const r = await h.client.listBuildData({ nodeName: "f3-node", pageSize: 100, view: BuildDataView.FULL, pageToken });
      sizes.push(r.buildData.length);
      for (const b of r.buildData) expect(b.dataElement.length).to.equal(data.length);
      pageToken = r.nextPageToken;
    } while (pageToken);
    // (100 KiB + 256) a record: two fit 256 KiB.
    expect(sizes).to.deep.equal([2, 2, 1]);
  });

  it("WatchTask: a reader that stops reading is ended with WATCH_BUFFER_FULL once it holds its byte budget, gives it back, and resumes without gaps", async () => {
    const watchClient = createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1, "grpc.max_receive_message_length": -1 });
    const slow = watchClient.watchTask({ taskId, afterSequence: 0n });
    const seqs: bigint[] = [];
    let slowError: unknown;
    slow.on("error", (e) => (slowError = e));
    const status = new Promise<grpc.StatusObject>((resolve) => slow.on("status", resolve));
    // Reads the snapshot, then stops (HTTP/2 flow control then holds the server's writes).
    await new Promise<void>((resolve) =>
      slow.once("data", () => {
        slow.pause();
        resolve();
      }),
    );
    await h.probe.watchers(taskId, 1);
    // Catching up from sequence 0, it holds at most its budget (plus one message) unsent, whatever the task holds.
    await h.probe.until(() => h.server.hub.bytes.used >= BUDGET / 2, "the paused stream to fill half its budget");
    expect(h.server.hub.bytes.used).to.be.lessThan(BUDGET + MESSAGE_BYTES);
    // Live messages: queued until the budget is reached, then the stream is ended.
    for (let i = 0; i < 8; i++) {
      await h.client.appendResultMessages({ taskId, messages: [{ message: `live ${i}`, extra }] });
    }
    await h.probe.until(() => h.probe.subscribers(taskId) === 0, "the paused stream to be ended");
    expect(h.server.hub.bytes.used).to.equal(0);
    slow.on("data", (r: WatchTaskResponse) => r.event.case === "message" && seqs.push(r.event.value.sequence));
    slow.resume();
    expect(grpc.status[(await status).code]).to.equal("RESOURCE_EXHAUSTED");
    const d = decodeError(slowError);
    expect(d.errorInfo?.reason).to.equal("WATCH_BUFFER_FULL");
    expect(d.errorInfo?.metadata.limit_bytes).to.equal(String(BUDGET));
    expect(d.message).to.contain("STATEMGMT_WATCH_STREAM_MAX_BYTES");
    expect(seqs.length).to.be.greaterThan(0).and.lessThan(208);
    expect(seqs).to.deep.equal(range(1, seqs.length));
    // Resumed from the last sequence received, reading: everything after it exactly once.
    await h.client.updateTask({ task: { taskId, status: TaskStatus.COMPLETE }, updateMask: { paths: ["status"] } });
    const rest: bigint[] = [];
    for await (const r of watchClient.watchTask({ taskId, afterSequence: seqs[seqs.length - 1]! })) {
      if (r.event.case === "message") rest.push(r.event.value.sequence);
    }
    watchClient.close();
    expect([...seqs, ...rest]).to.deep.equal(range(1, 208));
    expect(h.server.hub.bytes.used).to.equal(0);
  });
});

describe("the watch byte budget (queue.ts, budget.ts)", () => {
  const event = (bytes: number) => ({ bytes });
  const sizeOf = (e: { bytes: number }) => e.bytes;

  it("accepts any push onto a stream with nothing unsent, refuses one past the stream's limit, then past the server's", () => {
    const all = new WatchBytes({ streamBytes: 100, serverBytes: 150 });
    const reasons: string[] = [];
    const a = new BoundedQueue(1000, all.stream(), sizeOf);
    a.onOverflow = (r) => reasons.push(`a:${r}`);
    expect(a.push([event(500)])).to.equal(true); // nothing unsent: accepted whole
    expect(all.used).to.equal(500);
    expect(a.push([event(1)])).to.equal(false);
    expect(all.used).to.equal(0); // an overflowed queue holds nothing

    const b = new BoundedQueue(1000, all.stream(), sizeOf);
    const c = new BoundedQueue(1000, all.stream(), sizeOf);
    b.onOverflow = (r) => reasons.push(`b:${r}`);
    c.onOverflow = (r) => reasons.push(`c:${r}`);
    expect(b.push([event(90)])).to.equal(true);
    const sent = c.bytes!.write(80); // written to c's call, not sent yet
    expect(all.used).to.equal(170);
    expect(b.push([event(5)])).to.equal(false); // b under its 100, but the server over its 150
    expect(all.used).to.equal(80);
    expect(c.push([event(10)])).to.equal(true);
    sent();
    sent(); // given back once
    expect(all.used).to.equal(10);
    c.bytes!.close();
    expect(all.used).to.equal(0);
    expect(reasons).to.deep.equal(["a:stream", "b:server"]);
  });
});
