// Request validation: collects every violation of a request, then throws one
// InvalidArgumentError naming each field (proto snake_case paths). Nothing is
// truncated: a value over its limit is refused.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError, type FieldViolation } from "../core/errors.js";
import { MAX_MICROS, MIN_MICROS } from "../core/time.js";
import { designRefProblem } from "../design/reference.js";
import { DEFAULT_ELECTION, type Fence } from "../core/domain.js";
import type { NodeFilter as PbNodeFilter, Link as PbLink } from "../../gen/drydock/statemgmt/v1/task_pb.js";

/** Documented limits (see the .proto comments). */
export const LIMITS = {
  designRef: 2048,
  name: 255, // created_by, terminated_by, instance_id, node names, label keys/values
  resultText: 1024, // result.message, result.reason
  nodeList: 10_000,
  filterSets: 100,
  links: 100,
  linkRel: 64,
  linkHref: 2048,
  requestContextBytes: 64 * 1024,
  // Nesting of a Struct (request_context, extra), counting objects and arrays.
  // A task is returned inside responses (ListTasksResponse → Task → Struct),
  // and each JSON level is three messages on the wire (Struct, map entry,
  // Value): 32 levels stay within the recursion limit of 100 that protobuf
  // decoders (C++, Python, protobuf-es) apply by default. Deeper, a stored
  // task would make every page that holds it undecodable for clients.
  jsonDepth: 32,
  listFilterValues: 100, // statuses / actions given to ListTasks and ClaimNextTask
  purgeDays: 36_500, // PurgeTasks.older_than_days: 100 years; now() minus more leaves timestamptz's range
} as const;

export const ACTION_RE = /^[a-z][a-z0-9_]{0,63}$/;
export const ELECTION_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A ULID: 26 characters of Crockford base32 (no I, L, O, U); the first at most 7, so it fits 128 bits. */
const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/i;

/** Length in characters (code points), as PostgreSQL's length() counts. */
const chars = (s: string) => {
  let n = 0;
  for (const _ of s) n++;
  return n;
};

/** Whether objects and arrays nest more than `max` levels in `v` (a flat object is 1). */
function jsonDeeperThan(v: unknown, max: number): boolean {
  if (typeof v !== "object" || v === null) return false;
  if (max === 0) return true;
  for (const x of Array.isArray(v) ? v : Object.values(v)) if (jsonDeeperThan(x, max - 1)) return true;
  return false;
}

export class Validator {
  private readonly violations: FieldViolation[] = [];

  add(field: string, description: string): this {
    this.violations.push({ field, description });
    return this;
  }

  /** A string of at most `max` characters without NUL (PostgreSQL text cannot hold it). */
  text(field: string, value: string, max: number, required = false): this {
    if (required && value === "") return this.add(field, "is required");
    if (value.includes("\0")) return this.add(field, "must not contain NUL characters");
    const n = chars(value);
    if (n > max) this.add(field, `is ${n} characters long; the maximum is ${max}`);
    return this;
  }

  texts(field: string, values: readonly string[], maxItems: number, maxLen: number): this {
    if (values.length > maxItems) return this.add(field, `has ${values.length} entries; the maximum is ${maxItems}`);
    values.forEach((v, i) => this.text(`${field}[${i}]`, v, maxLen, true));
    return this;
  }

  /** A canonical UUID; returns it lower-cased. */
  uuid(field: string, value: string, required: boolean): string {
    if (value === "") {
      if (required) this.add(field, "is required (a UUID)");
    } else if (!UUID_RE.test(value)) {
      this.add(field, `"${value.slice(0, 64)}" is not a UUID`);
    }
    return value.toLowerCase();
  }

  /** A ULID in Crockford base32, either case; returns it upper-cased (the canonical form the server stores). */
  ulid(field: string, value: string, required: boolean): string {
    if (value === "") {
      if (required) this.add(field, "is required (a ULID)");
    } else if (!ULID_RE.test(value)) {
      this.add(field, `"${value.slice(0, 64)}" is not a ULID (26 characters of Crockford base32: 0-9 and A-Z without I, L, O, U; the first 0-7)`);
    }
    return value.toUpperCase();
  }

  action(field: string, value: string, required = true): this {
    if (value === "" && required) return this.add(field, "is required");
    if (value !== "" && !ACTION_RE.test(value)) this.add(field, `"${value.slice(0, 80)}" does not match ${ACTION_RE.source}`);
    return this;
  }

  designRef(field: string, value: string): this {
    if (value === "") return this;
    this.text(field, value, LIMITS.designRef);
    if (chars(value) <= LIMITS.designRef) {
      const problem = designRefProblem(value);
      if (problem) this.add(field, problem);
    }
    return this;
  }

