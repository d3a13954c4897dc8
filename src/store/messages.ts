// All SQL of the result_messages table.
//
// Sequences are allocated by bumping tasks.next_message_seq in the same
// transaction that inserts the messages. The task row stays locked until
// commit, so per task the appends commit one after another in sequence order:
// a reader that has seen every sequence up to N and then reads "seq > N" can
// never miss a row that commits later. The statement also sends the
// notification watchers wait for (delivered at commit).
import type { Queryable, Sql } from "../db/connect.js";
import { formatMicros, type Micros } from "../core/time.js";
import type { JsonObject, NewResultMessage, ResultMessage } from "../core/domain.js";
import { NotFoundError, SequenceMismatchError } from "../core/errors.js";
import { run, type Permit } from "./sql.js";
import { TASK_CHANNEL } from "./notify.js";

/** A result_messages row as postgres.js returns it (the export reads these too). */
export interface MessageRow {
  task_id: string;
  seq: bigint;
  message: string;
  error: boolean;
  context_type: string;
  context: string;
  ts: Micros;
  extra: JsonObject | null;
}

function toMessage(r: MessageRow): ResultMessage {
  return {
    taskId: r.task_id,
    sequence: r.seq,
    message: r.message,
    error: r.error,
    contextType: r.context_type,
    context: r.context,
    ts: r.ts,
    extra: r.extra,
  };
}

export interface MessagesAppendResult {
  sequences: bigint[];
  taskVersion: bigint;
  errorCount: number;
}

export async function messagesAppend(
  sql: Sql,
  p: {
    taskId: string;
    messages: NewResultMessage[];
    /** When not 0n: append only if the first message gets exactly this sequence. */
    firstSequence?: bigint;
    signal?: AbortSignal;
    /** A connection of `sql` the caller holds (coalesced writes). */
    held?: Permit;
  },
): Promise<MessagesAppendResult> {
  const n = p.messages.length;
  const errors = p.messages.filter((m) => m.error).length;
  const ms = p.messages;
  const first = (p.firstSequence ?? 0n).toString();
  // One statement, so one round trip and its own transaction: the UPDATE
  // takes the task row (held until commit) and allocates the sequences, the
  // INSERT writes the messages with them, pg_notify fires at commit.
  const [row] = await run(
    sql,
    p.signal,
    "messages.append",
    sql<{ first: bigint; version: bigint; result_error_count: number }[]>`
      with task as (
        update tasks
        set next_message_seq = next_message_seq + ${n},
            result_error_count = result_error_count + ${errors},
            version = version + 1, updated = now()
        where task_id = ${p.taskId} and (${first}::bigint = 0 or next_message_seq = ${first}::bigint)
        returning next_message_seq - ${n} as first, version, result_error_count
      ), inserted as (
        insert into result_messages (task_id, seq, message, error, context_type, context, ts, extra)
        select ${p.taskId}, task.first + m.ord - 1, m.message, m.error, m.context_type, m.context,
               coalesce(m.ts::timestamptz, now()), m.extra::jsonb
        from task,
             unnest(${sql.array(ms.map((m) => m.message))}::text[],
                    ${sql.array(ms.map((m) => m.error))}::boolean[],
                    ${sql.array(ms.map((m) => m.contextType))}::text[],
                    ${sql.array(ms.map((m) => m.context))}::text[],
                    ${sql.array(ms.map((m) => (m.ts === null ? null : formatMicros(m.ts))) as never)}::text[],
                    ${sql.array(ms.map((m) => (m.extra === null ? null : JSON.stringify(m.extra))) as never)}::text[])
               with ordinality as m(message, error, context_type, context, ts, extra, ord)
      )
      select first, version, result_error_count, pg_notify(${TASK_CHANNEL}, ${p.taskId}) from task`,
    p.held,
  );
  if (!row) {
    const [task] = await run(
      sql,
      p.signal,
      "messages.next_sequence",
      sql<{ next: bigint }[]>`select next_message_seq as next from tasks where task_id = ${p.taskId}`,
      p.held,
    );
    if (!task) throw new NotFoundError("Task", p.taskId);
    throw new SequenceMismatchError(p.taskId, BigInt(first), task.next);
  }
  return {
    sequences: Array.from({ length: n }, (_, i) => row.first + BigInt(i)),
    taskVersion: row.version,
    errorCount: row.result_error_count,
  };
}

export interface MessagesAppendParams {
  taskId: string;
  messages: NewResultMessage[];
  /** When not 0n: append only if the first message gets exactly this sequence. */
  firstSequence?: bigint;
}

/**
 * The appends of concurrent calls, each to a different task, in one
 * statement (one commit), each with the outcome it would have had alone:
 * its sequences, or NOT_FOUND / SEQUENCE_MISMATCH for that call only. Per
 * task the sequences stay gapless, allocated under the task's row lock. The
 * statement never waits for a lock: a call whose task row another
 * transaction holds (or whose first_sequence does not match) is appended on
 * its own, its promise in the result.
 */
