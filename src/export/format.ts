// The export format, "drydock-statemgmt-export" version 1 (docs/migration.md
// "Export format"): UTF-8 NDJSON. Line 1 is the header, then one JSON object per
// record, each with a "kind", then a trailer {"kind":"end","counts":{…}}
// with the number of records of each kind, so a truncated file is detected.
//
// Shared by the server (ExportState writes records, ImportRecords reads
// them) and the CLI (which checks a whole file before sending any of it, and
// builds records from a Drydock database). Parsing is strict: an unknown
// field or kind, a wrong type, a value outside what the database accepts is
// an error naming the field, so that a corrupt line is refused before
// anything is written. A later version of the format bumps "version"; this
// reader refuses versions it does not know.
import { formatMicros, MAX_MICROS, MIN_MICROS, parseTimestamptz, type Micros } from "../core/time.js";
import {
  ACTION_RESULTS,
  BOOT_ACTION_STATUSES,
  TASK_STATUSES,
  type ActionResult,
  type BootActionStatus,
  type JsonObject,
  type Link,
  type NodeFilter,
  type TaskStatus,
} from "../core/domain.js";

export const FORMAT_NAME = "drydock-statemgmt-export";
export const FORMAT_VERSION = 1;

/** Record kinds in the order an export writes them (and an import must receive them). */
export const KINDS = ["task", "result_message", "build_data", "boot_action_context", "boot_action"] as const;
export type Kind = (typeof KINDS)[number];

export interface Header {
  format: typeof FORMAT_NAME;
  version: number;
  /** When the snapshot was taken (RFC 3339, UTC). */
  exported_at: string;
  /** What wrote the file, e.g. "drydock-statemgmt 0.1.0" or "drydock (import-drydock)". */
  producer: string;
  /** Whether identity key hashes are in the file. */
  includes_secrets: boolean;
}

export interface TaskRecord {
  kind: "task";
  task_id: string;
  parent_task_id: string | null;
  action: string;
  design_ref: string;
  status: TaskStatus;
  result: {
    status: ActionResult;
    message: string;
    reason: string;
    error_count: number;
    successes: string[];
    failures: string[];
    links: Link[];
  };
  node_filter: NodeFilter | null;
  request_context: JsonObject | null;
  created: string;
  created_by: string;
  updated: string;
  terminated: string | null;
  terminated_by: string | null;
  terminate: boolean;
  retry: number;
  version: number;
  claimed_by: string | null;
  claimed_at: string | null;
  claimed_term: number;
}

export interface ResultMessageRecord {
  kind: "result_message";
  task_id: string;
  sequence: number;
  message: string;
  error: boolean;
  context_type: string;
  context: string;
  ts: string;
  extra: JsonObject | null;
}

export interface BuildDataRecord {
  kind: "build_data";
  /** The record's id where it was exported from; absent (a new id is given) in records built from Drydock. */
  build_data_id?: number;
  node_name: string;
  task_id: string;
  collected_at: string;
  generator: string;
  data_format: string;
  /** The data, base64. */
  data_element: string;
}

export interface BootActionContextRecord {
  kind: "boot_action_context";
  node_name: string;
  task_id: string;
  updated: string;
  /** base64 of the SHA-256 of the node's identity key; only in files with secrets. */
  identity_key_sha256?: string;
}

export interface BootActionRecord {
  kind: "boot_action";
  action_id: string;
  node_name: string;
  action_name: string;
  task_id: string;
  signalling: boolean;
  status: BootActionStatus;
  created: string;
  reported: string | null;
  detail_count: number;
  detail_bytes: number;
  /** As in BootActionContextRecord. */
  identity_key_sha256?: string;
}

export type DataRecord = TaskRecord | ResultMessageRecord | BuildDataRecord | BootActionContextRecord | BootActionRecord;

export interface Trailer {
  kind: "end";
  counts: Record<Kind, number>;
}

/** A line that is not a valid record; `field` names where (a JSON path such as result.status). */
export class FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FormatError";
  }
}

export const emptyCounts = (): Record<Kind, number> => ({ task: 0, result_message: 0, build_data: 0, boot_action_context: 0, boot_action: 0 });

// ---------------------------------------------------------------- writing

/** A timestamp of the format: RFC 3339 UTC with exactly six fraction digits. */
export const ts = (m: Micros): string => formatMicros(m);

