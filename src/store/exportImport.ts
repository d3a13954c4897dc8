// All SQL of ExportState and ImportRecords: the whole state read as records
// of the export format (src/export/format.ts), and records written back.
import { randomBytes } from "node:crypto";
import type { Queryable, Sql } from "../db/connect.js";
import type { Micros } from "../core/time.js";
import type { TaskRow as TasksTableRow } from "./tasks.js";
import type { MessageRow } from "./messages.js";
import type { BuildDataRow as StoredBuildDataRow } from "./buildData.js";
import {
  describeRecord,
  type BootActionContextRecord,
  type BootActionRecord,
  type BuildDataRecord,
  type DataRecord,
  type Kind,
  type ResultMessageRecord,
  type TaskRecord,
  ts,
} from "../export/format.js";

// ---------------------------------------------------------------- rows → records

/** The task columns the export reads: selectTasks's row without its subtask ids (links go by parent_task_id). */
type TaskRow = Omit<TasksTableRow, "subtask_ids">;

const opt = (m: Micros | null) => (m === null ? null : ts(m));

export const taskRecord = (r: TaskRow): TaskRecord => ({
  kind: "task",
  task_id: r.task_id,
  parent_task_id: r.parent_task_id,
  action: r.action,
  design_ref: r.design_ref,
  status: r.status,
  result: {
    status: r.result_status,
    message: r.result_message,
    reason: r.result_reason,
    error_count: r.result_error_count,
    successes: r.result_successes,
    failures: r.result_failures,
    links: r.result_links,
  },
  node_filter: r.node_filter,
  request_context: r.request_context,
  created: ts(r.created),
  created_by: r.created_by,
  updated: ts(r.updated),
  terminated: opt(r.terminated),
  terminated_by: r.terminated_by,
  terminate: r.terminate,
  retry: r.retry,
  version: Number(r.version),
  claimed_by: r.claimed_by,
  claimed_at: opt(r.claimed_at),
  claimed_term: Number(r.claimed_term),
});

const messageRecord = (r: MessageRow): ResultMessageRecord => ({
  kind: "result_message",
  task_id: r.task_id,
  sequence: Number(r.seq),
  message: r.message,
  error: r.error,
  context_type: r.context_type,
  context: r.context,
  ts: ts(r.ts),
  extra: r.extra,
});

/** The export always reads the data. */
type BuildDataRow = StoredBuildDataRow & { data_element: Buffer };

const buildDataRecord = (r: BuildDataRow): BuildDataRecord => ({
  kind: "build_data",
  build_data_id: Number(r.build_data_id),
  node_name: r.node_name,
  task_id: r.task_id,
  collected_at: ts(r.collected_at),
  generator: r.generator,
  data_format: r.data_format,
  data_element: r.data_element.toString("base64"),
});

interface ContextRow {
  node_name: string;
  task_id: string;
  updated: Micros;
  identity_key_sha256: Buffer;
}

const contextRecord = (r: ContextRow, secrets: boolean): BootActionContextRecord => ({
  kind: "boot_action_context",
  node_name: r.node_name,
  task_id: r.task_id,
  updated: ts(r.updated),
  ...(secrets && { identity_key_sha256: r.identity_key_sha256.toString("base64") }),
});

interface ActionRow {
  action_id: string;
  node_name: string;
  action_name: string;
  task_id: string;
  signalling: boolean;
  status: BootActionRecord["status"];
  created: Micros;
  reported: Micros | null;
  detail_count: number;
  detail_bytes: bigint;
  identity_key_sha256: Buffer;
}

const actionRecord = (r: ActionRow, secrets: boolean): BootActionRecord => ({
  kind: "boot_action",
  action_id: r.action_id,
  node_name: r.node_name,
  action_name: r.action_name,
  task_id: r.task_id,
  signalling: r.signalling,
  status: r.status,
  created: ts(r.created),
  reported: opt(r.reported),
  detail_count: r.detail_count,
  detail_bytes: Number(r.detail_bytes),
  ...(secrets && { identity_key_sha256: r.identity_key_sha256.toString("base64") }),
});

