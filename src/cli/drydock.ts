// `statemgmt import-drydock`: reads the database of Drydock's own statemgmt
// (the tables of its alembic migrations: tasks, result_message, build_data,
// boot_action, boot_action_status; python/drydock_provisioner/statemgmt/db/
// tables.py) directly with postgres.js, in one REPEATABLE READ read-only
// transaction, turns its rows into records of the export format and sends
// them through ImportRecords, as `statemgmt import` does with a file.
//
// What changes on the way (docs/migration.md "Migrating from Drydock's statemgmt"):
// bytea ids become UUIDs and ULIDs; Drydock's global result_message serial
// becomes per-task gapless sequences in the same order; naive timestamps
// are read as UTC; JSON columns Drydock stored as JSON strings of JSON
// (json.dumps into a json column) are unwrapped; result links {rel: [uri]}
// become [{rel, href}]; node filters' snake_case keys become the service's;
// identity keys become their SHA-256 (sent only with --include-secrets);
// build data text is stored as its UTF-8 bytes. Rows Drydock left
// inconsistent are reported and skipped, never fatal.
import { createHash } from "node:crypto";
import postgres from "postgres";
import { FormatError, KINDS, emptyCounts, parseRecordLine, type BootActionRecord, type DataRecord, type Kind, type TaskRecord } from "../export/format.js";
import type { JsonObject, Link, NodeFilter } from "../core/domain.js";
import type { Connection } from "./connection.js";
import { CliError, EXIT } from "./exit.js";
import { Progress, printSummary, sendRecords, type Outgoing } from "./exportImport.js";
import type { Output } from "./terminal.js";

export interface DrydockOptions {
  databaseUrl: string;
  includeSecrets: boolean;
  dryRun: boolean;
}

/** A record built from Drydock's rows, and which row it came from (for messages). */
export interface Converted {
  record: DataRecord;
  source: string;
}

