// One WatchTasks stream's events: optionally the matching tasks as they are
// (initial), then the new state of every matching task that changes.
//
// Contract:
// - subscribes before reading the initial set, so no change falls between;
// - drops a snapshot older than one already sent (versions per task), and
//   one that shows nothing a WatchTasks client sees (pure appends move only
//   the version, the update time and the error count);
// - a task that leaves the filter is sent once more (its new state), then
//   forgotten;
// - falling behind ends the call with RESOURCE_EXHAUSTED WATCH_BUFFER_FULL.
import type { Sql } from "../db/connect.js";
import { FINISHED_STATUSES, type Task, type TaskStatus } from "../core/domain.js";
import type { DomainError } from "../core/errors.js";
import { tasksList } from "../store/tasks.js";
import type { TaskChanges } from "./changes.js";
import { endWhenBehind } from "./endings.js";
import { READ_BATCH } from "./feeds.js";
import { SHARED_QUERY_TIMEOUT_MS } from "./reads.js";
import { SentVersions } from "./sent.js";

export interface TasksFilter {
  /** Empty: any. */
  statuses: TaskStatus[];
  actions: string[];
  parentTaskId: string | null;
}

export interface TasksStreamParams {
  filter: TasksFilter;
  sendInitial: boolean;
  signal: AbortSignal;
  abort(err: DomainError): void;
}

export interface TasksStreamEvent {
  task: Task;
  initial: boolean;
}

const changeKeys = new WeakMap<Task, string>();

/** Every field but the version, the update time and the error count; computed once per task object. */
function changeKey(task: Task): string {
  let key = changeKeys.get(task);
  if (key === undefined) {
    const { version: _version, updated: _updated, result, ...rest } = task;
    const { errorCount: _errorCount, ...resultRest } = result;
    key = JSON.stringify({ ...rest, result: resultRest }, (_k, value) => (typeof value === "bigint" ? value.toString() : value));
    changeKeys.set(task, key);
  }
  return key;
}

const finished = (task: Task) => FINISHED_STATUSES.includes(task.status);

export async function* tasksStream(changes: TaskChanges, sql: Sql, p: TasksStreamParams): AsyncGenerator<TasksStreamEvent> {
  const { filter, signal } = p;
  const statuses = new Set(filter.statuses);
  const actions = new Set(filter.actions);
  const matches = (task: Task) =>
    (statuses.size === 0 || statuses.has(task.status)) &&
    (actions.size === 0 || actions.has(task.action)) &&
    (filter.parentTaskId === null || task.parentTaskId === filter.parentTaskId);

  const subscription = changes.subscribe();
  endWhenBehind(subscription.events, p.abort);
  // No read older than twice the shared query bound can still deliver.
  const sent = new SentVersions(2 * SHARED_QUERY_TIMEOUT_MS);
  try {
    if (p.sendInitial) {
      let after: { created: bigint; taskId: string } | null = null;
      for (;;) {
        const page = await tasksList(sql, { ...filter, createdAfter: null, createdBefore: null, after, limit: READ_BATCH, signal });
        for (const task of page) {
          sent.record(task.taskId, task.version, changeKey(task), finished(task));
          yield { task, initial: true };
        }
        if (page.length < READ_BATCH) break;
        const last = page[page.length - 1]!;
        after = { created: last.created, taskId: last.taskId };
      }
    }
    for (;;) {
      for (const task of await subscription.events.takeAll(signal)) {
        const previous = sent.get(task.taskId);
        if (previous !== undefined ? task.version <= previous.version : !matches(task)) continue;
        const key = changeKey(task);
        if (matches(task)) {
          sent.record(task.taskId, task.version, key, finished(task));
          if (previous?.key === key) continue; // a pure append
        } else sent.forget(task.taskId);
        yield { task, initial: false };
      }
      if (subscription.events.size === 0) sent.evictFinished();
    }
  } finally {
    subscription.close();
  }
}
