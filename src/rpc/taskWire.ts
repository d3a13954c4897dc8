// The protobuf binary form of a Task, written straight from the domain
// object: the bytes toBinary(TaskSchema, newTaskPb(task, secrets)) gives
// (test/taskWire.test.ts compares them on thousands of tasks, and fails when
// Task gains a field this does not write), in a fraction of the time:
// protobuf-es's create() and toBinary() took 10 µs a task, 1 ms of a
// ListTasks page of 100 (BENCHMARKS.md).
import type { WireType } from "@bufbuild/protobuf/wire";
import type { JsonObject, JsonValue, Micros, NodeFilter, Task } from "../core/domain.js";
import { redactReference } from "../design/reference.js";
import { resultToPb, statusToPb } from "./convert.js";
import { WireWriter } from "./wire.js";

/** Field numbers of Task this module writes, for the test that keeps it complete. */
export const TASK_FIELDS_WRITTEN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20] as const;

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;

const FILTER_TYPE = { union: 1, intersection: 2 } as const;

function str(w: WireWriter, field: number, value: string): void {
  if (value !== "") w.tag(field, LEN).string(value);
}

function timestamp(w: WireWriter, field: number, us: Micros): void {
  // As timestampFromMicros (convert.ts): seconds rounded down, then non-negative nanos.
  const seconds = us / 1_000_000n - (us % 1_000_000n < 0n ? 1n : 0n);
  const nanos = Number(us - seconds * 1_000_000n) * 1000;
  w.tag(field, LEN).openMessage();
  if (seconds !== 0n) w.tag(1, VARINT).int64(seconds);
  if (nanos !== 0) w.tag(2, VARINT).int32(nanos);
  w.close();
}

function labels(w: WireWriter, field: number, map: Record<string, string>): void {
  for (const key of Object.keys(map)) {
    w.tag(field, LEN).openMessage();
    w.tag(1, LEN).string(key);
    w.tag(2, LEN).string(map[key]!);
    w.close();
  }
}

function nodeFilter(w: WireWriter, f: NodeFilter): void {
  w.tag(8, LEN).openMessage();
  w.tag(1, VARINT).int32(FILTER_TYPE[f.filterSetType]);
  for (const s of f.filterSet) {
    w.tag(2, LEN).openMessage();
    w.tag(1, VARINT).int32(FILTER_TYPE[s.filterType]);
    for (const n of s.nodeNames) w.tag(2, LEN).string(n);
    for (const n of s.nodeTags) w.tag(3, LEN).string(n);
    labels(w, 4, s.nodeLabels);
    for (const n of s.rackNames) w.tag(5, LEN).string(n);
    labels(w, 6, s.rackLabels);
    w.close();
  }
  w.close();
}

/** google.protobuf.Struct's fields (map<string, Value> = 1). */
function struct(w: WireWriter, o: JsonObject): void {
  for (const key of Object.keys(o)) {
    w.tag(1, LEN).openMessage();
    w.tag(1, LEN).string(key);
    w.tag(2, LEN).openMessage();
    value(w, o[key]!);
    w.close();
    w.close();
  }
}

/** google.protobuf.Value: a oneof, so even a default member is written. */
function value(w: WireWriter, v: JsonValue): void {
  if (v === null) w.tag(1, VARINT).uint32(0);
  else if (typeof v === "number") w.tag(2, FIXED64).double(v);
  else if (typeof v === "string") w.tag(3, LEN).string(v);
  else if (typeof v === "boolean") w.tag(4, VARINT).bool(v);
  else if (Array.isArray(v)) {
    w.tag(6, LEN).openMessage();
    for (const item of v) {
      w.tag(1, LEN).openMessage();
      value(w, item);
      w.close();
    }
    w.close();
  } else {
    w.tag(5, LEN).openMessage();
    struct(w, v);
    w.close();
  }
}

export function writeTask(w: WireWriter, t: Task, secrets: boolean): void {
  str(w, 1, t.taskId);
  str(w, 2, t.parentTaskId ?? "");
  for (const id of t.subtaskIds) w.tag(3, LEN).string(id);
  str(w, 4, t.action);
  str(w, 5, secrets ? t.designRef : redactReference(t.designRef));
  const status = statusToPb(t.status);
  if (status !== 0) w.tag(6, VARINT).int32(status);
  const r = t.result;
  w.tag(7, LEN).openMessage();
  const resultStatus = resultToPb(r.status);
  if (resultStatus !== 0) w.tag(1, VARINT).int32(resultStatus);
  str(w, 2, r.message);
  str(w, 3, r.reason);
  if (r.errorCount !== 0) w.tag(4, VARINT).int32(r.errorCount);
  for (const s of r.successes) w.tag(5, LEN).string(s);
  for (const s of r.failures) w.tag(6, LEN).string(s);
  for (const l of r.links) {
    w.tag(7, LEN).openMessage();
    str(w, 1, l.rel);
    str(w, 2, l.href);
    w.close();
  }
  w.close();
  if (t.nodeFilter) nodeFilter(w, t.nodeFilter);
  if (t.requestContext) {
    w.tag(9, LEN).openMessage();
    struct(w, t.requestContext);
    w.close();
  }
  timestamp(w, 10, t.created);
  timestamp(w, 11, t.updated);
  if (t.terminated !== null) timestamp(w, 12, t.terminated);
  str(w, 13, t.createdBy);
  str(w, 14, t.terminatedBy ?? "");
  if (t.terminate) w.tag(15, VARINT).bool(true);
  if (t.retry !== 0) w.tag(16, VARINT).int32(t.retry);
  if (t.version !== 0n) w.tag(17, VARINT).int64(t.version);
  str(w, 18, t.claimedBy ?? "");
  if (t.claimedAt !== null) timestamp(w, 19, t.claimedAt);
  if (t.claimedTerm !== 0n) w.tag(20, VARINT).int64(t.claimedTerm);
}

/** The Task message's bytes (no tag, no length prefix). */
export function encodeTask(t: Task, secrets: boolean): Uint8Array {
  const w = new WireWriter();
  writeTask(w, t, secrets);
  return w.finish().slice();
}

type Unknown = { no: number; wireType: WireType; data: Uint8Array };

/**
 * `response` (a message whose field `field` is `repeated Task`, left empty)
 * carrying the tasks pre-encoded, as one run of that field: protobuf-es
 * writes a message's unknown fields verbatim after its known ones, and
 * decoders keep repeated elements in wire order wherever they stand.
 */
export function withEncodedTasks<M extends { $unknown?: Unknown[] }>(response: M, field: number, tasks: Task[], secrets: boolean): M {
  if (tasks.length === 0) return response;
  // About 400 bytes a task with a node filter and a request context.
  const w = new WireWriter(512 * tasks.length);
  tasks.forEach((t, i) => {
    // The first element's tag is written by protobuf-es from the entry's number.
    if (i > 0) w.tag(field, LEN);
    w.openMessage();
    writeTask(w, t, secrets);
    w.close();
  });
  // The writer is dropped here, so its bytes need no copy.
  response.$unknown = [{ no: field, wireType: LEN as WireType, data: w.finish() }];
  return response;
}
