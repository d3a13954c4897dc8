// The hand-written Task encoder (src/rpc/taskWire.ts, src/rpc/wire.ts) against protobuf-es: the
// same bytes for tasks of every shape, every field of the Task message written, and list
// responses that decode to what protobuf-es would have sent.
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { expect } from "chai";
import { ListTasksResponseSchema } from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskSchema } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { ACTION_RESULTS, TASK_STATUSES, type JsonValue, type Task } from "../src/core/domain.js";
import { MAX_MICROS, MIN_MICROS } from "../src/core/time.js";
import { newTaskPb } from "../src/rpc/convert.js";
import { encodeTask, TASK_FIELDS_WRITTEN, withEncodedTasks } from "../src/rpc/taskWire.js";

/** A small deterministic generator (mulberry32), so that a failure names its case. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomTask(seed: number): Task {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)]!;
  const maybe = <T>(v: T) => (r() < 0.5 ? v : null);
  const text = () => pick(["", "n1", "ünïcødé ✓", "x".repeat(200), "y".repeat(20_000), "with\nnewline", "😀 emoji", "0b3f2c9e-7d1a-4c5e-9f8a-1b2c3d4e5f60"]);
  const micros = () => pick([0n, 1n, -1n, 999_999n, -1_000_001n, 1_764_630_000_123_456n, MIN_MICROS, MAX_MICROS, BigInt(Math.floor(r() * 1e15))]);
  const uuid = () =>
    "0b3f2c9e-7d1a-4c5e-9f8a-" +
    Math.floor(r() * 1e12)
      .toString(16)
      .padStart(12, "0");
  const json = (depth: number): JsonValue =>
    depth > 3
      ? pick([null, 0, -0.5, 1e300, "s", "ü", true, false])
      : pick([
          () => null,
          () => pick([0, 1, -2, 3.25, Number.MAX_SAFE_INTEGER]),
          () => text(),
          () => r() < 0.5,
          () => Array.from({ length: Math.floor(r() * 4) }, () => json(depth + 1)),
          () => Object.fromEntries(Array.from({ length: Math.floor(r() * 4) }, (_, i) => [pick(["a", "b", "10", "2", "ü", `k${i}`]), json(depth + 1)])),
        ])();
  const labels = () => Object.fromEntries(Array.from({ length: Math.floor(r() * 3) }, (_, i) => [pick(["rack", "zone", "1", `l${i}`]), text()]));
  return {
    taskId: uuid(),
    parentTaskId: maybe(uuid()),
    subtaskIds: Array.from({ length: Math.floor(r() * 3) }, uuid),
    action: pick(["deploy_nodes", "prepare_site", "a"]),
    designRef: pick(["", "file:///srv/site.yaml", "https://user:secret@deckhand.example/api/v1.0/revisions/7/rendered-documents"]),
    status: pick(TASK_STATUSES),
    result: {
      status: pick(ACTION_RESULTS),
      message: text(),
      reason: text(),
      errorCount: pick([0, 1, 2_147_483_647]),
      successes: Array.from({ length: Math.floor(r() * 3) }, text),
      failures: Array.from({ length: Math.floor(r() * 2) }, text),
      links: Array.from({ length: Math.floor(r() * 2) }, () => ({ rel: text(), href: text() })),
    },
    nodeFilter: maybe({
      filterSetType: pick(["union", "intersection"] as const),
      filterSet: Array.from({ length: Math.floor(r() * 3) }, () => ({
        filterType: pick(["union", "intersection"] as const),
        nodeNames: Array.from({ length: Math.floor(r() * 3) }, text),
        nodeTags: Array.from({ length: Math.floor(r() * 2) }, text),
        nodeLabels: labels(),
        rackNames: Array.from({ length: Math.floor(r() * 2) }, text),
        rackLabels: labels(),
      })),
    }),
    requestContext: maybe(Object.fromEntries(Array.from({ length: Math.floor(r() * 5) }, (_, i) => [pick(["user", "n", "3", `k${i}`]), json(0)]))),
    created: micros(),
    updated: micros(),
    terminated: maybe(micros()),
    createdBy: text(),
    terminatedBy: maybe(text()),
    terminate: r() < 0.5,
    retry: pick([0, 1, 7, 2_147_483_647]),
    version: pick([0n, 1n, 9_223_372_036_854_775_807n]),
    claimedBy: maybe(text()),
    claimedAt: maybe(micros()),
    claimedTerm: pick([0n, 1n, 42n, 9_223_372_036_854_775_807n]),
  };
}

describe("Task wire encoder", () => {
  it("writes every field of the Task message", () => {
    expect(TaskSchema.fields.map((f) => f.number).sort((a, b) => a - b)).to.deep.equal([...TASK_FIELDS_WRITTEN]);
  });

  it("gives protobuf-es's bytes for 3,000 tasks of every shape, with and without secrets", () => {
    for (let seed = 1; seed <= 3000; seed++) {
      const t = randomTask(seed);
      for (const secrets of [true, false]) {
        const want = Buffer.from(toBinary(TaskSchema, newTaskPb(t, secrets))).toString("hex");
        expect(Buffer.from(encodeTask(t, secrets)).toString("hex"), `seed ${seed}, secrets ${secrets}`).to.equal(want);
      }
    }
  });

  it("carries pre-encoded tasks in a list response that decodes to the message protobuf-es would send, in order", () => {
    for (const n of [0, 1, 2, 50]) {
      const tasks = Array.from({ length: n }, (_, i) => randomTask(10_000 + i));
      const fast = toBinary(ListTasksResponseSchema, withEncodedTasks(create(ListTasksResponseSchema, { nextPageToken: "tok" }), 1, tasks, false));
      const slow = create(ListTasksResponseSchema, { tasks: tasks.map((t) => newTaskPb(t, false)), nextPageToken: "tok" });
      expect(equals(ListTasksResponseSchema, fromBinary(ListTasksResponseSchema, fast), slow), `${n} tasks`).to.equal(true);
    }
  });
});
