// Malformed input through the real server: every RPC of StateService (and
// grpc.health.v1.Health/Check) gets random bytes, truncated and bit-flipped
// valid requests, invalid UTF-8, deep Structs, junk page tokens and extreme
// numbers. None may answer INTERNAL or UNKNOWN (the README: INTERNAL is a bug
// in our code), every unary call ends before its deadline, and the server
// still works afterwards. Seeded: FUZZ_SEED=<n> replays a run; a failure
// names the seed, the method and the case.
import { createHash, randomUUID } from "node:crypto";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, ScalarType, toBinary, type DescField, type DescMessage, type DescMethod, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { expect } from "chai";
import {
  BuildDataView,
  CreateBuildDataRequestSchema,
  GetTaskRequestSchema,
  StateService,
  SubtaskFilter,
  TaskView,
} from "../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus, ActionResult } from "../gen/drydock/statemgmt/v1/task_pb.js";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { defaultDesignConfig, type DesignConfig } from "../src/config.js";
import { eventually, expectError, expectInvalid, useServer } from "./kit/index.js";

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) >>> 0 : 20261201;
const DEADLINE_MS = 5000;
/** A stream that sends nothing for this long is cancelled by the test (fine: it did not fail). */
const STREAM_BOUND_MS = 250;
const CONCURRENCY = 8;
const DOMAIN = "statemgmt.drydock.airshipit.org";

// ---------------------------------------------------------------- PRNG

/** mulberry32: small, seeded, good enough to pick bytes. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    int,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => int(256))),
    pick: <T>(xs: readonly T[]) => xs[int(xs.length)]!,
  };
}
type Rng = ReturnType<typeof prng>;
const seedFor = (name: string) => (SEED ^ createHash("sha256").update(name).digest().readUInt32BE(0)) >>> 0;

// ---------------------------------------------------------------- wire format

function varint(v: bigint): Buffer {
  let x = BigInt.asUintN(64, v);
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x > 0n) b |= 0x80;
    out.push(b);
  } while (x > 0n);
  return Buffer.from(out);
}
const WT = { varint: 0, i64: 1, len: 2, sgroup: 3, egroup: 4, i32: 5 } as const;
const tag = (no: number, wt: number) => varint(BigInt((no << 3) | wt));
const len = (no: number, body: Buffer) => Buffer.concat([tag(no, WT.len), varint(BigInt(body.length)), body]);
/** Wraps `inner` in the length-delimited fields of `path` (outermost first). */
const nest = (path: number[], inner: Buffer) => path.reduceRight((acc, no) => len(no, acc), inner);

/**
 * The bytes of a google.protobuf.Struct nested `depth` messages deep:
 * Struct → map entry → Value → Struct … (or → Value → ListValue → Value … with viaList).
 */
function deepStruct(depth: number, viaList: boolean): Buffer {
  // Layer k (0 = outermost) wraps the bytes of layer k + 1; every layer is a
  // prefix before its inner bytes, so the prefixes are computed inside out
  // (each needs its inner length) and joined once: linear in the depth.
  const layer = (k: number) =>
    k < 2
      ? k === 0
        ? "struct"
        : "entry"
      : viaList
        ? (["value-list", "list"] as const)[(k - 2) % 2]
        : (["value-struct", "struct", "entry"] as const)[(k - 2) % 3];
  const head = (no: number, n: number) => Buffer.concat([tag(no, WT.len), varint(BigInt(n))]);
  const prefixes: Buffer[] = [];
  let size = 0; // the innermost message is empty
  for (let k = depth - 2; k >= 0; k--) {
    const kind = layer(k);
    const prefix =
      kind === "entry"
        ? Buffer.concat([len(1, Buffer.from("a")), head(2, size)]) // key, then the Value
        : head(kind === "value-struct" ? 5 : kind === "value-list" ? 6 : 1, size); // Value.struct_value / list_value, Struct.fields, ListValue.values
    prefixes.push(prefix);
    size += prefix.length;
  }
  return Buffer.concat(prefixes.reverse(), size);
}

// ---------------------------------------------------------------- descriptor walks

const OPAQUE = new Set(["google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any"]);
const WALK_DEPTH = 4;

interface FieldPath {
  /** proto names, e.g. task.result.error_count */
  name: string;
  /** The fields from the request down to the leaf. */
  fields: DescField[];
}

function walk(desc: DescMessage, keep: (f: DescField) => boolean, prefix: DescField[] = [], out: FieldPath[] = []): FieldPath[] {
  for (const f of desc.fields) {
    const here = [...prefix, f];
    if (keep(f)) out.push({ name: here.map((x) => x.name).join("."), fields: here });
    const child = f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message") ? f.message : undefined;
    if (child && !OPAQUE.has(child.typeName) && here.length < WALK_DEPTH) walk(child, keep, here, out);
  }
  return out;
}

const scalarOf = (f: DescField): ScalarType | "enum" | undefined =>
  f.fieldKind === "scalar"
    ? f.scalar
    : f.fieldKind === "enum"
      ? "enum"
      : f.fieldKind === "list" && f.listKind === "scalar"
        ? f.scalar
        : f.fieldKind === "list" && f.listKind === "enum"
          ? "enum"
          : undefined;

const NUMERIC = new Set<ScalarType | "enum">([
  ScalarType.INT32,
  ScalarType.INT64,
  ScalarType.UINT32,
  ScalarType.UINT64,
  ScalarType.SINT32,
  ScalarType.SINT64,
  ScalarType.FIXED32,
  ScalarType.FIXED64,
  ScalarType.SFIXED32,
  ScalarType.SFIXED64,
  "enum",
]);

const EXTREMES: [string, bigint][] = [
  ["0", 0n],
  ["-1", -1n],
  ["2^31-1", 2n ** 31n - 1n],
  ["2^31", 2n ** 31n],
  ["2^53", 2n ** 53n],
  ["2^63-1", 2n ** 63n - 1n],
  ["2^63", 2n ** 63n],
  ["2^64-1", 2n ** 64n - 1n],
];

function representable(t: ScalarType | "enum", v: bigint): boolean {
  switch (t) {
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
    case "enum":
      return v >= -(2n ** 31n) && v < 2n ** 31n;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return v >= 0n && v < 2n ** 32n;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return v >= -(2n ** 63n) && v < 2n ** 63n;
    default:
      return v >= 0n && v < 2n ** 64n;
  }
}

