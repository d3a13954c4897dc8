// All SQL of the result_messages table.
//
// Sequences are allocated by bumping tasks.next_message_seq in the same
// transaction that inserts the messages. The task row stays locked until
// commit, so per task the appends commit one after another in sequence order:
// a reader that has seen every sequence up to N and then reads "seq > N" can
// never miss a row that commits later. The statement also sends the
// notification watchers wait for (delivered at commit).
import type { Queryable, Sql } from "../db/connect.js";
import { formatMicros, type Micros } from "../db/time.js";
import type { JsonObject, NewResultMessage, ResultMessage } from "../domain.js";
import { NotFoundError, SequenceMismatchError } from "../errors.js";
import { run } from "./sql.js";
import { TASK_CHANNEL } from "./notify.js";

interface MessageRow {
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
  },
): Promise<MessagesAppendResult> {
  const n = p.messages.length;
  const errors = p.messages.filter((m) => m.error).length;
  const ms = p.messages;
  const first = (p.firstSequence ?? 0n).toString();
  // One statement, so one round trip and its own transaction: the UPDATE
  // takes the task row (held until commit) and allocates the sequences, the
  // INSERT writes the messages with them, pg_notify fires at commit.
  const [row] = await run(sql, p.signal, "messages.append",
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
  );
  if (!row) {
    const [task] = await run(sql, p.signal, "messages.next_sequence", sql<{ next: bigint }[]>`select next_message_seq as next from tasks where task_id = ${p.taskId}`);
    if (!task) throw new NotFoundError("Task", p.taskId);
    throw new SequenceMismatchError(p.taskId, BigInt(first), task.next);
  }
  return {
    sequences: Array.from({ length: n }, (_, i) => row.first + BigInt(i)),
    taskVersion: row.version,
    errorCount: row.result_error_count,
  };
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
  const rows = await run(sql, p.signal, "messages.list",
    sql<MessageRow[]>`
      select * from result_messages
      where task_id = ${p.taskId} and seq > ${p.afterSequence.toString()}::bigint
        ${p.errorsOnly ? sql`and error` : sql``}
      order by seq
      limit ${p.limit}`,
  );
  return rows.map(toMessage);
}

/** The highest committed sequence of a task (0 when it has none); null when the task does not exist. */
export async function messagesHighestSequence(sql: Queryable, p: { taskId: string; signal?: AbortSignal }): Promise<bigint | null> {
  const [row] = await run(sql, p.signal, "messages.highest_sequence", sql<{ n: bigint }[]>`select next_message_seq - 1 as n from tasks where task_id = ${p.taskId}`);
  return row ? row.n : null;
}