  timestamp(field: string, ts: Timestamp | undefined): this {
    if (!ts) return this;
    if (ts.nanos < 0 || ts.nanos > 999_999_999 || ts.nanos % 1000 !== 0) {
      this.add(field, "nanos must be whole microseconds between 0 and 999999000");
    }
    // PostgreSQL timestamptz covers 4713 BC .. 294276 AD; keep to years 1..9999 like RFC 3339.
    if (ts.seconds < MIN_MICROS / 1_000_000n || ts.seconds > MAX_MICROS / 1_000_000n) this.add(field, "is outside years 1..9999");
    return this;
  }

  nodeFilter(field: string, f: PbNodeFilter | undefined): this {
    if (!f) return this;
    if (f.filterSet.length > LIMITS.filterSets) {
      return this.add(`${field}.filter_set`, `has ${f.filterSet.length} entries; the maximum is ${LIMITS.filterSets}`);
    }
    f.filterSet.forEach((s, i) => {
      const p = `${field}.filter_set[${i}]`;
      this.texts(`${p}.node_names`, s.nodeNames, LIMITS.nodeList, LIMITS.name);
      this.texts(`${p}.node_tags`, s.nodeTags, LIMITS.nodeList, LIMITS.name);
      this.texts(`${p}.rack_names`, s.rackNames, LIMITS.nodeList, LIMITS.name);
      this.labels(`${p}.node_labels`, s.nodeLabels);
      this.labels(`${p}.rack_labels`, s.rackLabels);
    });
    return this;
  }

  links(field: string, links: readonly PbLink[]): this {
    if (links.length > LIMITS.links) return this.add(field, `has ${links.length} entries; the maximum is ${LIMITS.links}`);
    links.forEach((l, i) => {
      this.text(`${field}[${i}].rel`, l.rel, LIMITS.linkRel, true);
      this.text(`${field}[${i}].href`, l.href, LIMITS.linkHref, true);
    });
    return this;
  }

  /** A google.protobuf.Struct stored as jsonb: bounded size and nesting, no NUL anywhere. */
  jsonObject(field: string, value: object | undefined, maxBytes: number): this {
    if (value === undefined) return this;
    if (jsonDeeperThan(value, LIMITS.jsonDepth)) return this.add(field, `is nested more than ${LIMITS.jsonDepth} levels deep`);
    const json = JSON.stringify(value);
    if (json.includes("\\u0000")) return this.add(field, "must not contain NUL characters");
    const bytes = Buffer.byteLength(json);
    if (bytes > maxBytes) this.add(field, `is ${bytes} bytes as JSON; the maximum is ${maxBytes}`);
    return this;
  }

  pageSize(field: string, value: number, dflt = 50, max = 1000): number {
    if (value < 0) this.add(field, "must not be negative");
    if (value > max) this.add(field, `is ${value}; the maximum is ${max}`);
    return value === 0 ? dflt : value;
  }

  /** An election name; "" means the default. */
  election(field: string, value: string): string {
    if (value === "") return DEFAULT_ELECTION;
    if (!ELECTION_RE.test(value)) this.add(field, `"${value.slice(0, 140)}" does not match ${ELECTION_RE.source}`);
    return value;
  }

  /** An optional leadership fence. */
  fence(field: string, f: { election: string; term: bigint } | undefined): Fence | null {
    if (!f) return null;
    const election = this.election(`${field}.election`, f.election);
    if (f.term < 1n) this.add(`${field}.term`, "must be a term returned by ClaimLeadership (≥ 1)");
    return { election, term: f.term };
  }

  /** An integer field bounded to [min, max] (both documented in the .proto). */
  range(field: string, value: number | bigint, min: number | bigint, max: number | bigint): this {
    if (value < min || value > max) this.add(field, `is ${value}; it must be between ${min} and ${max}`);
    return this;
  }

  /** Throws the collected violations, if any. */
  check(): void {
    if (this.violations.length) throw new InvalidArgumentError(this.violations);
  }

  private labels(field: string, labels: Record<string, string>): void {
    const entries = Object.entries(labels);
    if (entries.length > LIMITS.nodeList) {
      this.add(field, `has ${entries.length} entries; the maximum is ${LIMITS.nodeList}`);
      return;
    }
    for (const [k, v] of entries) {
      this.text(`${field}[${JSON.stringify(k.slice(0, 64))}]`, k, LIMITS.name, true);
      this.text(`${field}[${JSON.stringify(k.slice(0, 64))}]`, v, LIMITS.name);
    }
  }
}