/** The leaf value on the wire, whatever its range (decoders keep the low bits). */
function encodeNumber(f: DescField, t: ScalarType | "enum", v: bigint): Buffer {
  const u = BigInt.asUintN(64, v);
  switch (t) {
    case ScalarType.SINT32:
    case ScalarType.SINT64:
      return Buffer.concat([tag(f.number, WT.varint), varint(BigInt.asUintN(64, (v << 1n) ^ (v < 0n ? -1n : 0n)))]);
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32: {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(Number(u & 0xffffffffn));
      return Buffer.concat([tag(f.number, WT.i32), b]);
    }
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64: {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(u);
      return Buffer.concat([tag(f.number, WT.i64), b]);
    }
    default:
      return Buffer.concat([tag(f.number, WT.varint), varint(u)]);
  }
}

/** Sets the leaf of `p` to v in a copy of the decoded base message (create() path). */
function setNumber(schema: DescMessage, base: Buffer, p: FieldPath, t: ScalarType | "enum", v: bigint): Buffer {
  const msg = fromBinary(schema, base) as unknown as Record<string, unknown>;
  let obj = msg;
  for (const f of p.fields.slice(0, -1)) {
    const m = (f as DescField & { message: DescMessage }).message;
    if (f.fieldKind === "list") {
      const list = obj[f.localName] as Record<string, unknown>[];
      if (list.length === 0) list.push(create(m) as unknown as Record<string, unknown>);
      obj = list[0]!;
    } else {
      obj[f.localName] ??= create(m);
      obj = obj[f.localName] as Record<string, unknown>;
    }
  }
  const leaf = p.fields[p.fields.length - 1]!;
  const is64 = t === ScalarType.INT64 || t === ScalarType.UINT64 || t === ScalarType.SINT64 || t === ScalarType.FIXED64 || t === ScalarType.SFIXED64;
  const value = is64 ? v : Number(v);
  if (leaf.fieldKind === "list") (obj[leaf.localName] as unknown[]).push(value);
  else obj[leaf.localName] = value;
  return Buffer.from(toBinary(schema, msg as never));
}

// ---------------------------------------------------------------- raw calls

interface Outcome {
  code: grpc.status;
  details: string;
  metadata?: grpc.Metadata;
  ms: number;
  /** The test cancelled a stream (after its first message or the bound). */
  cancelledByTest?: boolean;
  /** Messages a stream sent. */
  received?: number;
}

const identity = (b: Buffer) => b;

function unary(client: grpc.Client, methodPath: string, body: Buffer): Promise<Outcome> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    client.makeUnaryRequest(methodPath, identity, identity, body, new grpc.Metadata(), { deadline: Date.now() + DEADLINE_MS }, (err) => {
      const e = err as grpc.ServiceError | null;
      resolve({ code: e ? e.code : grpc.status.OK, details: e?.details ?? "", metadata: e?.metadata, ms: Date.now() - t0 });
    });
  });
}

function serverStream(client: grpc.Client, methodPath: string, body: Buffer): Promise<Outcome> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const call = client.makeServerStreamRequest(methodPath, identity, identity, body, new grpc.Metadata(), { deadline: Date.now() + DEADLINE_MS });
    let cancelledByTest = false;
    let received = 0;
    const cancel = () => {
      cancelledByTest = true;
      call.cancel();
    };
    const timer = setTimeout(cancel, STREAM_BOUND_MS);
    call.on("data", () => {
      received++;
      clearTimeout(timer);
      if (!cancelledByTest) cancel();
    });
    call.on("error", () => {}); // the status event carries everything
    call.on("status", (s: grpc.StatusObject) => {
      clearTimeout(timer);
      resolve({
        code: s.code,
        details: s.details,
        metadata: s.metadata,
        ms: Date.now() - t0,
        cancelledByTest: cancelledByTest && s.code === grpc.status.CANCELLED,
        received,
      });
    });
  });
}

/** One gRPC frame over a bare HTTP/2 stream, with whatever headers and flags the test wants. */
function rawHttp2(address: string, methodPath: string, frame: Buffer, headers: Record<string, string>): Promise<Outcome> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on("error", reject);
    const req = session.request({
      ":method": "POST",
      ":path": methodPath,
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": `${DEADLINE_MS}m`,
      ...headers,
    });
    let status: Record<string, unknown> = {};
    req.on("response", (h) => (status = { ...h }));
    req.on("trailers", (t) => (status = { ...status, ...t }));
    req.on("data", () => {});
    req.on("error", reject);
    req.on("close", () => {
      session.close();
      const md = new grpc.Metadata();
      const bin = status["grpc-status-details-bin"];
      if (typeof bin === "string") md.set("grpc-status-details-bin", Buffer.from(bin, "base64"));
      resolve({
        code: Number(status["grpc-status"] ?? -1),
        details: decodeURIComponent(String(status["grpc-message"] ?? "")),
        metadata: md,
        ms: Date.now() - t0,
      });
    });
    req.end(frame);
  });
}

