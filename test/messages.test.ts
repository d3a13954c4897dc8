import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { expect } from "chai";
import { TaskView } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { StateService } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { createClient } from "../src/client/client.js";
import { expectError, expectInvalid, useServer } from "./harness.js";

describe("result messages", () => {
  const h = useServer({ dbPoolSize: 12 });

  it("counts an error message and a status message in posting order (the original's scenario)", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    await h.client.appendResultMessages({
      taskId: task!.taskId,
      messages: [{ message: "Error 1 on node n1", error: true, contextType: "node", context: "n1" }],
    });
    await h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "Status message", contextType: "task", context: task!.taskId }] });
    const { task: got, resultMessages } = await h.client.getTask({ taskId: task!.taskId, view: TaskView.FULL });
    expect(got!.result!.errorCount).to.equal(1);
    expect(got!.version).to.equal(3n);
    expect(resultMessages.map((m) => [m.sequence, m.message, m.error])).to.deep.equal([
      [1n, "Error 1 on node n1", true],
      [2n, "Status message", false],
    ]);
    expect(resultMessages[0]!.contextType).to.equal("node");
    expect(resultMessages[0]!.context).to.equal("n1");
    expect(resultMessages[0]!.ts).to.exist;
    const basic = await h.client.getTask({ taskId: task!.taskId });
    expect(basic.resultMessages).to.deep.equal([]);
  });

  it("stores extra as an object and keeps a given timestamp to the microsecond", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const ts = { seconds: 1_700_000_000n, nanos: 123_456_000 };
    const extra = { node: "n1", attempts: 2, ok: false, tags: ["a", "b"], nested: { k: null } };
    const res = await h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "m", ts, extra }] });
    expect(res.sequences).to.deep.equal([1n]);
    const { messages } = await h.client.listResultMessages({ taskId: task!.taskId });
    expect(messages[0]!.extra).to.deep.equal(extra);
    expect(messages[0]!.ts!.seconds).to.equal(ts.seconds);
    expect(messages[0]!.ts!.nanos).to.equal(ts.nanos);
    const { rows } = await h.pg.query("select jsonb_typeof(extra) t from result_messages where task_id = $1", [task!.taskId]);
    expect(rows[0].t).to.equal("object");
  });

  it("stores text and extra byte for byte through concurrent (batched) appends: quotes, backslashes, braces, NULL, emoji, escapes", async () => {
    const texts = [
      'say "hi"',
      "back\\slash \\\\ \\n",
      "{a,b}",
      "NULL",
      "null",
      "",
      "tab\tnew\nline",
      "🚀 ünïcödé ✓",
      "\u2028\u2029",
      "'single'",
      "x".repeat(1024),
    ];
    const extra = { q: '"', b: "\\", nested: { arr: ["{", "}", ",", "🚀"], n: -1.5e-7, t: true, z: null }, 'key with "quotes"': "v" };
    const tasks = await Promise.all(texts.map(() => h.client.createTask({ action: "deploy_nodes" })));
    // One append per task, all at once: they are coalesced into shared statements.
    await Promise.all(
      tasks.map(({ task }, i) =>
        h.client.appendResultMessages({
          taskId: task!.taskId,
          messages: [
            {
              message: texts[i] || "m",
              contextType: texts[(i + 1) % texts.length]!.slice(0, 64),
              context: texts[(i + 2) % texts.length]!.slice(0, 256),
              extra,
            },
            { message: "second", error: true },
          ],
        }),
      ),
    );
    for (const [i, { task }] of tasks.entries()) {
      const { messages } = await h.client.listResultMessages({ taskId: task!.taskId });
      expect(messages.map((m) => m.sequence)).to.deep.equal([1n, 2n]);
      expect(messages[0]!.message).to.equal(texts[i] || "m");
      expect(messages[0]!.contextType).to.equal(texts[(i + 1) % texts.length]!.slice(0, 64));
      expect(messages[0]!.context).to.equal(texts[(i + 2) % texts.length]!.slice(0, 256));
      expect(messages[0]!.extra).to.deep.equal(extra);
      expect(messages[1]!.extra).to.equal(undefined);
      expect([messages[0]!.error, messages[1]!.error]).to.deep.equal([false, true]);
    }
  });

  it("gives 8 concurrent writers of 2,000 messages exactly the sequences 1..2000", async function () {
    this.timeout(60_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const clients = Array.from({ length: 8 }, () => createClient(StateService, h.server.address, undefined, { "grpc.use_local_subchannel_pool": 1 }));
    const got: bigint[] = [];
    await Promise.all(
      clients.map(async (c, w) => {
        // 250 per writer, in 25 batches of 5, 15 and 10 messages.
        const sizes = [...Array<number>(12)].flatMap(() => [5, 15]).concat([10]);
        for (const [i, n] of sizes.entries()) {
          const res = await c.appendResultMessages({
            taskId: task!.taskId,
            messages: Array.from({ length: n }, (_, k) => ({ message: `w${w} b${i} m${k}`, error: k === 0 })),
          });
          // A batch's sequences are consecutive.
          res.sequences.forEach((s, k) => expect(s).to.equal(res.sequences[0]! + BigInt(k)));
          got.push(...res.sequences);
        }
      }),
    );
    clients.forEach((c) => c.close());
    expect(got.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).to.deep.equal(Array.from({ length: 2000 }, (_, i) => BigInt(i + 1)));
    const { rows } = await h.pg.query("select count(*)::int n, min(seq)::int lo, max(seq)::int hi from result_messages where task_id = $1", [task!.taskId]);
    expect(rows[0]).to.deep.equal({ n: 2000, lo: 1, hi: 2000 });
    const { task: t } = await h.client.getTask({ taskId: task!.taskId });
    expect(t!.result!.errorCount).to.equal(200);
  });

  it("pages in sequence order, after a sequence, errors only", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    await h.client.appendResultMessages({
      taskId: task!.taskId,
      messages: Array.from({ length: 25 }, (_, i) => ({ message: `m${i + 1}`, error: (i + 1) % 5 === 0 })),
    });
    const seqs: bigint[] = [];
    let pageToken = "";
    do {
      const res = await h.client.listResultMessages({ taskId: task!.taskId, pageSize: 10, pageToken, afterSequence: 3n });
      seqs.push(...res.messages.map((m) => m.sequence));
      pageToken = res.nextPageToken;
    } while (pageToken);
    expect(seqs).to.deep.equal(Array.from({ length: 22 }, (_, i) => BigInt(i + 4)));
    const errs = await h.client.listResultMessages({ taskId: task!.taskId, errorsOnly: true });
    expect(errs.messages.map((m) => m.message)).to.deep.equal(["m5", "m10", "m15", "m20", "m25"]);
    const first = await h.client.listResultMessages({ taskId: task!.taskId, pageSize: 10 });
    await expectInvalid(h.client.listResultMessages({ taskId: task!.taskId, pageSize: 10, errorsOnly: true, pageToken: first.nextPageToken }), "page_token");
  });

  it("accepts messages on a finished task (a final summary)", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    await h.client.updateTask({ task: { taskId: task!.taskId, status: 6 }, updateMask: { paths: ["status"] } });
    const res = await h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "summary" }] });
    expect(res.sequences).to.deep.equal([1n]);
  });

  it("refuses bad input, naming the field, and stores nothing", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    await expectInvalid(h.client.appendResultMessages({ taskId, messages: [] }), "messages");
    await expectInvalid(h.client.appendResultMessages({ taskId, messages: Array.from({ length: 1001 }, () => ({ message: "x" })) }), "messages");
    const d = await expectInvalid(
      h.client.appendResultMessages({ taskId, messages: [{ message: "ok" }, { message: "x".repeat(1025) }] }),
      "messages[1].message",
    );
    expect(d.message).to.contain("1025");
    await expectInvalid(h.client.appendResultMessages({ taskId, messages: [{ message: "" }] }), "messages[0].message");
    await expectInvalid(h.client.appendResultMessages({ taskId, messages: [{ message: "m", contextType: "c".repeat(65) }] }), "messages[0].context_type");
    await expectInvalid(h.client.appendResultMessages({ taskId, messages: [{ message: "m", context: "c".repeat(257) }] }), "messages[0].context");
    await expectInvalid(h.client.appendResultMessages({ taskId: "nope", messages: [{ message: "m" }] }), "task_id");
    const { rows } = await h.pg.query("select count(*)::int n from result_messages where task_id = $1", [taskId]);
    expect(rows[0].n).to.equal(0);
    const { task: t } = await h.client.getTask({ taskId });
    expect(t!.version).to.equal(1n);
  });

  it("answers NOT_FOUND for an unknown task", async () => {
    await expectError(h.client.appendResultMessages({ taskId: randomUUID(), messages: [{ message: "m" }] }), grpc.status.NOT_FOUND);
    await expectError(h.client.listResultMessages({ taskId: randomUUID() }), grpc.status.NOT_FOUND);
  });

  it("keeps timestamps of years 1–99 exact (not 1900 years later)", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const sent = [new Date(0), new Date(0)];
    sent[0]!.setUTCFullYear(50, 0, 1);
    sent[1]!.setUTCFullYear(1, 11, 31);
    sent[1]!.setUTCHours(23, 59, 59, 0);
    const ts = sent.map((d) => ({ seconds: BigInt(d.getTime() / 1000), nanos: 123456000 }));
    await h.client.appendResultMessages({ taskId: task!.taskId, messages: ts.map((t) => ({ message: "old", ts: t })) });
    const { rows } = await h.pg.query("select ts::text as ts from result_messages where task_id = $1 order by seq", [task!.taskId]);
    expect(rows.map((r: { ts: string }) => r.ts)).to.deep.equal(["0050-01-01 00:00:00.123456+00", "0001-12-31 23:59:59.123456+00"]);
    const back = (await h.client.listResultMessages({ taskId: task!.taskId })).messages.map((m) => m.ts);
    expect(back.map((t) => [t!.seconds, t!.nanos])).to.deep.equal(ts.map((t) => [t.seconds, t.nanos]));
  });

  it("refuses 1,000 bad messages with a readable INVALID_ARGUMENT (first 20 violations and a count) and stores none", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const messages = Array.from({ length: 1000 }, () => ({ message: "x".repeat(5000) }));
    const d = await expectError(h.client.appendResultMessages({ taskId: task!.taskId, messages }, { deadlineMs: 10_000 }), grpc.status.INVALID_ARGUMENT);
    const v = d.badRequest!.fieldViolations;
    expect(v).to.have.length(21);
    expect(v.slice(0, 20).map((x) => x.field)).to.deep.equal(Array.from({ length: 20 }, (_, i) => `messages[${i}].message`));
    expect(v[20]!.description).to.equal("and 980 more violations not listed");
    expect(d.message).to.contain("messages[0].message").and.contain("and 997 more");
    const { rows } = await h.pg.query("select count(*)::int n from result_messages where task_id = $1", [task!.taskId]);
    expect(rows[0].n).to.equal(0);
  });

  it("GetTask FULL returns up to 10,000 messages and refuses more with FAILED_PRECONDITION, pointing to ListResultMessages", async function () {
    this.timeout(30_000);
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const batch = Array.from({ length: 1000 }, (_, i) => ({ message: `m${i}` }));
    for (let i = 0; i < 10; i++) await h.client.appendResultMessages({ taskId: task!.taskId, messages: batch });
    const full = await h.client.getTask({ taskId: task!.taskId, view: TaskView.FULL });
    expect(full.resultMessages.map((m) => m.sequence)).to.deep.equal(Array.from({ length: 10_000 }, (_, i) => BigInt(i + 1)));
    await h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "one too many" }] });
    const d = await expectError(h.client.getTask({ taskId: task!.taskId, view: TaskView.FULL }), grpc.status.FAILED_PRECONDITION);
    expect(d.errorInfo!.reason).to.equal("TOO_MANY_MESSAGES_FOR_FULL_VIEW");
    expect(d.message).to.contain("ListResultMessages");
    const basic = await h.client.getTask({ taskId: task!.taskId });
    expect(basic.resultMessages).to.have.length(0);
    expect(basic.task!.result!.errorCount).to.equal(0);
  });

  it("appends exactly once when a writer retries with first_sequence", async () => {
    const { task } = await h.client.createTask({ action: "deploy_nodes" });
    const taskId = task!.taskId;
    const batch = [{ message: "a" }, { message: "b", error: true }, { message: "c" }];
    const r1 = await h.client.appendResultMessages({ taskId, messages: batch, firstSequence: 1n });
    expect(r1.sequences).to.deep.equal([1n, 2n, 3n]);
    // The retry of an append whose answer was lost: refused, nothing stored twice.
    const d = await expectError(h.client.appendResultMessages({ taskId, messages: batch, firstSequence: 1n }), grpc.status.ABORTED);
    expect(d.errorInfo!.reason).to.equal("SEQUENCE_MISMATCH");
    expect(d.errorInfo!.metadata).to.deep.include({ first_sequence: "1", next_sequence: "4" });
    // A gap is refused too, and the next expected sequence appends.
    await expectError(h.client.appendResultMessages({ taskId, messages: batch, firstSequence: 9n }), grpc.status.ABORTED);
    const r2 = await h.client.appendResultMessages({ taskId, messages: [{ message: "d" }], firstSequence: 4n });
    expect(r2.sequences).to.deep.equal([4n]);
    expect(r2.errorCount).to.equal(1);
    const { rows } = await h.pg.query("select seq::int, message from result_messages where task_id = $1 order by seq", [taskId]);
    expect(rows.map((r: { message: string }) => r.message)).to.deep.equal(["a", "b", "c", "d"]);
    const { task: got } = await h.client.getTask({ taskId });
    expect([got!.version, got!.result!.errorCount]).to.deep.equal([3n, 1]);
    await expectInvalid(h.client.appendResultMessages({ taskId, messages: batch, firstSequence: -1n }), "first_sequence");
    await expectError(h.client.appendResultMessages({ taskId: randomUUID(), messages: batch, firstSequence: 1n }), grpc.status.NOT_FOUND);
  });
});