// ---------------------------------------------------------------- export

const TASK_COLUMNS = [
  "task_id",
  "parent_task_id",
  "action",
  "design_ref",
  "status",
  "result_status",
  "result_message",
  "result_reason",
  "result_error_count",
  "result_successes",
  "result_failures",
  "result_links",
  "node_filter",
  "request_context",
  "created",
  "created_by",
  "updated",
  "terminated",
  "terminated_by",
  "terminate",
  "retry",
  "version",
  "claimed_by",
  "claimed_at",
  "claimed_term",
] as const;

/**
 * Reads every record, in the order an import needs them: tasks (each after
 * its parent: by depth, then created and id), result messages (by task, in
 * sequence order), build data (by id), boot action contexts (by node), boot
 * actions (by id). `emit` is awaited for each record (back-pressure). Runs in
 * the caller's transaction, which must be REPEATABLE READ for a snapshot.
 */
export async function exportRecords(tx: Sql, includeSecrets: boolean, emit: (r: DataRecord) => Promise<void>): Promise<void> {
  // The cursor's async iterator, not its callback form: postgres.js does not
  // wait for the callback's promise after the last batch, so the export
  // would go on (its trailer written) while the last records were still
  // being sent, out of order.
  const each = async <R>(query: ReturnType<Sql>, batch: number, f: (r: R) => DataRecord) => {
    for await (const rows of (query as unknown as { cursor(n: number): AsyncIterable<R[]> }).cursor(batch)) {
      for (const r of rows) await emit(f(r));
    }
  };
  await each<TaskRow>(
    tx`with recursive tree (task_id, depth) as (
         select task_id, 0 from tasks where parent_task_id is null
         union all
         select t.task_id, tree.depth + 1 from tasks t join tree on t.parent_task_id = tree.task_id
       )
       select ${tx(TASK_COLUMNS.map((c) => `t.${c}`) as unknown as string[])} from tasks t join tree using (task_id)
       order by tree.depth, t.created, t.task_id`,
    500,
    taskRecord,
  );
  await each<MessageRow>(
    tx`select task_id, seq, message, error, context_type, context, ts, extra from result_messages order by task_id, seq`,
    1000,
    messageRecord,
  );
  await each<BuildDataRow>(tx`select * from build_data order by build_data_id`, 2, buildDataRecord);
  await each<ContextRow>(tx`select node_name, task_id, updated, identity_key_sha256 from boot_action_contexts order by node_name`, 500, (r) =>
    contextRecord(r, includeSecrets),
  );
  await each<ActionRow>(
    tx`select action_id, node_name, action_name, task_id, signalling, status, created, reported, detail_count, detail_bytes, identity_key_sha256
       from boot_actions order by action_id`,
    500,
    (r) => actionRecord(r, includeSecrets),
  );
}

// ---------------------------------------------------------------- import

export interface ImportItem {
  line: number;
  record: DataRecord;
}

export interface ImportOutcome {
  counts: Map<Kind, { added: number; skipped: number; refused: number }>;
  refusals: { line: number; kind: Kind; reason: string }[];
}

/** JSON with object keys sorted, so that two records compare by value. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/** The top-level fields in which the stored record differs from the imported one. */
function differences(stored: object, imported: object, ignore: string[] = []): string[] {
  const s = stored as Record<string, unknown>;
  const i = imported as Record<string, unknown>;
  const keys = new Set([...Object.keys(s), ...Object.keys(i)]);
  return [...keys].filter((k) => !ignore.includes(k) && canonical(s[k]) !== canonical(i[k]));
}

const differsReason = (what: string, fields: string[]) =>
  `${what} is already stored with a different ${fields.slice(0, 5).join(", ")}${fields.length > 5 ? ", …" : ""}; nothing was written for this record`;