export interface Problem {
  source: string;
  problem: string;
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** A 16-byte ULID as its 26 characters of Crockford base32. */
export function ulidText(b: Buffer): string {
  let n = BigInt(`0x${b.toString("hex")}`);
  let s = "";
  for (let i = 0; i < 26; i++) {
    s = CROCKFORD[Number(n & 31n)] + s;
    n >>= 5n;
  }
  return s;
}

const uuidOf = (hex: string) => `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;

/** Drydock's naive timestamps (UTC), as the database formats them with this pattern. */
const TS = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/** A JSON value Drydock may have stored as a JSON string holding JSON (json.dumps into a json column). */
function unwrap(v: unknown): unknown {
  if (typeof v !== "string") return v;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function links(v: unknown): Link[] | string {
  const l = unwrap(v);
  if (l === null || l === undefined) return [];
  if (Array.isArray(l)) {
    if (l.every((x) => isObject(x) && typeof x.rel === "string" && typeof x.href === "string"))
      return l.map((x) => ({ rel: x.rel as string, href: x.href as string }));
    return "result_links is a list that is not of {rel, href} objects";
  }
  if (!isObject(l)) return "result_links is neither an object nor a list";
  const out: Link[] = [];
  for (const [rel, uris] of Object.entries(l)) {
    for (const href of Array.isArray(uris) ? uris : [uris]) {
      if (typeof href !== "string") return `result_links.${rel} holds a value that is not a URI string`;
      out.push({ rel, href });
    }
  }
  return out;
}

function nodeFilter(v: unknown): NodeFilter | null | string {
  const f = unwrap(v);
  if (f === null || f === undefined) return null;
  if (!isObject(f)) return "node_filter is not an object";
  const type = (t: unknown) => (t === undefined || t === null ? "union" : t === "union" || t === "intersection" ? t : undefined);
  const setType = type(f.filter_set_type ?? f.filterSetType);
  if (!setType) return `node_filter.filter_set_type ${JSON.stringify(f.filter_set_type)} is not union or intersection`;
  const sets = f.filter_set ?? f.filterSet ?? [];
  if (!Array.isArray(sets)) return "node_filter.filter_set is not a list";
  const out: NodeFilter = { filterSetType: setType, filterSet: [] };
  for (const [i, s] of sets.entries()) {
    if (!isObject(s)) return `node_filter.filter_set[${i}] is not an object`;
    const t = type(s.filter_type ?? s.filterType);
    if (!t) return `node_filter.filter_set[${i}].filter_type is not union or intersection`;
    const list = (a: unknown) => (Array.isArray(a) ? a.map(String) : []);
    const map = (m: unknown) => (isObject(m) ? Object.fromEntries(Object.entries(m).map(([k, x]) => [k, String(x)])) : {});
    out.filterSet.push({
      filterType: t,
      nodeNames: list(s.node_names ?? s.nodeNames),
      nodeTags: list(s.node_tags ?? s.nodeTags),
      nodeLabels: map(s.node_labels ?? s.nodeLabels),
      rackNames: list(s.rack_names ?? s.rackNames),
      rackLabels: map(s.rack_labels ?? s.rackLabels),
    });
  }
  return out;
}

function jsonObject(v: unknown, field: string): JsonObject | null | string {
  const o = unwrap(v);
  if (o === null || o === undefined) return null;
  if (!isObject(o)) return `${field} is not a JSON object`;
  return o as JsonObject;
}

interface DrydockTask {
  id: string;
  parent: string | null;
  subtasks: string[];
  row: Record<string, unknown>;
}

/**
 * Reads a Drydock database and yields its records in import order (tasks,
 * each after its parent; messages; build data; contexts; boot actions),
 * reporting rows it skips to `problem`.
 */
export async function* drydockRecords(sql: postgres.Sql, includeSecrets: boolean, problem: (p: Problem) => void): AsyncGenerator<Converted> {
  // Which of Drydock's migrations ran: build_data came with 4a5bef3702b, tasks.result_links with 4713e7ebca9.
  const columns = new Set(
    (await sql<{ c: string }[]>`select table_name || '.' || column_name as c from information_schema.columns where table_schema = current_schema()`).map(
      (r) => r.c,
    ),
  );
  const needed = ["tasks.task_id", "result_message.sequence", "boot_action.node_name", "boot_action_status.action_id"];
  const absent = needed.filter((c) => !columns.has(c));
  if (absent.length > 0) {
    throw new CliError(
      `not a Drydock statemgmt database: ${absent.map((c) => c.split(".")[0]).join(", ")} ${absent.length > 1 ? "are" : "is"} missing (in schema ${(await sql<{ s: string }[]>`select current_schema() as s`)[0]!.s})`,
      EXIT.USAGE,
    );
  }
  const linksColumn = columns.has("tasks.result_links") ? sql`result_links` : sql`null::json as result_links`;
  // Tasks: few enough to hold (Drydock keeps them for its retention period).
  const rows = await sql<Record<string, unknown>[]>`
    select encode(task_id, 'hex') as id, encode(parent_task_id, 'hex') as parent,
           array(select encode(x, 'hex') from unnest(subtask_id_list) x) as subtasks,
           result_status, result_message, result_reason, result_error_count, result_successes, result_failures,
           ${linksColumn}, retry, status, to_char(created, ${sql.unsafe(TS)}) as created, created_by,
           to_char(updated, ${sql.unsafe(TS)}) as updated, design_ref, request_context, node_filter, action,
           to_char(terminated, ${sql.unsafe(TS)}) as terminated, terminated_by, terminate
    from tasks order by created, task_id`;
  const tasks = new Map<string, DrydockTask>();
  for (const r of rows) {
    const id = r.id as string | null;
    if (id === null || id.length !== 32) {
      problem({ source: `tasks row with task_id ${id === null ? "null" : `of ${id.length / 2} bytes`}`, problem: "a task id must be 16 bytes; skipped" });
      continue;
    }
    const parent = r.parent as string | null;
    tasks.set(uuidOf(id), {
      id: uuidOf(id),
      parent: parent && parent.length === 32 ? uuidOf(parent) : null,
      subtasks: ((r.subtasks as string[]) ?? []).map(uuidOf),
      row: r,
    });
  }
  // Subtask lists name tasks; parent_task_id is what the service keeps. Report where they disagree.
  for (const t of tasks.values()) {
    for (const s of t.subtasks) {
      const sub = tasks.get(s);
      if (!sub) problem({ source: `task ${t.id}`, problem: `its subtask_id_list names task ${s}, which does not exist; the link is dropped` });
      else if (sub.parent !== t.id)
        problem({
          source: `task ${t.id}`,
          problem: `its subtask_id_list names task ${s}, whose parent_task_id is ${sub.parent ?? "null"}; parent_task_id is kept`,
        });
    }
  }
  // Each task after its parent; a task whose parent is missing (or skipped) is skipped with its subtree.
  const children = new Map<string | null, DrydockTask[]>();
  for (const t of tasks.values()) {
    const p = t.parent !== null && !tasks.has(t.parent) ? "missing" : t.parent;
    if (p === "missing") {
      problem({ source: `task ${t.id}`, problem: `its parent task ${t.parent} does not exist; skipped with its subtasks and messages` });
      continue;
    }
    children.set(p, [...(children.get(p) ?? []), t]);
  }
  const imported = new Map<string, TaskRecord>();
  const queue = [...(children.get(null) ?? [])];
  for (let i = 0; i < queue.length; i++) {
    const t = queue[i]!;
    const rec = taskRecord(t, problem);
    if (rec === undefined) continue; // its subtree is unreachable: reported below
    imported.set(t.id, rec);
    queue.push(...(children.get(t.id) ?? []));
    yield { record: rec, source: `Drydock task ${t.id}` };
  }
  for (const t of tasks.values()) {
    if (!imported.has(t.id) && t.parent !== null && tasks.has(t.parent) && !imported.has(t.parent) && queue.indexOf(t) < 0) {
      problem({
        source: `task ${t.id}`,
        problem: `it is not reachable from a top-level task (its parent ${t.parent} was skipped, or parents form a cycle); skipped`,
      });
    }
  }

  // Result messages: Drydock's global serial, per task, becomes 1, 2, 3, … in the same order.
  const details = new Map<string, { count: number; bytes: number; last: string }>();
  let current = "";
  let seq = 0;
  const messages = sql<Record<string, unknown>[]>`
    select sequence, encode(task_id, 'hex') as task, message, error, context, context_type,
           to_char(ts, ${sql.unsafe(TS)}) as ts, extra
    from result_message order by task_id, sequence`.cursor(1000);
  for await (const batch of messages) {
    for (const m of batch) {
      const source = `result_message sequence ${m.sequence}`;
      const task = typeof m.task === "string" && m.task.length === 32 ? uuidOf(m.task) : null;
      const t = task === null ? undefined : imported.get(task);
      if (task === null || !t) {
        problem({
          source,
          problem:
            task === null
              ? "its task_id is null or not 16 bytes; skipped"
              : `its task ${task} ${tasks.has(task) ? "was skipped" : "does not exist (deleted)"}; skipped`,
        });
        continue;
      }
      if (task !== current) {
        current = task;
        seq = 0;
      }
      const extra = jsonObject(m.extra, "extra");
      if (typeof extra === "string") problem({ source, problem: `${extra}; stored without extra` });
      let ts = m.ts as string | null;
      if (ts === null) {
        problem({ source, problem: `its ts is null; the task's created time ${t.created} is used` });
        ts = t.created;
      }
      const rec: DataRecord = {
        kind: "result_message",
        task_id: task,
        sequence: ++seq,
        message: (m.message as string | null) ?? "",
        error: (m.error as boolean | null) ?? false,
        context_type: (m.context_type as string | null) ?? "",
        context: (m.context as string | null) ?? "",
        ts,
        extra: typeof extra === "string" ? null : extra,
      };
      if (rec.context_type === "bootaction") {
        const k = `${task}/${rec.context}`;
        const d = details.get(k) ?? { count: 0, bytes: 0, last: ts };
        d.count++;
        d.bytes += Buffer.byteLength(rec.message) + (rec.extra === null ? 0 : Buffer.byteLength(JSON.stringify(rec.extra)));
        if (ts > d.last) d.last = ts; // RFC 3339 text in UTC: ordered as strings
        details.set(k, d);
      }
      yield { record: rec, source };
    }
  }

  // Build data: Drydock's data_element is text; the service keeps its UTF-8 bytes.
  const buildData = columns.has("build_data.data_element")
    ? sql<Record<string, unknown>[]>`
        select node_name, encode(task_id, 'hex') as task, to_char(collected_date, ${sql.unsafe(TS)}) as collected, generator, data_format, data_element
        from build_data order by collected_date, task_id, node_name, generator`.cursor(4)
    : [];
  let row = 0;
  for await (const batch of buildData) {
    for (const b of batch) {
      row++;
      const source = `build_data row ${row} (node ${String(b.node_name)}, generator ${String(b.generator)})`;
      const task = typeof b.task === "string" && b.task.length === 32 ? uuidOf(b.task) : null;
      const missing = (["node_name", "generator", "data_format", "data_element", "collected"] as const).filter((k) => b[k] === null);
      if (task === null || missing.length > 0) {
        problem({ source, problem: `${task === null ? "task_id" : missing.join(", ")} is null; skipped` });
        continue;
      }
      yield {
        record: {
          kind: "build_data",
          node_name: b.node_name as string,
          task_id: task,
          collected_at: b.collected as string,
          generator: b.generator as string,
          data_format: b.data_format as string,
          data_element: Buffer.from(b.data_element as string, "utf8").toString("base64"),
        },
        source,
      };
    }
  }

  // Boot actions first read (contexts take their time from them), then contexts, then actions.
  const actionRows = await sql<Record<string, unknown>[]>`
    select node_name, encode(action_id, 'hex') as id, action_name, encode(task_id, 'hex') as task, identity_key, action_status
    from boot_action_status order by action_id`;
  const actions: Converted[] = [];
  const newestAction = new Map<string, string>();
  for (const a of actionRows) {
    const hex = a.id as string | null;
    const actionId = hex && hex.length === 32 ? ulidText(Buffer.from(hex, "hex")) : null;
    const source = `boot_action_status ${actionId ?? "row with an action_id that is not 16 bytes"}`;
    const task = typeof a.task === "string" && a.task.length === 32 ? uuidOf(a.task) : null;
    if (actionId === null) {
      problem({ source, problem: "skipped" });
      continue;
    }
    if (task === null || !imported.has(task)) {
      problem({
        source,
        problem: task === null ? "its task_id is null; skipped" : `its task ${task} ${tasks.has(task) ? "was skipped" : "does not exist"}; skipped`,
      });
      continue;
    }
    const status = String(a.action_status ?? "").toLowerCase();
    if (!["incomplete", "success", "failure", "unreported"].includes(status)) {
      problem({ source, problem: `its action_status ${JSON.stringify(a.action_status)} is not incomplete, success, failure or unreported; skipped` });
      continue;
    }
    const created = `${new Date(Number(BigInt(`0x${hex!.slice(0, 12)}`))).toISOString().slice(0, 23)}000Z`;
    const d = details.get(`${task}/${actionId}`);
    const finished = status === "success" || status === "failure";
    const key = a.identity_key as Buffer | null;
    if (includeSecrets && (key === null || key.length === 0)) problem({ source, problem: "its identity_key is empty; stored with a key nobody holds" });
    const rec: BootActionRecord = {
      kind: "boot_action",
      action_id: actionId,
      node_name: a.node_name as string,
      action_name: a.action_name as string,
      task_id: task,
      // Drydock creates an action INCOMPLETE when its node signals, UNREPORTED when it does not.
      signalling: status !== "unreported",
      status: status as BootActionRecord["status"],
      created,
      // Drydock keeps no report time: the last detail the node reported, else the action's creation.
      reported: finished ? (d && d.last > created ? d.last : created) : null,
      detail_count: d?.count ?? 0,
      detail_bytes: d?.bytes ?? 0,
      ...(includeSecrets && key !== null && key.length > 0 && { identity_key_sha256: createHash("sha256").update(key).digest("base64") }),
    };
    const nodeTask = `${rec.node_name}/${task}`;
    if ((newestAction.get(nodeTask) ?? "") < created) newestAction.set(nodeTask, created);
    actions.push({ record: rec, source });
  }

  const contexts = await sql<Record<string, unknown>[]>`select node_name, encode(task_id, 'hex') as task, identity_key from boot_action order by node_name`;
  for (const c of contexts) {
    const source = `boot_action (context) of node ${String(c.node_name)}`;
    const task = typeof c.task === "string" && c.task.length === 32 ? uuidOf(c.task) : null;
    if (task === null || !imported.has(task)) {
      problem({
        source,
        problem: task === null ? "its task_id is null; skipped" : `its task ${task} ${tasks.has(task) ? "was skipped" : "does not exist"}; skipped`,
      });
      continue;
    }
    const key = c.identity_key as Buffer | null;
    // Drydock keeps no time for a context: its deployment's newest boot action, else the task's update.
    const updated = newestAction.get(`${String(c.node_name)}/${task}`) ?? imported.get(task)!.updated;
    yield {
      record: {
        kind: "boot_action_context",
        node_name: c.node_name as string,
        task_id: task,
        updated,
        ...(includeSecrets && key !== null && key.length > 0 && { identity_key_sha256: createHash("sha256").update(key).digest("base64") }),
      },
      source,
    };
  }
  yield* actions;
}