function grpcFrame(payload: Buffer, compressed: boolean): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(compressed ? 1 : 0, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** The ErrorInfo and BadRequest field names in a status, if any. */
function details(md: grpc.Metadata | undefined): { domain?: string; fields?: string[] } {
  const bin = md?.get("grpc-status-details-bin")?.[0];
  if (!(bin instanceof Buffer)) return {};
  const status = fromBinary(StatusSchema, bin);
  const out: { domain?: string; fields?: string[] } = {};
  for (const any of status.details) {
    if (any.typeUrl.endsWith(ErrorInfoSchema.typeName)) out.domain = fromBinary(ErrorInfoSchema, any.value).domain;
    if (any.typeUrl.endsWith(BadRequestSchema.typeName)) out.fields = fromBinary(BadRequestSchema, any.value).fieldViolations.map((v) => v.field);
  }
  return out;
}

/** Bytes of the status in the trailers: grpc-message (percent-encoded) and grpc-status-details-bin (base64). */
function trailerBytes(o: Outcome): number {
  const bin = o.metadata?.get("grpc-status-details-bin")?.[0];
  return encodeURI(o.details).length + (bin instanceof Buffer ? Math.ceil(bin.length / 3) * 4 : 0);
}
/** C-core clients (Python, C++, Ruby) refuse trailers over grpc.max_metadata_size, 8 KiB by default. */
const MAX_TRAILER_BYTES = 8 * 1024;

/** What is wrong with an outcome, or null when it is acceptable. */
function problem(o: Outcome, streaming: boolean): string | null {
  if (o.code === grpc.status.INTERNAL || o.code === grpc.status.UNKNOWN) return `answered ${grpc.status[o.code]}: ${o.details}`;
  if (o.code === grpc.status.DEADLINE_EXCEEDED && !streaming) return `did not answer within its ${DEADLINE_MS} ms deadline`;
  if (o.code === grpc.status.OK || o.cancelledByTest) return null;
  // Every other error comes from our error mapping (status.ts), with ErrorInfo;
  // RESOURCE_EXHAUSTED for an oversized message comes from grpc-js.
  const d = details(o.metadata);
  if (d.domain !== DOMAIN && o.code !== grpc.status.RESOURCE_EXHAUSTED) return `${grpc.status[o.code]} without our ErrorInfo: ${o.details}`;
  if (o.code === grpc.status.INVALID_ARGUMENT && !(d.fields && d.fields.length > 0)) return `INVALID_ARGUMENT without a BadRequest violation: ${o.details}`;
  if (trailerBytes(o) > MAX_TRAILER_BYTES)
    return `${grpc.status[o.code]} status takes ${trailerBytes(o)} bytes of trailers (C-core clients refuse over ${MAX_TRAILER_BYTES}): ${o.details.slice(0, 80)}`;
  return null;
}

// ---------------------------------------------------------------- the suite

interface Case {
  what: string;
  body: Buffer;
}

const ALL_METHODS: DescMethod[] = [...StateService.methods, Health.methods.find((m) => m.name === "Check")!];
const methodPath = (m: DescMethod) => `/${m.parent.typeName}/${m.name}`;
const b64url = (v: unknown) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

describe(`fuzz (seed ${SEED}; FUZZ_SEED=<n> to replay another)`, function () {
  this.timeout(60_000);
  const design: DesignConfig = defaultDesignConfig();
  let root: string;
  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), "fuzz-design-"));
    await writeFile(path.join(root, "site.yaml"), "site: fuzz\n");
    await mkdir(path.join(root, "sub"));
    await symlink(path.join(root, "loop"), path.join(root, "loop")); // ELOOP
    Object.assign(design, { roots: [root], allowedHosts: ["127.0.0.1"], retries: 0, connectTimeoutMs: 1000 } satisfies Partial<DesignConfig>);
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  // A small build data limit keeps the oversized-message case (and RSS) small.
  const BUILD_DATA_MAX = 1024 * 1024;
  const h = useServer({ design, buildDataMaxBytes: BUILD_DATA_MAX });
  let raw: grpc.Client;
  /** A realistic valid request per method (protobuf binary). */
  const bases = new Map<string, Buffer>();
  /** A real next_page_token per paged method, whose filters match its base request. */
  const tokens = new Map<string, string>();
  let rssStart = 0;
  let heapStart = 0;
  /** A full collection (mocha runs node with --expose-gc, see .mocharc.json). */
  const gc = () => (globalThis as { gc?: () => void }).gc?.();
  let rssGrowthMb: number | undefined;
  let total = 0;
  const counts: string[] = [];

  before(async function () {
    this.timeout(60_000);
    raw = new grpc.Client(h.server.address, grpc.credentials.createInsecure());
    const c = h.client;
    // Seeded ids, so that a replay (same FUZZ_SEED) sends the same bytes.
    const idRng = prng(seedFor("ids"));
    const id = () => {
      const b = idRng.bytes(16);
      b[6] = (b[6]! & 0x0f) | 0x40;
      b[8] = (b[8]! & 0x3f) | 0x80;
      const x = b.toString("hex");
      return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
    };
    const task = async (init: Record<string, unknown>) => (await c.createTask({ taskId: id(), action: "deploy_nodes", ...init })).task!;
    const leader = await c.claimLeadership({ election: "orchestrator", instanceId: "orch-1", ttl: { seconds: 3600n } });
    const fuzzLeader = await c.claimLeadership({ election: "fuzz", instanceId: "orch-1", ttl: { seconds: 3600n } });
    const fence = { election: "orchestrator", term: leader.leader!.term };
    const parent = await task({ createdBy: "fuzz" });
    for (let i = 0; i < 3; i++) await task({ parentTaskId: parent.taskId, initialStatus: TaskStatus.QUEUED });
    for (let i = 0; i < 3; i++) await task({ action: "prepare_nodes", initialStatus: TaskStatus.QUEUED });
    const watched = await task({});
    const updated = await task({});
    const terminated = await task({});
    await c.appendResultMessages({ taskId: watched.taskId, messages: [1, 2, 3].map((i) => ({ message: `m${i}`, error: i === 2 })) });
    for (let i = 0; i < 3; i++) {
      await c.createBuildData({
        buildData: { nodeName: "n1", taskId: watched.taskId, generator: `g${i}`, dataFormat: "text/plain", dataElement: Buffer.from("inventory") },
      });
    }
    const nodeKey = Buffer.from((await c.setBootActionContext({ nodeName: "n1", taskId: watched.taskId })).generatedIdentityKey);
    const { bootActions } = await c.createBootActions({
      nodeName: "n1",
      taskId: watched.taskId,
      actions: [
        { actionName: "reported", signalling: true },
        { actionName: "silent", signalling: false },
      ],
    });
    const ts = timestampFromMs(Date.parse("2026-01-01T00:00:00Z"));
    const inits: Record<string, Record<string, unknown>> = {
      createTask: {
        taskId: id(),
        parentTaskId: parent.taskId,
        action: "deploy_nodes",
        designRef: `file://${root}/site.yaml`,
        nodeFilter: {
          filterSetType: 1,
          filterSet: [{ filterType: 2, nodeNames: ["n1", "n2"], nodeTags: ["t"], nodeLabels: { rack: "r1" }, rackNames: ["r1"], rackLabels: { row: "a" } }],
        },
        requestContext: { user: "alice", external_marker: "x-1", n: 3, nested: { ok: true, list: [1, "two", null] } },
        createdBy: "fuzz",
        initialStatus: TaskStatus.QUEUED,
      },
      getTask: { taskId: watched.taskId, view: TaskView.FULL },
      listTasks: { statuses: [TaskStatus.QUEUED], actions: ["deploy_nodes"], parentTaskId: parent.taskId, createdAfter: ts, pageSize: 1, claimedTerm: 0n },
      updateTask: {
        task: {
          taskId: updated.taskId,
          status: TaskStatus.RUNNING,
          result: {
            status: ActionResult.PARTIAL_SUCCESS,
            message: "half",
            reason: "r",
            successes: ["n1"],
            failures: ["n2"],
            links: [{ rel: "detail_logs", href: "https://logs.example/1" }],
          },
          nodeFilter: { filterSet: [{ nodeNames: ["n1"] }] },
          designRef: `file://${root}/site.yaml`,
          retry: 1,
        },
        updateMask: { paths: ["status", "result", "node_filter", "design_ref", "retry"] },
        expectedVersion: 0n,
        fence,
      },
      terminateTask: { taskId: terminated.taskId, terminatedBy: "fuzz" },
      listSubtasks: { parentTaskId: parent.taskId, filter: SubtaskFilter.ACTIVE, pageSize: 1 },
      claimNextTask: { instanceId: "orch-1", actions: ["prepare_nodes"], fence },
      appendResultMessages: {
        taskId: watched.taskId,
        messages: [{ message: "Error 1 on node n1", error: true, contextType: "node", context: "n1", ts, extra: { node: "n1", attempt: 1 } }],
        firstSequence: 0n,
      },
      listResultMessages: { taskId: watched.taskId, afterSequence: 0n, errorsOnly: false, pageSize: 1 },
      watchTask: { taskId: watched.taskId, afterSequence: 1n },
      watchTasks: { statuses: [TaskStatus.QUEUED], actions: ["deploy_nodes"], parentTaskId: parent.taskId, sendInitial: true },
      createBuildData: {
        buildData: {
          nodeName: "n1",
          taskId: watched.taskId,
          collectedAt: ts,
          generator: "lshw",
          dataFormat: "text/plain; charset=utf-8",
          dataElement: Buffer.from("hw"),
        },
      },
      listBuildData: { nodeName: "n1", taskId: watched.taskId, latest: false, view: BuildDataView.BASIC, pageSize: 1 },
      claimLeadership: { election: "fuzz", instanceId: "orch-1", ttl: { seconds: 30n, nanos: 0 } },
      renewLeadership: { election: "fuzz", instanceId: "orch-1", term: fuzzLeader.leader!.term },
      resignLeadership: { election: "fuzz-resign", instanceId: "orch-2", term: 1n },
      getLeader: { election: "orchestrator" },
      watchLeader: { election: "orchestrator" },
      getDesignDocuments: { designRef: `file://${root}/site.yaml` },
      purgeTasks: { olderThanDays: 30 },
      setBootActionContext: { nodeName: "n2", taskId: watched.taskId, identityKey: Buffer.alloc(32, 7) },
      getBootActionContext: { nodeName: "n1" },
      createBootActions: { nodeName: "n1", taskId: watched.taskId, actions: [{ actionName: "fuzzed", signalling: true }] },
      reportBootActionStatus: {
        actionId: bootActions[0]!.actionId,
        identityKey: nodeKey,
        details: [{ message: "progress", error: false, extra: { step: 1 } }],
      },
      verifyBootActionKey: { nodeName: "n1", identityKey: nodeKey },
      getBootAction: { actionId: bootActions[0]!.actionId },
      listBootActions: { nodeName: "n1", taskId: watched.taskId, pageSize: 1 },
      check: { service: "" },
      exportState: { includeSecrets: true },
      importRecords: {
        formatVersion: 1,
        records: [
          {
            line: 2n,
            json: JSON.stringify({
              kind: "result_message",
              task_id: watched.taskId,
              sequence: 1,
              message: "Error 1 on node n1",
              error: true,
              context_type: "node",
              context: "n1",
              ts: "2024-01-02T03:04:05.000006Z",
              extra: { node: "n1", attempt: 1 },
            }),
          },
        ],
      },
    };
    for (const m of ALL_METHODS) {
      // A method added later is fuzzed too, from its empty request.
      const init = inits[m.localName] ?? {};
      bases.set(m.name, Buffer.from(toBinary(m.input, create(m.input, init as never))));
    }
    // Real page tokens for the paged methods, with the base request's filters.
    tokens.set("ListTasks", (await c.listTasks(inits.listTasks as never)).nextPageToken);
    tokens.set("ListSubtasks", (await c.listSubtasks(inits.listSubtasks as never)).nextPageToken);
    tokens.set("ListResultMessages", (await c.listResultMessages(inits.listResultMessages as never)).nextPageToken);
    tokens.set("ListBuildData", (await c.listBuildData(inits.listBuildData as never)).nextPageToken);
    tokens.set("ListBootActions", (await c.listBootActions(inits.listBootActions as never)).nextPageToken);
    for (const [name, t] of tokens) expect(t, `${name} gave no next_page_token for its base request`).to.not.equal("");
    // Every base request is valid: served, or for a stream, sends a first message.
    for (const m of ALL_METHODS) {
      const out = await (m.methodKind === "server_streaming"
        ? serverStream(raw, methodPath(m), bases.get(m.name)!)
        : unary(raw, methodPath(m), bases.get(m.name)!));
      if (m.methodKind === "server_streaming") expect(out.received, `${m.name} base request: ${grpc.status[out.code]} ${out.details}`).to.be.greaterThan(0);
      else expect(grpc.status[out.code], `${m.name} base request: ${out.details}`).to.equal("OK");
    }
    // Warm-up: a tenth of each method's cases (another seed), checked like
    // the rest; RSS is sampled after it, so that first-use growth (compiled
    // code, buffers of every path) does not count as a leak.
    for (const m of ALL_METHODS) {
      const warm = casesFor(m, prng(seedFor(`warm-up ${m.name}`))).filter((_, i) => i % 10 === 0);
      total += warm.length;
      const failures = await runAll(
        m,
        warm.map((c) => ({ ...c, what: `warm-up ${c.what}` })),
      );
      expect(failures.length, `${failures.length} of ${warm.length} warm-up cases failed:\n${failures.slice(0, 25).join("\n")}\n`).to.equal(0);
    }
    gc();
    rssStart = process.memoryUsage().rss;
    heapStart = process.memoryUsage().heapUsed;
  });
  after(() => {
    raw?.close();
    console.log(`      fuzz: seed ${SEED}, ${total} cases, RSS +${rssGrowthMb ?? "?"} MB (${counts.join(", ")})`);
  });

  function casesFor(m: DescMethod, rng: Rng): Case[] {
    const base = bases.get(m.name)!;
    const cases: Case[] = [];
    // Random bytes of random lengths: mostly short, some long.
    const scale = Number(process.env.FUZZ_SCALE ?? 1); // FUZZ_SCALE=10: ten times the random cases, for a longer hunt
    for (let i = 0; i < 50 * scale; i++) {
      const n = i % 50 < 38 ? rng.int(64) : i % 50 < 48 ? rng.int(4096) : rng.int(256 * 1024);
      cases.push({ what: `random #${i} (${n} bytes)`, body: rng.bytes(n) });
    }
    // The valid request, truncated, bit-flipped, spliced.
    cases.push({ what: "valid", body: base });
    for (let i = 0; i < 60 * scale; i++) {
      const b = Buffer.from(base);
      const kind = i % 4;
      if (kind === 0) {
        const at = rng.int(Math.max(1, b.length));
        cases.push({ what: `truncated at ${at}/${b.length}`, body: b.subarray(0, at) });
      } else if (kind === 1 || kind === 2) {
        const flips: number[] = [];
        for (let k = 0; k < 1 + rng.int(kind === 1 ? 1 : 4) && b.length > 0; k++) {
          const bit = rng.int(b.length * 8);
          b[bit >> 3]! ^= 1 << (bit & 7);
          flips.push(bit);
        }
        cases.push({ what: `bits ${flips.join(",")} flipped`, body: b });
      } else {
        const at = rng.int(b.length + 1);
        const junk = rng.bytes(1 + rng.int(8));
        cases.push({ what: `${junk.toString("hex")} inserted at ${at}`, body: Buffer.concat([b.subarray(0, at), junk, b.subarray(at)]) });
      }
    }
    // Invalid UTF-8 in every string field (and map key/value), appended to the valid request.
    const stringPaths = walk(m.input, (f) => scalarOf(f) === ScalarType.STRING || f.fieldKind === "map");
    for (const p of stringPaths) {
      const leaf = p.fields[p.fields.length - 1]!;
      const outer = p.fields.slice(0, -1).map((f) => f.number);
      const bad = Buffer.from([0xff, 0xfe, 0x61]);
      if (leaf.fieldKind === "map") {
        cases.push({ what: `invalid UTF-8 in ${p.name} key`, body: Buffer.concat([base, nest([...outer, leaf.number], len(1, bad))]) });
        if (leaf.mapKind === "scalar")
          cases.push({
            what: `invalid UTF-8 in ${p.name} value`,
            body: Buffer.concat([base, nest([...outer, leaf.number], Buffer.concat([len(1, Buffer.from("k")), len(2, bad)]))]),
          });
      } else {
        cases.push({ what: `invalid UTF-8 in ${p.name}`, body: Buffer.concat([base, nest(outer, len(leaf.number, bad))]) });
        // A lone surrogate's UTF-8 encoding (CESU), also invalid.
        cases.push({ what: `encoded surrogate in ${p.name}`, body: Buffer.concat([base, nest(outer, len(leaf.number, Buffer.from([0xed, 0xa0, 0x80])))]) });
      }
    }
    // Deep google.protobuf.Struct values, and deep unknown groups.
    const structPaths = walk(
      m.input,
      (f) => (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")) && f.message.typeName === "google.protobuf.Struct",
    );
    for (const p of structPaths) {
      for (const depth of [50, 99, 100, 101, 1000, 10000]) {
        for (const viaList of [false, true]) {
          const outer = p.fields.map((f) => f.number);
          cases.push({
            what: `${p.name} nested ${depth} deep${viaList ? " (lists)" : ""}`,
            body: Buffer.concat([base, nest(outer, deepStruct(depth, viaList))]),
          });
        }
      }
    }
    for (const depth of [99, 101, 10000]) {
      const groups = Buffer.concat([
        ...Array.from({ length: depth }, () => tag(1000, WT.sgroup)),
        ...Array.from({ length: depth }, () => tag(1000, WT.egroup)),
      ]);
      cases.push({ what: `unknown group nested ${depth} deep`, body: Buffer.concat([base, groups]) });
    }
    // Junk page tokens for paged methods.
    const tokenField = m.input.fields.find((f) => f.name === "page_token");
    if (tokenField) {
      const real = tokens.get(m.name) ?? "";
      let shape: { v?: unknown; f?: unknown; k?: unknown[] } = {};
      try {
        shape = JSON.parse(Buffer.from(real, "base64url").toString("utf8"));
      } catch {
        // not JSON (e.g. a signed format): the junk below still must not be INTERNAL
      }
      const keyLen = Array.isArray(shape?.k) ? shape.k.length : 2;
      const junkKeys: unknown[][] = [
        ["not-a-time", "x"],
        ["1e400", "..."],
        [(2n ** 70n).toString(), (2n ** 70n).toString()],
        [(2n ** 63n).toString(), "-1"],
        [(-(2n ** 63n)).toString(), "00000000-0000-0000-0000-000000000000"],
        ["-1", "ffffffff-ffff-ffff-ffff-ffffffffffff"],
        ["253402300800000000", randomUUID()],
        ["", ""],
        [" 1", "1 "],
        ["0x10", "1_000"],
        ["1.5", "NaN"],
        ["\u0000", "\ud800"],
      ].map((k) => Array.from({ length: keyLen }, (_, i) => k[i % k.length]));
      const tokensToTry: [string, string][] = junkKeys.map((k) => [`key ${JSON.stringify(k)}`, b64url({ ...shape, v: shape.v ?? 1, k })]);
      tokensToTry.push(
        ["key of numbers", b64url({ ...shape, k: Array.from({ length: keyLen }, () => Number.POSITIVE_INFINITY) })],
        ["key too long", b64url({ ...shape, k: [...(shape.k ?? []), "1"] })],
        ["key null", b64url({ ...shape, k: null })],
        ["body null", b64url("null")],
        ["body array", b64url("[1,2]")],
        ["body number", b64url("1e400")],
        ["body deep", b64url("[".repeat(5000) + "]".repeat(5000))],
        ["not base64", "!!!***"],
        ["one character", "A"],
        ["long", "A".repeat(100_000)],
        ["real token with a byte changed", real.length > 4 ? real.slice(0, 3) + (real[3] === "A" ? "B" : "A") + real.slice(4) : "AAAA"],
      );
      for (let i = 0; i < 6; i++) tokensToTry.push([`random base64url #${i}`, rng.bytes(1 + rng.int(200)).toString("base64url")]);
      for (let i = 0; i < 4; i++)
        tokensToTry.push([
          `random text #${i}`,
          String.fromCodePoint(...Array.from({ length: 1 + rng.int(40) }, () => 1 + rng.int(0x10fff)).filter((c) => c < 0xd800 || c > 0xdfff)),
        ]);
      for (const [what, t] of tokensToTry) {
        cases.push({ what: `page_token: ${what}`, body: Buffer.concat([base, len(tokenField.number, Buffer.from(t))]) });
      }
    }
    // Extreme numbers in every numeric field: set through create() where the
    // type holds them, hand-encoded (appended, last one wins) where not.
    const numberPaths = walk(m.input, (f) => NUMERIC.has(scalarOf(f)!));
    for (const p of numberPaths) {
      const leaf = p.fields[p.fields.length - 1]!;
      const t = scalarOf(leaf)!;
      for (const [label, v] of EXTREMES) {
        if (representable(t, v)) {
          cases.push({ what: `${p.name} = ${label} (create)`, body: setNumber(m.input, base, p, t, v) });
        } else {
          const outer = p.fields.slice(0, -1).map((f) => f.number);
          cases.push({ what: `${p.name} = ${label} (hand-encoded)`, body: Buffer.concat([base, nest(outer, encodeNumber(leaf, t, v))]) });
        }
      }
    }
    return cases;
  }

  async function runAll(m: DescMethod, cases: Case[]): Promise<string[]> {
    const failures: string[] = [];
    const streaming = m.methodKind === "server_streaming";
    let next = 0;
    const worker = async () => {
      while (next < cases.length) {
        const c = cases[next++]!;
        const o = await (streaming ? serverStream(raw, methodPath(m), c.body) : unary(raw, methodPath(m), c.body));
        const p = problem(o, streaming);
        if (p) failures.push(`seed ${SEED}, ${m.name}, ${c.what}: ${p} (body ${c.body.subarray(0, 48).toString("hex")}${c.body.length > 48 ? "…" : ""})`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    return failures;
  }

  for (const m of ALL_METHODS) {
    it(`${m.parent.name}/${m.name}: never INTERNAL or UNKNOWN, always within the deadline`, async () => {
      const cases = casesFor(m, prng(seedFor(m.name)));
      total += cases.length;
      counts.push(`${m.name} ${cases.length}`);
      const failures = await runAll(m, cases);
      expect(failures.length, `${failures.length} of ${cases.length} cases failed:\n${failures.slice(0, 25).join("\n")}\n`).to.equal(0);
    });
  }

  describe("compressed frames (raw HTTP/2)", () => {
    const getTask = () => methodPath(StateService.method.getTask);
    const valid = () => bases.get("GetTask")!;

    it("a gzip frame holding a valid request is served", async () => {
      const o = await rawHttp2(h.server.address, getTask(), grpcFrame(gzipSync(valid()), true), { "grpc-encoding": "gzip" });
      expect(grpc.status[o.code], o.details).to.equal("OK");
      total++;
    });

    it("a gzip frame holding garbage that decompresses is INVALID_ARGUMENT", async () => {
      for (const [i, body] of [Buffer.from([0xff, 0xff, 0xff]), Buffer.from([0x0a, 0x05, 0xff, 0xfe, 0x61, 0x62, 0x63])].entries()) {
        const o = await rawHttp2(h.server.address, getTask(), grpcFrame(gzipSync(body), true), { "grpc-encoding": "gzip" });
        expect(problem(o, false), `case ${i}`).to.equal(null);
        expect(grpc.status[o.code], o.details).to.equal("INVALID_ARGUMENT");
        total++;
      }
    });

    it("a frame flagged compressed without grpc-encoding is read as identity (INVALID_ARGUMENT for garbage)", async () => {
      const o = await rawHttp2(h.server.address, getTask(), grpcFrame(Buffer.from([0xff, 0xff]), true), {});
      expect(grpc.status[o.code], o.details).to.equal("INVALID_ARGUMENT");
      total++;
    });

    it("an unsupported grpc-encoding is UNIMPLEMENTED (grpc-js)", async () => {
      const o = await rawHttp2(h.server.address, getTask(), grpcFrame(Buffer.from([0xff, 0xff]), true), { "grpc-encoding": "br" });
      expect(grpc.status[o.code], o.details).to.equal("UNIMPLEMENTED");
      total++;
    });

    // Documents grpc-js 1.14, not our code: BaseServerInterceptingCall
    // (build/src/server-interceptors.js, decompressMessage) answers a frame
    // that fails to decompress with INTERNAL "Failed to decompress message"
    // and sends it itself, beneath any handler or interceptor. So does an
    // unparsable grpc-timeout header (handleTimeoutHeader). When grpc-js
    // changes this, this test fails and should then expect INVALID_ARGUMENT.
    it("a gzip frame that fails to decompress: INTERNAL from grpc-js itself, before our code runs", async () => {
      const rng = prng(seedFor("gzip"));
      const garbage = [
        Buffer.from([0xff, 0xff, 0xff]),
        rng.bytes(64),
        gzipSync(valid()).subarray(0, 12),
        Buffer.concat([gzipSync(valid()).subarray(0, 10), rng.bytes(20)]),
      ];
      for (const [i, g] of garbage.entries()) {
        const o = await rawHttp2(h.server.address, getTask(), grpcFrame(g, true), { "grpc-encoding": "gzip" });
        expect([grpc.status[o.code], o.details], `garbage #${i} (seed ${SEED})`).to.deep.equal(["INTERNAL", "Failed to decompress message"]);
        total++;
      }
      const bad = await rawHttp2(h.server.address, getTask(), grpcFrame(valid(), false), { "grpc-timeout": "soon" });
      expect([grpc.status[bad.code], bad.details]).to.deep.equal(["INTERNAL", 'Invalid grpc-timeout value "soon"']);
      total++;
    });
  });

  describe("specific cases", () => {
    it("random bytes to GetTask: INVALID_ARGUMENT naming the request type, with ErrorInfo and a BadRequest violation", async () => {
      const o = await unary(raw, methodPath(StateService.method.getTask), Buffer.from([0x0a, 0x05, 0x61, 0x62]));
      expect(grpc.status[o.code], o.details).to.equal("INVALID_ARGUMENT");
      expect(o.details).to.contain("not a valid drydock.statemgmt.v1.GetTaskRequest");
      const d = details(o.metadata);
      expect(d.domain).to.equal(DOMAIN);
      expect(d.fields).to.deep.equal([""]);
    });

    it("garbage in a bidi stream (reflection) is INVALID_ARGUMENT too", async () => {
      const m = ServerReflection.method.serverReflectionInfo;
      const o = await new Promise<Outcome>((resolve) => {
        const call = raw.makeBidiStreamRequest(methodPath(m), identity, identity, new grpc.Metadata(), { deadline: Date.now() + DEADLINE_MS });
        call.on("data", () => {});
        call.on("error", () => {});
        call.on("status", (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details, metadata: s.metadata, ms: 0 }));
        call.write(Buffer.from([0x0a, 0x05, 0xff]));
        call.end();
      });
      expect(grpc.status[o.code], o.details).to.equal("INVALID_ARGUMENT");
      expect(problem(o, true)).to.equal(null);
    });

    it("invalid UTF-8 in GetTask.task_id, a Struct nested past the recursion limit or past 32 levels: INVALID_ARGUMENT", async () => {
      const utf8 = await unary(raw, methodPath(StateService.method.getTask), len(1, Buffer.from([0xff, 0xfe])));
      expect(grpc.status[utf8.code], utf8.details).to.equal("INVALID_ARGUMENT");
      const base = Buffer.from(toBinary(GetTaskRequestSchema, create(GetTaskRequestSchema, { taskId: randomUUID() })));
      expect(fromBinary(GetTaskRequestSchema, base).taskId).to.have.length(36);
      // protobuf-es decodes 100 levels of messages (map entries do not count).
      const createTask = (ctx: Buffer) =>
        unary(raw, methodPath(StateService.method.createTask), Buffer.concat([len(3, Buffer.from("deploy_nodes")), len(6, ctx)]));
      for (const [depth, viaList] of [
        [101, true],
        [1000, false],
        [10000, true],
      ] as const) {
        const deep = await createTask(deepStruct(depth, viaList));
        expect(grpc.status[deep.code], `${depth}: ${deep.details}`).to.equal("INVALID_ARGUMENT");
        expect(deep.details).to.contain("maximum recursion depth");
      }
      // Decodable, but deeper than a task may be stored: a response holding it
      // (ListTasksResponse → Task → Struct …) would pass a client's limit.
      for (const [depth, viaList] of [
        [100, true],
        [99, false],
      ] as const) {
        const deep = await createTask(deepStruct(depth, viaList));
        expect(grpc.status[deep.code], `${depth}: ${deep.details}`).to.equal("INVALID_ARGUMENT");
        expect(details(deep.metadata).fields).to.deep.equal(["request_context"]);
      }
      expect(grpc.status[(await createTask(deepStruct(50, false))).code]).to.equal("OK"); // 17 levels
      // 32 levels of objects (Struct, entry, Value each) are stored, and read back through every path.
      let ctx: JsonObject = { leaf: 1 };
      for (let i = 1; i < 32; i++) ctx = { a: ctx };
      const { task } = await h.client.createTask({ action: "deep_context", requestContext: ctx });
      expect((await h.client.listTasks({ actions: ["deep_context"] })).tasks[0]?.requestContext).to.deep.equal(ctx);
      await expectInvalid(h.client.createTask({ action: "deep_context", requestContext: { a: ctx } }), "request_context");
      await expectInvalid(h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "m", extra: { list: [ctx] } }] }), "messages[0].extra");
    });

    it("PurgeTasks older_than_days is bounded to 36500 (100 years)", async () => {
      for (const days of [3_000_000, 2_147_483_647, 36_501]) {
        const d = await expectInvalid(h.client.purgeTasks({ olderThanDays: days }), "older_than_days");
        expect(d.message).to.contain("36500");
      }
      await h.client.purgeTasks({ olderThanDays: 36_500 });
    });

    it("timestamps outside years 1..9999 or with bad nanos are INVALID_ARGUMENT naming the field", async () => {
      await expectInvalid(h.client.listTasks({ createdAfter: { seconds: 2n ** 62n, nanos: 0 } }), "created_after");
      await expectInvalid(h.client.listTasks({ createdBefore: { seconds: -(2n ** 63n), nanos: 0 } }), "created_before");
      const { task } = await h.client.createTask({ action: "deploy_nodes" });
      await expectInvalid(
        h.client.appendResultMessages({ taskId: task!.taskId, messages: [{ message: "m", ts: { seconds: 0n, nanos: -1000 } }] }),
        "messages[0].ts",
      );
      await expectInvalid(
        h.client.createBuildData({
          buildData: {
            nodeName: "n",
            taskId: task!.taskId,
            generator: "g",
            dataFormat: "text/plain",
            dataElement: Buffer.from("x"),
            collectedAt: { seconds: 253_402_300_800n, nanos: 0 },
          },
        }),
        "build_data.collected_at",
      );
      // The boundaries themselves are accepted.
      await h.client.listTasks({ createdAfter: { seconds: -62_135_596_800n, nanos: 0 }, createdBefore: { seconds: 253_402_300_799n, nanos: 999_999_000 } });
    });

    it("file:// references that do not decode to a path: INVALID_ARGUMENT naming design_ref, before any file system access", async () => {
      for (const ref of [
        `file://${root}/site.yaml%00.txt`,
        `file://${root}/..%2f..%2fetc%2fpasswd`,
        `file://${root}/%E0%A4`,
        `file://${root}/%zz`,
        `file://${root}/sub%2F..%2Fsite.yaml`,
      ]) {
        const d = await expectInvalid(h.client.getDesignDocuments({ designRef: ref }), "design_ref");
        expect(d.message, ref).to.match(/file/);
        await expectInvalid(h.client.createTask({ action: "deploy_nodes", designRef: ref }), "design_ref");
      }
    });

    it("file:// paths the file system cannot resolve inside a root: NOT_FOUND", async () => {
      await expectError(h.client.getDesignDocuments({ designRef: `file://${root}/loop` }), grpc.status.NOT_FOUND);
      await expectError(h.client.getDesignDocuments({ designRef: `file://${root}/${"a".repeat(300)}.yaml` }), grpc.status.NOT_FOUND);
      await expectError(h.client.getDesignDocuments({ designRef: `file://${root}/${"é".repeat(1000)}` }), grpc.status.NOT_FOUND);
    });

    it("http(s) and deckhand references whose userinfo or host do not decode: INVALID_ARGUMENT naming design_ref", async () => {
      for (const ref of [
        "http://user:%zz@127.0.0.1:1/design.yaml",
        "https://%E0%A4@127.0.0.1:1/design.yaml",
        "deckhand+http://a%zz/x",
        "deckhand+https://1.2.3.4.5/x",
        "deckhand+http://xn--/x",
      ]) {
        await expectInvalid(h.client.getDesignDocuments({ designRef: ref }), "design_ref");
        await expectInvalid(h.client.createTask({ action: "deploy_nodes", designRef: ref }), "design_ref");
      }
    });

    it("a host name the resolver cannot take (a label over 63 characters, over 253 in all): INVALID_ARGUMENT naming design_ref", async () => {
      for (const host of [`${"a".repeat(64)}.example`, Array.from({ length: 60 }, () => "abcd").join("."), "a..b", "😀".repeat(200)]) {
        await expectInvalid(h.client.createTask({ action: "deploy_nodes", designRef: `https://${host}/site.yaml` }), "design_ref");
        await expectInvalid(h.client.getDesignDocuments({ designRef: `deckhand+https://${host}/x` }), "design_ref");
      }
      await h.client.createTask({ action: "deploy_nodes", designRef: `https://${"a".repeat(63)}.example/site.yaml` });
    });

    it("statuses quoting long input still fit in 8 KiB of trailers", async () => {
      const calls: [string, () => Promise<unknown>][] = [
        ["2,000 emoji as design_ref", () => h.client.getDesignDocuments({ designRef: `x${"😀".repeat(2000)}` })],
        ["2,000 emoji as a task's design_ref", () => h.client.createTask({ action: "deploy_nodes", designRef: `x${"😀".repeat(2000)}` })],
        [
          "30 long mask paths",
          () => h.client.updateTask({ task: { taskId: randomUUID() }, updateMask: { paths: Array.from({ length: 30 }, (_, i) => `${"😀".repeat(500)}${i}`) } }),
        ],
        [
          "1,000 bad messages",
          () =>
            h.client.appendResultMessages({ taskId: randomUUID(), messages: Array.from({ length: 1000 }, () => ({ message: "", context: "😀".repeat(300) })) }),
        ],
      ];
      for (const [what, call] of calls) {
        const err = (await call().then(
          () => expect.fail(`${what}: expected an error`),
          (e: grpc.ServiceError) => e,
        )) as grpc.ServiceError;
        const o: Outcome = { code: err.code, details: err.details, metadata: err.metadata, ms: 0 };
        expect(grpc.status[o.code], what).to.equal("INVALID_ARGUMENT");
        expect(trailerBytes(o), what).to.be.at.most(MAX_TRAILER_BYTES);
        expect(details(o.metadata).fields?.length, what).to.be.greaterThan(0);
      }
    });

    it("junk key values in a page token with the right shape: INVALID_ARGUMENT naming page_token", async () => {
      const real = tokens.get("ListTasks")!;
      let shape: Record<string, unknown> = {};
      try {
        shape = JSON.parse(Buffer.from(real, "base64url").toString("utf8"));
      } catch {
        // a signed format: the forged tokens are refused anyway
      }
      for (const k of [
        ["not-a-time", "x"],
        ["1e400", randomUUID()],
        [(2n ** 70n).toString(), randomUUID()],
        ["1", "not-a-uuid"],
      ]) {
        await expectInvalid(
          h.client.listTasks({ ...(fromBinary(StateService.method.listTasks.input, bases.get("ListTasks")!) as object), pageToken: b64url({ ...shape, k }) }),
          "page_token",
        );
      }
    });

    it("an error message quoting input cut inside a surrogate pair is still sent (no lone surrogate in grpc-message)", async () => {
      // The validator quotes at most 64 characters of a bad UUID; the 64th here is half an emoji.
      const d = await expectInvalid(h.client.getTask({ taskId: `${"a".repeat(63)}😀😀` }), "task_id");
      expect(d.message).to.contain("is not a UUID");
      await expectInvalid(h.client.createTask({ action: `a${"b".repeat(78)}😀` }), "action");
    });

    it("big build data and its limit still answer RESOURCE_EXHAUSTED or INVALID_ARGUMENT, never INTERNAL", async () => {
      const { task } = await h.client.createTask({ action: "deploy_nodes" });
      const body = Buffer.from(
        toBinary(
          CreateBuildDataRequestSchema,
          create(CreateBuildDataRequestSchema, {
            buildData: { nodeName: "n", taskId: task!.taskId, generator: "g", dataFormat: "text/plain", dataElement: Buffer.alloc(3 * BUILD_DATA_MAX + 1) },
          }),
        ),
      );
      const o = await unary(raw, methodPath(StateService.method.createBuildData), body);
      expect(grpc.status[o.code], o.details).to.equal("RESOURCE_EXHAUSTED");
    });
  });

  describe("afterwards", () => {
    it("the server still serves: health SERVING, CreateTask and GetTask work, memory settles", async () => {
      const status = await new Promise<number>((resolve, reject) =>
        raw.makeUnaryRequest(
          methodPath(Health.method.check),
          identity,
          identity,
          Buffer.alloc(0),
          new grpc.Metadata(),
          { deadline: Date.now() + DEADLINE_MS },
          (err, res) => (err ? reject(err) : resolve(fromBinary(Health.method.check.output, res!).status)),
        ),
      );
      expect(status).to.equal(1); // SERVING
      const { task } = await h.client.createTask({ action: "deploy_nodes", createdBy: "after-fuzz" });
      const got = await h.client.getTask({ taskId: task!.taskId });
      expect(got.task?.createdBy).to.equal("after-fuzz");
      // Memory: after a full collection, the live heap is where it started
      // (a leak would keep what the cases allocated), and RSS is back within
      // 100 MB (the allocator may keep freed pages for a while).
      gc();
      const heapGrowthMb = Math.round((process.memoryUsage().heapUsed - heapStart) / 1e6);
      expect(heapGrowthMb, "live heap growth in MB over the fuzz run").to.be.below(30);
      // The allocator returns freed pages when it will: give it up to 3 s (the expect below judges).
      let rss = process.memoryUsage().rss;
      await eventually(
        () => {
          gc();
          rss = process.memoryUsage().rss;
          return rss <= rssStart + 100 * 1024 * 1024;
        },
        3000,
        "RSS back within 100 MiB",
      ).catch(() => {});
      rssGrowthMb = Math.round((rss - rssStart) / 1e6);
      expect(rssGrowthMb, "RSS growth in MB over the fuzz run").to.be.below(100);
    });
  });
});