/** `exportedAt`: RFC 3339 UTC. */
export function headerLine(producer: string, includesSecrets: boolean, exportedAt: string): string {
  const h: Header = { format: FORMAT_NAME, version: FORMAT_VERSION, exported_at: exportedAt, producer, includes_secrets: includesSecrets };
  return JSON.stringify(h);
}

export const trailerLine = (counts: Record<Kind, number>): string => JSON.stringify({ kind: "end", counts: { ...emptyCounts(), ...counts } } satisfies Trailer);

// ---------------------------------------------------------------- reading

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/;
const ACTION_RE = /^[a-z][a-z0-9_]{0,63}$/;
const TS_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
// No nested repetition: build data lines hold tens of megabytes (a group repeated per
// four characters overflowed V8's regular expression stack).
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;
const MIME_RE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}(\s*;\s*[a-z0-9!#$&^_.+-]+=("[^"\\]*"|[a-z0-9!#$&^_.+-]+))*$/i;

/** Length in code points, as PostgreSQL's length() counts. */
const chars = (s: string) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

type Obj = Record<string, unknown>;

/** Reads the fields of one JSON object, refusing anything the database would refuse. */
class Fields {
  private readonly seen = new Set<string>();
  constructor(
    private readonly o: Obj,
    private readonly path = "",
  ) {}

  private name(k: string) {
    return this.path ? `${this.path}.${k}` : k;
  }
  private fail(k: string, what: string): never {
    throw new FormatError(`${this.name(k)} ${what}`);
  }
  private get(k: string, optional = false): unknown {
    this.seen.add(k);
    if (!Object.hasOwn(this.o, k)) {
      if (optional) return undefined;
      this.fail(k, "is missing");
    }
    return this.o[k];
  }

  text(k: string, max: number, opts: { min?: number; nullable?: false; re?: RegExp; what?: string }): string;
  text(k: string, max: number, opts: { min?: number; nullable: true; re?: RegExp; what?: string }): string | null;
  text(k: string, max: number, opts: { min?: number; nullable?: boolean; re?: RegExp; what?: string } = {}): string | null {
    const v = this.get(k);
    if (v === null && opts.nullable) return null;
    if (typeof v !== "string") this.fail(k, `must be a string${opts.nullable ? " or null" : ""}`);
    if (v.includes("\u0000")) this.fail(k, "must not contain NUL characters");
    if (!wellFormed(v)) this.fail(k, "must be valid Unicode (it holds an unpaired surrogate)");
    const n = chars(v);
    if (n > max) this.fail(k, `is ${n} characters; the maximum is ${max}`);
    if (n < (opts.min ?? 0)) this.fail(k, opts.min === 1 ? "must not be empty" : `must be at least ${opts.min} characters`);
    if (opts.re && !opts.re.test(v)) this.fail(k, `${JSON.stringify(v.slice(0, 80))} is not ${opts.what}`);
    return v;
  }
  uuid(k: string, nullable = false): string | null {
    return this.text(k, 36, { nullable: nullable as true, re: UUID_RE, what: "a lower-case UUID" });
  }
  time(k: string, nullable = false): string | null {
    const v = this.text(k, 27, { nullable: nullable as true, re: TS_RE, what: "a timestamp such as 2024-01-02T03:04:05.000006Z" });
    if (v === null) return null;
    const m = parseTimestamptz(v);
    if (m < MIN_MICROS || m > MAX_MICROS || formatMicros(m) !== v) this.fail(k, `${JSON.stringify(v)} is not a valid timestamp in years 1 to 9999`);
    return v;
  }
  bool(k: string): boolean {
    const v = this.get(k);
    if (typeof v !== "boolean") this.fail(k, "must be true or false");
    return v;
  }
  int(k: string, min: number, max = Number.MAX_SAFE_INTEGER, optional = false): number | undefined {
    const v = this.get(k, optional);
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isSafeInteger(v)) this.fail(k, "must be a whole number");
    if (v < min || v > max) this.fail(k, `is ${v}; it must be between ${min} and ${max}`);
    return v;
  }
  oneOf<T extends string>(k: string, values: readonly T[]): T {
    const v = this.get(k);
    if (typeof v !== "string" || !(values as readonly string[]).includes(v)) this.fail(k, `must be one of ${values.join(", ")}`);
    return v as T;
  }
  texts(k: string, maxItems: number, maxChars: number): string[] {
    const v = this.get(k);
    if (!Array.isArray(v)) this.fail(k, "must be an array of strings");
    if (v.length > maxItems) this.fail(k, `has ${v.length} entries; the maximum is ${maxItems}`);
    v.forEach((s, i) => {
      if (typeof s !== "string") this.fail(`${k}[${i}]`, "must be a string");
      if (s.includes("\u0000")) this.fail(`${k}[${i}]`, "must not contain NUL characters");
      if (!wellFormed(s)) this.fail(`${k}[${i}]`, "must be valid Unicode (it holds an unpaired surrogate)");
      if (chars(s) > maxChars) this.fail(`${k}[${i}]`, `is longer than ${maxChars} characters`);
    });
    return v as string[];
  }
  object(k: string, nullable: boolean): Obj | null {
    const v = this.get(k);
    if (v === null && nullable) return null;
    if (typeof v !== "object" || v === null || Array.isArray(v)) this.fail(k, `must be an object${nullable ? " or null" : ""}`);
    return v as Obj;
  }
  json(k: string, maxBytes: number): JsonObject | null {
    const v = this.object(k, true);
    if (v === null) return null;
    if (deeperThan(v, 32)) this.fail(k, "is nested more than 32 levels deep");
    if (!jsonWellFormed(v)) this.fail(k, "must be valid Unicode (a key or string holds an unpaired surrogate)");
    const s = JSON.stringify(v);
    if (s.includes("\\u0000")) this.fail(k, "must not contain NUL characters");
    if (Buffer.byteLength(s) > maxBytes) this.fail(k, `is more than ${maxBytes} bytes as JSON`);
    return v as JsonObject;
  }
  base64(k: string, opts: { optional?: boolean; bytes?: number; nonEmpty?: boolean }): string | undefined {
    const v = this.get(k, opts.optional);
    if (v === undefined) return undefined;
    if (typeof v !== "string" || v.length % 4 !== 0 || !BASE64_RE.test(v)) this.fail(k, "must be base64 (RFC 4648, with padding)");
    const n = (v.length / 4) * 3 - (v.endsWith("==") ? 2 : v.endsWith("=") ? 1 : 0);
    if (opts.bytes !== undefined && n !== opts.bytes) this.fail(k, `is ${n} bytes; it must be ${opts.bytes}`);
    if (opts.nonEmpty && n === 0) this.fail(k, "must not be empty");
    return v;
  }
  array(k: string, maxItems: number): unknown[] {
    const v = this.get(k);
    if (!Array.isArray(v)) this.fail(k, "must be an array");
    if (v.length > maxItems) this.fail(k, `has ${v.length} entries; the maximum is ${maxItems}`);
    return v;
  }
  sub(k: string): Fields {
    return new Fields(this.object(k, false)!, this.name(k));
  }
  /** Refuses fields nobody read: a field this version does not know is corruption, or a newer version. */
  done(): void {
    for (const k of Object.keys(this.o))
      if (!this.seen.has(k)) throw new FormatError(`${this.name(k)} is not a field of this record (format version ${FORMAT_VERSION})`);
  }
}

/** No unpaired UTF-16 surrogate (JSON's \\ud800 escapes make them; PostgreSQL refuses them). */
const wellFormed = (s: string): boolean => !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

function jsonWellFormed(v: unknown): boolean {
  if (typeof v === "string") return wellFormed(v);
  if (typeof v !== "object" || v === null) return true;
  if (Array.isArray(v)) return v.every(jsonWellFormed);
  return Object.entries(v).every(([k, x]) => wellFormed(k) && jsonWellFormed(x));
}

function deeperThan(v: unknown, max: number): boolean {
  if (typeof v !== "object" || v === null) return false;
  if (max === 0) return true;
  for (const x of Array.isArray(v) ? v : Object.values(v)) if (deeperThan(x, max - 1)) return true;
  return false;
}

function parseObject(line: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (err) {
    throw new FormatError(`is not JSON (${(err as Error).message})`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new FormatError("is not a JSON object");
  return v as Obj;
}

/** The first line of a file. */
export function parseHeader(line: string): Header {
  const o = parseObject(line);
  if (o.format !== FORMAT_NAME) throw new FormatError(`is not the header of a ${FORMAT_NAME} file (its "format" must be "${FORMAT_NAME}")`);
  if (o.version !== FORMAT_VERSION) {
    throw new FormatError(
      `is version ${JSON.stringify(o.version)} of the format; this statemgmt reads version ${FORMAT_VERSION} (a newer file needs a newer statemgmt)`,
    );
  }
  const f = new Fields(o);
  f.text("format", 64, {});
  f.int("version", 1, 1);
  f.text("exported_at", 64, { min: 1 });
  const producer = f.text("producer", 256, {});
  const includesSecrets = f.bool("includes_secrets");
  f.done();
  return { format: FORMAT_NAME, version: FORMAT_VERSION, exported_at: o.exported_at as string, producer, includes_secrets: includesSecrets };
}

/** A record line or the trailer. */
export function parseLine(line: string): DataRecord | Trailer {
  const o = parseObject(line);
  if (o.kind === "end") {
    const f = new Fields(o);
    f.text("kind", 16, {});
    const c = f.sub("counts");
    const counts = emptyCounts();
    for (const k of KINDS) counts[k] = c.int(k, 0)!;
    c.done();
    f.done();
    return { kind: "end", counts };
  }
  return parseRecord(o);
}

/** One record (never the header or trailer). */
export function parseRecordLine(line: string): DataRecord {
  const r = parseLine(line);
  if (r.kind === "end") throw new FormatError("is the trailer, not a record");
  return r;
}

function parseRecord(o: Obj): DataRecord {
  const f = new Fields(o);
  const kind = f.oneOf("kind", KINDS);
  let r: DataRecord;
  switch (kind) {
    case "task": {
      const res = f.sub("result");
      const result = {
        status: res.oneOf("status", ACTION_RESULTS),
        message: res.text("message", 1024, {}),
        reason: res.text("reason", 1024, {}),
        error_count: res.int("error_count", 0, 2 ** 31 - 1)!,
        successes: res.texts("successes", 10_000, 255),
        failures: res.texts("failures", 10_000, 255),
        links: links(res),
      };
      res.done();
      const terminate = f.bool("terminate");
      const terminated = f.time("terminated", true);
      if (terminate && terminated === null) throw new FormatError("terminated must be set when terminate is true");
      const claimedBy = f.text("claimed_by", 255, { nullable: true });
      const claimedAt = f.time("claimed_at", true);
      if ((claimedBy === null) !== (claimedAt === null)) throw new FormatError("claimed_by and claimed_at must both be set or both be null");
      const taskId = f.uuid("task_id")!;
      const parent = f.uuid("parent_task_id", true);
      if (parent === taskId) throw new FormatError("parent_task_id must not be the task's own id");
      r = {
        kind,
        task_id: taskId,
        parent_task_id: parent,
        action: f.text("action", 64, { re: ACTION_RE, what: "an action name (^[a-z][a-z0-9_]{0,63}$)" }),
        design_ref: f.text("design_ref", 2048, {}),
        status: f.oneOf("status", TASK_STATUSES),
        result,
        node_filter: nodeFilter(f),
        request_context: f.json("request_context", 64 * 1024),
        created: f.time("created")!,
        created_by: f.text("created_by", 255, {}),
        updated: f.time("updated")!,
        terminated,
        terminated_by: f.text("terminated_by", 255, { nullable: true }),
        terminate,
        retry: f.int("retry", 0, 2 ** 31 - 1)!,
        version: f.int("version", 1)!,
        claimed_by: claimedBy,
        claimed_at: claimedAt,
        claimed_term: f.int("claimed_term", 0)!,
      };
      break;
    }
    case "result_message":
      r = {
        kind,
        task_id: f.uuid("task_id")!,
        sequence: f.int("sequence", 1)!,
        message: f.text("message", 1024, {}),
        error: f.bool("error"),
        context_type: f.text("context_type", 64, {}),
        context: f.text("context", 256, {}),
        ts: f.time("ts")!,
        extra: f.json("extra", 64 * 1024),
      };
      break;
    case "build_data": {
      const id = f.int("build_data_id", 1, Number.MAX_SAFE_INTEGER, true);
      r = {
        kind,
        ...(id !== undefined && { build_data_id: id }),
        node_name: f.text("node_name", 255, { min: 1 }),
        task_id: f.uuid("task_id")!,
        collected_at: f.time("collected_at")!,
        generator: f.text("generator", 256, { min: 1 }),
        data_format: f.text("data_format", 255, { min: 3, re: MIME_RE, what: "a MIME type such as text/plain" }),
        data_element: f.base64("data_element", { nonEmpty: true })!,
      };
      break;
    }
    case "boot_action_context": {
      const key = f.base64("identity_key_sha256", { optional: true, bytes: 32 });
      r = {
        kind,
        node_name: f.text("node_name", 280, { min: 1 }),
        task_id: f.uuid("task_id")!,
        updated: f.time("updated")!,
        ...(key !== undefined && { identity_key_sha256: key }),
      };
      break;
    }
    case "boot_action": {
      const key = f.base64("identity_key_sha256", { optional: true, bytes: 32 });
      const status = f.oneOf("status", BOOT_ACTION_STATUSES);
      const reported = f.time("reported", true);
      if ((status === "success" || status === "failure") !== (reported !== null)) {
        throw new FormatError("reported must be set exactly when status is success or failure");
      }
      r = {
        kind,
        action_id: f.text("action_id", 26, { re: ULID_RE, what: "a ULID (26 upper-case Crockford base32 characters)" }),
        node_name: f.text("node_name", 280, { min: 1 }),
        action_name: f.text("action_name", 256, { min: 1 }),
        task_id: f.uuid("task_id")!,
        signalling: f.bool("signalling"),
        status,
        created: f.time("created")!,
        reported,
        detail_count: f.int("detail_count", 0, 2 ** 31 - 1)!,
        detail_bytes: f.int("detail_bytes", 0)!,
        ...(key !== undefined && { identity_key_sha256: key }),
      };
      break;
    }
  }
  f.done();
  return r;
}

function links(f: Fields): Link[] {
  return f.array("links", 100).map((l, i) => {
    if (typeof l !== "object" || l === null || Array.isArray(l)) throw new FormatError(`result.links[${i}] must be an object`);
    const lf = new Fields(l as Obj, `result.links[${i}]`);
    const link = { rel: lf.text("rel", 64, { min: 1 }), href: lf.text("href", 2048, { min: 1 }) };
    lf.done();
    return link;
  });
}

function nodeFilter(f: Fields): NodeFilter | null {
  const o = f.object("node_filter", true);
  if (o === null) return null;
  const nf = new Fields(o, "node_filter");
  const types = ["union", "intersection"] as const;
  const filterSetType = nf.oneOf("filterSetType", types);
  const filterSet = nf.array("filterSet", 100).map((s, i) => {
    if (typeof s !== "object" || s === null || Array.isArray(s)) throw new FormatError(`node_filter.filterSet[${i}] must be an object`);
    const sf = new Fields(s as Obj, `node_filter.filterSet[${i}]`);
    const out = {
      filterType: sf.oneOf("filterType", types),
      nodeNames: sf.texts("nodeNames", 10_000, 255),
      nodeTags: sf.texts("nodeTags", 10_000, 255),
      nodeLabels: labels(sf, "nodeLabels"),
      rackNames: sf.texts("rackNames", 10_000, 255),
      rackLabels: labels(sf, "rackLabels"),
    };
    sf.done();
    return out;
  });
  nf.done();
  return { filterSetType, filterSet };
}

function labels(f: Fields, k: string): Record<string, string> {
  const o = f.object(k, false)!;
  for (const [key, v] of Object.entries(o)) {
    if (typeof v !== "string") throw new FormatError(`${k}.${key} must be a string`);
    if (`${key}${v}`.includes("\u0000") || !wellFormed(key) || !wellFormed(v))
      throw new FormatError(`${k}.${key} must be valid Unicode without NUL characters`);
  }
  return o as Record<string, string>;
}

/** A record's one-line description for messages: its kind and key. */
export function describeRecord(r: DataRecord): string {
  switch (r.kind) {
    case "task":
      return `task ${r.task_id}`;
    case "result_message":
      return `result message ${r.sequence} of task ${r.task_id}`;
    case "build_data":
      return `build data of node ${r.node_name} (${r.generator}) collected ${r.collected_at}`;
    case "boot_action_context":
      return `boot action context of node ${r.node_name}`;
    case "boot_action":
      return `boot action ${r.action_id}`;
  }
}