export async function messagesAppendBatch(
  sql: Sql,
  calls: MessagesAppendParams[],
  held: Permit,
): Promise<(MessagesAppendResult | Error | Promise<MessagesAppendResult>)[]> {
  const callColumn = <T>(f: (c: MessagesAppendParams) => T) => sql.array(calls.map(f) as never);
  // The messages as one JSON parameter: postgres.js escapes every element of
  // a text[] parameter in JavaScript (18 % of the server's CPU for batches of
  // 100-message appends); JSON.stringify is native, and json_to_recordset
  // parses the whole batch in one pass. (A text parameter: typed json,
  // postgres.js would JSON-encode the string again.)
  const messagesJson = JSON.stringify(
    calls.flatMap((c, call) =>
      c.messages.map((m, i) => ({
        c: call + 1,
        p: i + 1,
        m: m.message,
        e: m.error,
        t: m.contextType,
        x: m.context,
        s: m.ts === null ? null : formatMicros(m.ts),
        j: m.extra,
      })),
    ),
  );
  // Named as the single append: the statement that appends, however many calls it serves.
  const rows = await run(
    sql,
    undefined,
    "messages.append",
    sql<{ call: number; first: bigint; version: bigint; result_error_count: number }[]>`
      with input as (
        select * from unnest(${callColumn((c) => c.taskId)}::uuid[], ${callColumn((c) => c.messages.length)}::int[],
                             ${callColumn((c) => c.messages.filter((m) => m.error).length)}::int[],
                             ${callColumn((c) => (c.firstSequence ?? 0n).toString())}::bigint[])
          with ordinality as i(task_id, n, errors, first, call)
      ), locked as (
        -- Row locks in task_id order, so two batches can never deadlock on each other; a row
        -- another transaction holds is skipped (its call is appended on its own, below).
        select task_id from tasks where task_id in (select task_id from input) order by task_id for no key update skip locked
      ), task as (
        update tasks t
        set next_message_seq = t.next_message_seq + i.n,
            result_error_count = t.result_error_count + i.errors,
            version = t.version + 1, updated = now()
        from input i join locked l using (task_id)
        where t.task_id = i.task_id and (i.first = 0 or t.next_message_seq = i.first)
        returning i.call, t.task_id, t.next_message_seq - i.n as first, t.version, t.result_error_count
      ), inserted as (
        insert into result_messages (task_id, seq, message, error, context_type, context, ts, extra)
        select task.task_id, task.first + m.p - 1, m.m, m.e, m.t, m.x, coalesce(m.s, now()), m.j
        from json_to_recordset(${messagesJson}::text::json)
               as m(c int, p int, m text, e boolean, t text, x text, s timestamptz, j jsonb)
        join task on task.call = m.c
      )
      select call::int, first, version, result_error_count, pg_notify(${TASK_CHANNEL}, task_id::text) from task`,
    held,
  );
  const byCall = new Map(rows.map((r) => [r.call, r]));
  const refused = calls.filter((_, i) => !byCall.has(i + 1)).map((c) => c.taskId);
  const exists = new Set(
    refused.length === 0
      ? []
      : (
          await run(
            sql,
            undefined,
            "messages.refused_tasks",
            sql<{ task_id: string }[]>`
          select task_id from tasks where task_id = any(${sql.array(refused)}::uuid[])`,
            held,
          )
        ).map((r) => r.task_id),
  );
  return calls.map((c, i): MessagesAppendResult | Error | Promise<MessagesAppendResult> => {
    const row = byCall.get(i + 1);
    if (row) {
      return {
        sequences: Array.from({ length: c.messages.length }, (_, k) => row.first + BigInt(k)),
        taskVersion: row.version,
        errorCount: row.result_error_count,
      };
    }
    if (!exists.has(c.taskId)) return new NotFoundError("Task", c.taskId);
    // Skipped because another transaction held the task's row, or its first_sequence is not
    // the next one: appended alone (on a connection of its own), which waits for the lock and
    // answers SEQUENCE_MISMATCH as an append alone would.
    return messagesAppend(sql, c);
  });
}

export interface MessagesListParams {
  taskId: string;
  afterSequence: bigint;
  errorsOnly: boolean;
  limit: number;
  signal?: AbortSignal;
}

/** Messages of one task with sequence > afterSequence, in order. */
export async function messagesList(sql: Queryable, p: MessagesListParams): Promise<ResultMessage[]> {
  const rows = await run(
    sql,
    p.signal,
    "messages.list",
    sql<MessageRow[]>`
      select * from result_messages
      where task_id = ${p.taskId} and seq > ${p.afterSequence.toString()}::bigint
        ${p.errorsOnly ? sql`and error` : sql``}
      order by seq
      limit ${p.limit}`,
  );
  return rows.map(toMessage);
}