function taskRecord(t: DrydockTask, problem: (p: Problem) => void): TaskRecord | undefined {
  const r = t.row;
  const source = `task ${t.id}`;
  const created = (r.created as string | null) ?? (r.updated as string | null);
  if (created === null) {
    problem({ source, problem: "its created and updated times are null; skipped with its subtasks and messages" });
    return undefined;
  }
  if (r.status === null) {
    problem({ source, problem: "its status is null; skipped with its subtasks and messages" });
    return undefined;
  }
  const updated = (r.updated as string | null) ?? created;
  const l = links(r.result_links);
  if (typeof l === "string") problem({ source, problem: `${l}; stored without links` });
  const nf = nodeFilter(r.node_filter);
  if (typeof nf === "string") problem({ source, problem: `${nf}; stored without a node filter` });
  const rc = jsonObject(r.request_context, "request_context");
  if (typeof rc === "string") problem({ source, problem: `${rc}; stored without a request context` });
  const terminate = (r.terminate as boolean | null) ?? false;
  let terminated = r.terminated as string | null;
  if (terminate && terminated === null) {
    problem({ source, problem: `terminate is set without a terminated time; its updated time ${updated} is used` });
    terminated = updated;
  }
  return {
    kind: "task",
    task_id: t.id,
    parent_task_id: t.parent,
    action: (r.action as string | null) ?? "",
    design_ref: (r.design_ref as string | null) ?? "",
    status: String(r.status).toLowerCase() as TaskRecord["status"],
    result: {
      status: String(r.result_status ?? "incomplete").toLowerCase() as TaskRecord["result"]["status"],
      message: (r.result_message as string | null) ?? "",
      reason: (r.result_reason as string | null) ?? "",
      error_count: (r.result_error_count as number | null) ?? 0,
      successes: (r.result_successes as string[] | null) ?? [],
      failures: (r.result_failures as string[] | null) ?? [],
      links: typeof l === "string" ? [] : l,
    },
    node_filter: typeof nf === "string" ? null : nf,
    request_context: typeof rc === "string" ? null : rc,
    created,
    created_by: (r.created_by as string | null) ?? "",
    updated,
    terminated,
    terminated_by: (r.terminated_by as string | null) ?? null,
    terminate,
    retry: (r.retry as number | null) ?? 0,
    version: 1,
    claimed_by: null,
    claimed_at: null,
    claimed_term: 0,
  };
}