/**
 * Writes a batch of records in the caller's transaction: each one added,
 * skipped (stored and identical) or refused with its reason. Records are
 * checked before they are written, so no statement fails on one bad record
 * (a statement that fails anyway fails the whole batch, and the transaction
 * rolls back: nothing of the batch was written).
 */
export async function importRecords(tx: Queryable, items: ImportItem[]): Promise<ImportOutcome> {
  const out: ImportOutcome = { counts: new Map(), refusals: [] };
  const count = (kind: Kind, what: "added" | "skipped" | "refused", n = 1) => {
    let c = out.counts.get(kind);
    if (!c) {
      c = { added: 0, skipped: 0, refused: 0 };
      out.counts.set(kind, c);
    }
    c[what] += n;
  };
  const refuse = (it: ImportItem, reason: string) => {
    count(it.record.kind, "refused");
    out.refusals.push({ line: it.line, kind: it.record.kind, reason: `${describeRecord(it.record)}: ${reason}` });
  };
  // Kinds present, in first-appearance order, so the counts list them so.
  for (const it of items) if (!out.counts.has(it.record.kind)) out.counts.set(it.record.kind, { added: 0, skipped: 0, refused: 0 });
  const of = <K extends Kind>(kind: K) => items.filter((it): it is ImportItem & { record: Extract<DataRecord, { kind: K }> } => it.record.kind === kind);

  /** Tasks known to exist once this batch is written: stored before, or added by it. */
  const taskExists = new Map<string, boolean>();
  const lookUpTasks = async (ids: string[]) => {
    const unknown = [...new Set(ids)].filter((id) => !taskExists.has(id));
    if (unknown.length === 0) return;
    const rows = await tx<{ task_id: string }[]>`select task_id from tasks where task_id = any(${tx.array(unknown)}::uuid[])`;
    for (const id of unknown) taskExists.set(id, false);
    for (const r of rows) taskExists.set(r.task_id, true);
  };

  // Tasks.
  const tasks = of("task");
  if (tasks.length > 0) {
    const stored = new Map(
      (
        await tx<
          TaskRow[]
        >`select ${tx(TASK_COLUMNS as unknown as string[])} from tasks where task_id = any(${tx.array(tasks.map((t) => t.record.task_id))}::uuid[])`
      ).map((r) => [r.task_id, taskRecord(r)]),
    );
    await lookUpTasks(tasks.flatMap((t) => (t.record.parent_task_id ? [t.record.parent_task_id] : [])));
    const added = new Map<string, TaskRecord>();
    const rows: object[] = [];
    for (const it of tasks) {
      const r = it.record;
      const have = stored.get(r.task_id) ?? added.get(r.task_id);
      if (have) {
        const diff = differences(have, r);
        if (diff.length === 0) count("task", "skipped");
        else refuse(it, differsReason("the task", diff));
        continue;
      }
      if (r.parent_task_id !== null && !taskExists.get(r.parent_task_id)) {
        refuse(it, `its parent task ${r.parent_task_id} is not stored (a task's record must come after its parent's)`);
        continue;
      }
      added.set(r.task_id, r);
      taskExists.set(r.task_id, true);
      rows.push({
        task_id: r.task_id,
        parent_task_id: r.parent_task_id,
        action: r.action,
        design_ref: r.design_ref,
        status: r.status,
        result_status: r.result.status,
        result_message: r.result.message,
        result_reason: r.result.reason,
        result_error_count: r.result.error_count,
        result_successes: r.result.successes,
        result_failures: r.result.failures,
        result_links: r.result.links,
        node_filter: r.node_filter,
        request_context: r.request_context,
        created: r.created,
        created_by: r.created_by,
        updated: r.updated,
        terminated: r.terminated,
        terminated_by: r.terminated_by,
        terminate: r.terminate,
        retry: r.retry,
        version: r.version,
        claimed_by: r.claimed_by,
        claimed_at: r.claimed_at,
        claimed_term: r.claimed_term,
        next_message_seq: 1,
      });
      count("task", "added");
    }
    if (rows.length > 0) {
      const cols = [...TASK_COLUMNS, "next_message_seq"];
      await tx`insert into tasks (${tx(cols as unknown as string[])})
               select ${tx(cols as unknown as string[])} from jsonb_populate_recordset(null::tasks, ${tx.json(rows as never)})`;
    }
  }

  // Result messages.
  const messages = of("result_message");
  if (messages.length > 0) {
    await lookUpTasks(messages.map((m) => m.record.task_id));
    const taskIds = [...new Set(messages.map((m) => m.record.task_id))];
    const next = new Map(
      (
        await tx<{ task_id: string; next_message_seq: bigint }[]>`select task_id, next_message_seq from tasks where task_id = any(${tx.array(taskIds)}::uuid[])`
      ).map((r) => [r.task_id, Number(r.next_message_seq)]),
    );
    const storedRows = await tx<MessageRow[]>`
      select m.task_id, m.seq, m.message, m.error, m.context_type, m.context, m.ts, m.extra
      from result_messages m
      join jsonb_to_recordset(${tx.json(messages.map((m) => ({ task_id: m.record.task_id, seq: m.record.sequence })) as never)}) as k(task_id uuid, seq bigint)
        on m.task_id = k.task_id and m.seq = k.seq`;
    const key = (taskId: string, seq: number) => `${taskId}/${seq}`;
    const stored = new Map(storedRows.map((r) => [key(r.task_id, Number(r.seq)), messageRecord(r) as ResultMessageRecord]));
    const rows: object[] = [];
    for (const it of messages) {
      const r = it.record;
      const k = key(r.task_id, r.sequence);
      const have = stored.get(k);
      if (have) {
        const diff = differences(have, r);
        if (diff.length === 0) count("result_message", "skipped");
        else refuse(it, differsReason("the message", diff));
        continue;
      }
      if (!taskExists.get(r.task_id)) {
        refuse(it, `its task ${r.task_id} is not stored (a message's record must come after its task's)`);
        continue;
      }
      const expected = next.get(r.task_id) ?? 1;
      if (r.sequence !== expected) {
        refuse(it, `sequence ${r.sequence} would leave a gap: the task's next sequence is ${expected}`);
        continue;
      }
      next.set(r.task_id, expected + 1);
      stored.set(k, r);
      rows.push({
        task_id: r.task_id,
        seq: r.sequence,
        message: r.message,
        error: r.error,
        context_type: r.context_type,
        context: r.context,
        ts: r.ts,
        extra: r.extra,
      });
      count("result_message", "added");
    }
    if (rows.length > 0) {
      const json = tx.json(rows as never);
      await tx`insert into result_messages (task_id, seq, message, error, context_type, context, ts, extra)
               select task_id, seq, message, error, context_type, context, ts, extra
               from jsonb_populate_recordset(null::result_messages, ${json})`;
      await tx`update tasks t set next_message_seq = greatest(t.next_message_seq, n.last + 1)
               from (select task_id, max(seq) as last from jsonb_populate_recordset(null::result_messages, ${json}) group by task_id) n
               where t.task_id = n.task_id`;
    }
  }

  // Build data: identified by content (no natural key); the exported id is kept when it is free.
  let explicitIds = false;
  for (const it of of("build_data")) {
    const r = it.record;
    const data = Buffer.from(r.data_element, "base64");
    const [same] = await tx`
      select build_data_id from build_data
      where task_id = ${r.task_id} and node_name = ${r.node_name} and generator = ${r.generator}
        and collected_at = ${r.collected_at}::timestamptz and data_format = ${r.data_format} and data_element = ${data}
      limit 1`;
    if (same) {
      count("build_data", "skipped");
      continue;
    }
    const idFree = r.build_data_id !== undefined && (await tx`select 1 from build_data where build_data_id = ${r.build_data_id}`).length === 0;
    if (idFree) {
      explicitIds = true;
      await tx`insert into build_data (build_data_id, node_name, task_id, collected_at, generator, data_format, data_element)
               overriding system value
               values (${r.build_data_id!}, ${r.node_name}, ${r.task_id}, ${r.collected_at}::timestamptz, ${r.generator}, ${r.data_format}, ${data})`;
    } else {
      await tx`insert into build_data (node_name, task_id, collected_at, generator, data_format, data_element)
               values (${r.node_name}, ${r.task_id}, ${r.collected_at}::timestamptz, ${r.generator}, ${r.data_format}, ${data})`;
    }
    count("build_data", "added");
  }
  if (explicitIds) {
    // New records must not be given the ids just taken.
    await tx`select setval(s, greatest((select max(build_data_id) from build_data), nextval(s)))
             from (select pg_get_serial_sequence('build_data', 'build_data_id') as s) q`;
  }

  // Boot action contexts: one per node.
  const contexts = of("boot_action_context");
  if (contexts.length > 0) await lookUpTasks(contexts.map((c) => c.record.task_id));
  for (const it of contexts) {
    const r = it.record;
    const [have] = await tx<ContextRow[]>`select node_name, task_id, updated, identity_key_sha256 from boot_action_contexts where node_name = ${r.node_name}`;
    if (have) {
      const diff = differences(contextRecord(have, r.identity_key_sha256 !== undefined), r);
      if (diff.length === 0) count("boot_action_context", "skipped");
      else refuse(it, differsReason(`node ${r.node_name}'s context`, diff));
      continue;
    }
    if (!taskExists.get(r.task_id)) {
      refuse(it, `its task ${r.task_id} is not stored`);
      continue;
    }
    await tx`insert into boot_action_contexts (node_name, task_id, identity_key_sha256, updated)
             values (${r.node_name}, ${r.task_id}, ${keyHash(r.identity_key_sha256)}, ${r.updated}::timestamptz)`;
    count("boot_action_context", "added");
  }

  // Boot actions.
  const actions = of("boot_action");
  if (actions.length > 0) await lookUpTasks(actions.map((a) => a.record.task_id));
  for (const it of actions) {
    const r = it.record;
    const [have] = await tx<ActionRow[]>`
      select action_id, node_name, action_name, task_id, signalling, status, created, reported, detail_count, detail_bytes, identity_key_sha256
      from boot_actions where action_id = ${r.action_id}`;
    if (have) {
      const diff = differences(actionRecord(have, r.identity_key_sha256 !== undefined), r);
      if (diff.length === 0) count("boot_action", "skipped");
      else refuse(it, differsReason("the boot action", diff));
      continue;
    }
    if (!taskExists.get(r.task_id)) {
      refuse(it, `its task ${r.task_id} is not stored`);
      continue;
    }
    const [clash] = await tx<{ action_id: string }[]>`
      select action_id from boot_actions where task_id = ${r.task_id} and node_name = ${r.node_name} and action_name = ${r.action_name}`;
    if (clash) {
      refuse(it, `node ${r.node_name} already has an action named ${JSON.stringify(r.action_name)} in task ${r.task_id}: ${clash.action_id}`);
      continue;
    }
    await tx`insert into boot_actions (action_id, node_name, action_name, task_id, identity_key_sha256, signalling, status, created, reported, detail_count, detail_bytes)
             values (${r.action_id}, ${r.node_name}, ${r.action_name}, ${r.task_id}, ${keyHash(r.identity_key_sha256)}, ${r.signalling}, ${r.status},
                     ${r.created}::timestamptz, ${r.reported}::timestamptz, ${r.detail_count}, ${r.detail_bytes})`;
    count("boot_action", "added");
  }
  return out;
}

/** The stored hash: the record's, or (a file without secrets) 32 random bytes no key hashes to. */
const keyHash = (b64: string | undefined): Buffer => (b64 === undefined ? randomBytes(32) : Buffer.from(b64, "base64"));
