// GetTask's read of a task row, coalesced (store/coalesce.ts): concurrent
// reads are answered by one `task_id = any(...)` select, so a burst of
// GetTasks costs the database one statement and the server one round trip
// per batch instead of per call. A read in a batch sees the database as of
// its batch's statement, which starts after the call arrived.
import type { Sql } from "../db/connect.js";
import type { Task } from "../core/domain.js";
import { NotFoundError } from "../core/errors.js";
import { Coalescer, type CoalescerOptions } from "./coalesce.js";
import { holdConnection, releaseConnection, type Permit } from "./sql.js";
import { tasksGetById, tasksGetByIds } from "./tasks.js";

export interface Readers {
  getTask(p: { taskId: string; signal?: AbortSignal }): Promise<Task>;
}

/** `coalescing` null: every read is its own statement. */
export function createReaders(sql: Sql, coalescing: CoalescerOptions | null): Readers {
  if (coalescing === null || coalescing.maxBatch <= 1) return { getTask: (p) => tasksGetById(sql, p) };
  const reads = new Coalescer<string, Task, Permit>(
    coalescing,
    { acquire: () => holdConnection(sql), release: (held) => releaseConnection(sql, held) },
    async (taskIds, held) => {
      // One id: the single-row statement. PostgreSQL plans the array form (= any($1)) afresh on every
      // execution (a custom plan each time): ~200 µs of its CPU that a lone GetTask need not pay (BENCHMARKS.md, issue 27).
      if (taskIds.length === 1) return [await tasksGetById(sql, { taskId: taskIds[0]!, held }).catch(notFoundAsOutcome)];
      const byId = new Map((await tasksGetByIds(sql, { taskIds: [...new Set(taskIds)], held, statement: "tasks.get" })).map((t) => [t.taskId, t]));
      return taskIds.map((id) => byId.get(id) ?? new NotFoundError("Task", id));
    },
    (taskId, held) => tasksGetById(sql, { taskId, held }),
  );
  return { getTask: ({ taskId, signal }) => reads.submit(taskId, signal) };
}

/** A NotFoundError is the caller's outcome, not the batch's failure. */
const notFoundAsOutcome = (err: unknown): Error => {
  if (err instanceof NotFoundError) return err;
  throw err;
};