/**
 * What one message is estimated to cost on the wire, in SQL: its text
 * columns, its extra as JSON text, plus 96 bytes for the rest (task id,
 * sequence, timestamp, field tags). octet_length of a text column reads its
 * length from the header; extra is converted to text, so only rows a query
 * walks to are (once) detoasted.
 */
const messageBytes = (sql: Queryable, row: "r" | "m") =>
  row === "r"
    ? sql`(octet_length(r.message) + octet_length(r.context_type) + octet_length(r.context) + coalesce(octet_length(r.extra::text), 0) + 96)::bigint`
    : sql`(octet_length(m.message) + octet_length(m.context_type) + octet_length(m.context) + coalesce(octet_length(m.extra::text), 0) + 96)::bigint`;

export interface MessagesPageParams extends MessagesListParams {
  /**
   * Stop adding messages once their estimated size would pass this many
   * bytes; the first message is returned whatever its size.
   */
  maxBytes: number;
}

export interface MessagesPage {
  messages: ResultMessage[];
  /** Estimated bytes of each message (as `messages`). */
  bytes: number[];
  /** More messages follow (the page was cut by `limit` or `maxBytes`). */
  more: boolean;
}

/**
 * The walk of a page: message by message in sequence order (one index probe
 * each), stopping at the first message that does not fit `limit` messages
 * and `maxBytes` estimated bytes (the first always fits). That message is in
 * the walk's result, marked `fits = false`, so the caller knows more follow;
 * its columns are not shipped. The database never reads past it.
 */
function pageWalk(sql: Queryable, p: MessagesPageParams) {
  const errors = p.errorsOnly ? sql`and r.error` : sql``;
  const limit = p.limit;
  const maxBytes = Math.max(0, Math.floor(p.maxBytes));
  return sql`
    with recursive walk as (
      (select r.*, s.bytes, s.bytes as total, 1 as n, true as fits
       from result_messages r, lateral (select ${messageBytes(sql, "r")} as bytes) s
       where r.task_id = ${p.taskId} and r.seq > ${p.afterSequence.toString()}::bigint ${errors}
       order by r.seq limit 1)
      union all
      (select m.*, s.bytes, w.total + s.bytes, w.n + 1, (w.n + 1 <= ${limit}::int and w.total + s.bytes <= ${maxBytes}::bigint)
       from walk w,
            lateral (select * from result_messages r where r.task_id = ${p.taskId} and r.seq > w.seq ${errors} order by r.seq limit 1) m,
            lateral (select ${messageBytes(sql, "m")} as bytes) s
       where w.fits)
    )`;
}

/**
 * Messages of one task with sequence > afterSequence, in order, at most
 * `limit` of them and no more than `maxBytes` estimated bytes (at least one).
 * Only the messages returned leave the database.
 */
export async function messagesPage(sql: Queryable, p: MessagesPageParams): Promise<MessagesPage> {
  const rows = await run(
    sql,
    p.signal,
    "messages.page",
    sql<(MessageRow & { bytes: bigint; fits: boolean })[]>`
      ${pageWalk(sql, p)}
      select task_id, seq, error, ts, bytes, fits,
             case when fits then message end as message, case when fits then context_type end as context_type,
             case when fits then context end as context, case when fits then extra end as extra
      from walk order by seq`,
  );
  const fitting = rows.filter((r) => r.fits);
  return { messages: fitting.map(toMessage), bytes: fitting.map((r) => Number(r.bytes)), more: fitting.length < rows.length };
}

/**
 * How many messages of a task fit `limit` messages and `maxBytes` estimated
 * bytes, and whether all of them do; nothing but the counts leaves the
 * database. `bytes` counts the messages walked, the first that did not fit
 * included: when `fitsAll` is false it is more than maxBytes (or the count
 * more than limit), a lower bound of the whole.
 */
export async function messagesMeasure(sql: Queryable, p: MessagesPageParams): Promise<{ fitsAll: boolean; count: number; bytes: number }> {
  const [row] = await run(
    sql,
    p.signal,
    "messages.measure",
    sql<{ walked: number; fitting: number; bytes: bigint | null }[]>`
      ${pageWalk(sql, p)}
      select count(*)::int as walked, (count(*) filter (where fits))::int as fitting, max(total) as bytes from walk`,
  );
  return { fitsAll: row!.walked === row!.fitting, count: row!.fitting, bytes: Number(row!.bytes ?? 0) };
}

/** The highest committed sequence of a task (0 when it has none); null when the task does not exist. */
export async function messagesHighestSequence(sql: Queryable, p: { taskId: string; signal?: AbortSignal }): Promise<bigint | null> {
  const [row] = await run(
    sql,
    p.signal,
    "messages.highest_sequence",
    sql<{ n: bigint }[]>`select next_message_seq - 1 as n from tasks where task_id = ${p.taskId}`,
  );
  return row ? row.n : null;
}
