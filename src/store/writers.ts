// The single-row writes of unary calls, coalesced or not (store/coalesce.ts):
// CreateTask's insert and AppendResultMessages' append. With coalescing off
// each call is its own statement, as tasksInsert and messagesAppend are.
import type { Sql } from "../db/connect.js";
import type { Task } from "../core/domain.js";
import { Coalescer, type CoalescerOptions } from "./coalesce.js";
import { messagesAppend, messagesAppendBatch, type MessagesAppendParams, type MessagesAppendResult } from "./messages.js";
import { holdConnection, releaseConnection, type Permit } from "./sql.js";
import { tasksInsert, tasksInsertBatch, type TasksInsertParams } from "./tasks.js";

export interface Writers {
  insertTask(p: TasksInsertParams): Promise<Task>;
  appendMessages(p: MessagesAppendParams & { signal?: AbortSignal }): Promise<MessagesAppendResult>;
}

/** `coalescing` null: every call writes alone. */
export function createWriters(sql: Sql, coalescing: CoalescerOptions | null): Writers {
  if (coalescing === null || coalescing.maxBatch <= 1) {
    return { insertTask: (p) => tasksInsert(sql, p), appendMessages: (p) => messagesAppend(sql, p) };
  }
  const connections = { acquire: () => holdConnection(sql), release: (held: Permit) => releaseConnection(sql, held) };
  const inserts = new Coalescer<TasksInsertParams, Task, Permit>(
    coalescing,
    connections,
    (items, held) => tasksInsertBatch(sql, items, held),
    (item, held) => tasksInsert(sql, { ...item, signal: undefined, held }),
    (item) => item.taskId,
  );
  // One call per task in a batch: one statement updates a task's row once.
  const appends = new Coalescer<MessagesAppendParams, MessagesAppendResult, Permit>(
    coalescing,
    connections,
    (items, held) => messagesAppendBatch(sql, items, held),
    (item, held) => messagesAppend(sql, { ...item, held }),
    (item) => item.taskId,
  );
  return {
    insertTask: (p) => inserts.submit(p, p.signal),
    appendMessages: ({ signal, ...p }) => appends.submit(p, signal),
  };
}