/** Checks each record as the server will, numbering them; invalid ones are reported and not sent. */
async function* checked(
  source: AsyncIterable<Converted>,
  sources: Map<number, string>,
  problem: (p: Problem) => void,
  counts: Record<Kind, number>,
): AsyncIterable<Outgoing> {
  let n = 0;
  for await (const c of source) {
    const json = JSON.stringify(c.record);
    try {
      parseRecordLine(json);
    } catch (err) {
      if (!(err instanceof FormatError)) throw err;
      problem({ source: c.source, problem: `${err.message}; skipped` });
      continue;
    }
    n++;
    counts[c.record.kind]++;
    sources.set(n, c.source);
    yield { line: n, json };
  }
}

const SHOWN_PROBLEMS = 20;

export async function importDrydock(conn: Connection, out: Output, o: DrydockOptions, signal: AbortSignal): Promise<number> {
  const progress = new Progress(out.stderr);
  const problems: Problem[] = [];
  const problem = (p: Problem) => {
    problems.push(p);
    if (!o.dryRun && problems.length <= SHOWN_PROBLEMS) {
      progress.done();
      out.note(`skipped: ${p.source}: ${p.problem}`);
    }
  };
  let db: postgres.Sql;
  try {
    db = postgres(o.databaseUrl, { max: 1, onnotice: () => {}, connect_timeout: 10, idle_timeout: 5 });
  } catch (err) {
    throw new CliError(`--database-url: ${(err as Error).message}`, EXIT.USAGE);
  }
  const counts = emptyCounts();
  const sources = new Map<number, string>();
  try {
    return await db.begin("isolation level repeatable read read only", async (sql) => {
      const records = checked(drydockRecords(sql as unknown as postgres.Sql, o.includeSecrets, problem), sources, problem, counts);
      if (o.dryRun) {
        let n = 0;
        for await (const _ of records) if (++n % 1000 === 0) progress.update(() => `reading Drydock's database: ${n} records`);
        progress.done();
        if (out.mode === "json") {
          out.print(JSON.stringify({ records: counts, problems }, null, 2));
        } else {
          out.print(`${"KIND".padEnd(20)} ${"RECORDS".padStart(8)}`);
          for (const k of KINDS) out.print(`${k.padEnd(20)} ${String(counts[k]).padStart(8)}`);
          out.print(`${problems.length} rows would be skipped${problems.length > 0 ? `; the first ${Math.min(problems.length, SHOWN_PROBLEMS)}:` : ""}`);
          for (const p of problems.slice(0, SHOWN_PROBLEMS)) out.print(`  ${p.source}: ${p.problem}`);
        }
        out.note("dry run: nothing was written");
        return EXIT.OK;
      }
      const summary = await sendRecords(conn, records, (sent) => progress.update(() => `importing: ${sent} records sent`, true), signal).catch(
        (err: unknown) => {
          if (signal.aborted) return undefined;
          throw err;
        },
      );
      progress.done();
      if (!summary || signal.aborted) {
        out.note("interrupted: the records sent so far are stored (importing again skips them)");
        return EXIT.INTERRUPTED;
      }
      const code = printSummary(out, summary, (line) => sources.get(line) ?? `record ${line}`);
      if (problems.length > SHOWN_PROBLEMS) out.note(`… and ${problems.length - SHOWN_PROBLEMS} more skipped rows (--dry-run -o json lists them all)`);
      if (problems.length > 0) out.note(`${problems.length} rows of Drydock's database were skipped as inconsistent`);
      return code;
    });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && /^(28|3D|08)|ECONNREFUSED|ENOTFOUND|CONNECT_TIMEOUT/.test(code)) {
      throw new CliError(`cannot read Drydock's database: ${(err as Error).message}`, EXIT.UNAVAILABLE);
    }
    if (typeof code === "string" && code === "42P01") throw new CliError(`not a Drydock database: ${(err as Error).message}`, EXIT.USAGE);
    throw err;
  } finally {
    await db.end({ timeout: 5 });
  }
}
