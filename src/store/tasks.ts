// All SQL of the tasks table.
import type { Fragment } from "postgres";
import type { Queryable, Sql } from "../db/connect.js";
import { formatMicros, type Micros } from "../core/time.js";
import {
  FINISHED_STATUSES,
  type ActionResult,
  type Fence,
  type JsonObject,
  type Link,
  type NodeFilter,
  type Task,
  type TaskChanges,
  type TaskStatus,
} from "../core/domain.js";
import { AlreadyExistsError, FailedPreconditionError, NotFoundError, VersionMismatchError } from "../core/errors.js";
import { pgCode, run, SQLSTATE, type Permit } from "./sql.js";
import type { Db, TransactionScope, Transactor } from "./transactions.js";
import { TASK_CHANNEL } from "./notify.js";
import { leasesCheckFence } from "./leases.js";

/** A row of `tasks` as selectTasks reads it (the export reads the same columns without subtask_ids). */
export interface TaskRow {
  task_id: string;
  parent_task_id: string | null;
  subtask_ids: string[];
  action: string;
  design_ref: string;
  status: TaskStatus;
  result_status: ActionResult;
  result_message: string;
  result_reason: string;
  result_error_count: number;
  result_successes: string[];
  result_failures: string[];
  result_links: Link[];
  node_filter: NodeFilter | null;
  request_context: JsonObject | null;
  created: Micros;
  created_by: string;
  updated: Micros;
  terminated: Micros | null;
  terminated_by: string | null;
  terminate: boolean;
  retry: number;
  version: bigint;
  claimed_by: string | null;
  claimed_at: Micros | null;
  claimed_term: bigint;
}

function toTask(r: TaskRow): Task {
  return {
    taskId: r.task_id,
    parentTaskId: r.parent_task_id,
    subtaskIds: r.subtask_ids,
    action: r.action,
    designRef: r.design_ref,
    status: r.status,
    result: {
      status: r.result_status,
      message: r.result_message,
      reason: r.result_reason,
      errorCount: r.result_error_count,
      successes: r.result_successes,
      failures: r.result_failures,
      links: r.result_links,
    },
    nodeFilter: r.node_filter,
    requestContext: r.request_context,
    created: r.created,
    updated: r.updated,
    terminated: r.terminated,
    createdBy: r.created_by,
    terminatedBy: r.terminated_by,
    terminate: r.terminate,
    retry: r.retry,
    version: r.version,
    claimedBy: r.claimed_by,
    claimedAt: r.claimed_at,
    claimedTerm: r.claimed_term,
  };
}

/** The full task row with its subtask ids, for `t` rows matched by `where`. */
function selectTasks(sql: Queryable, where: Fragment): Fragment {
  return sql`
    select t.*,
           array(select c.task_id from tasks c
                 where c.parent_task_id = t.task_id
                 order by c.created, c.task_id) as subtask_ids
    from tasks t
    ${where}`;
}

export interface TasksInsertParams {
  taskId: string;
  parentTaskId: string | null;
  action: string;
  designRef: string;
  status: "requested" | "queued";
  nodeFilter: NodeFilter | null;
  requestContext: JsonObject | null;
  createdBy: string;
  signal?: AbortSignal;
  /** A connection of `sql` the caller holds (coalesced writes). */
  held?: Permit;
}

/**
 * Inserts a task in one statement (one round trip, its own transaction). A
 * subtask first takes its parent's row (and bumps the parent's version, since
 * its subtask list changes): no parent row, no insert. Watchers of the task
 * and of its parent are notified at commit.
 */
export async function tasksInsert(sql: Sql, p: TasksInsertParams): Promise<Task> {
  const values = sql`
    ${p.taskId}::uuid, ${p.parentTaskId}::uuid, ${p.action}, ${p.designRef}, ${p.status},
    ${p.nodeFilter === null ? null : sql.json(p.nodeFilter as never)}::jsonb,
    ${p.requestContext === null ? null : sql.json(p.requestContext as never)}::jsonb,
    ${p.createdBy}`;
  const insert =
    p.parentTaskId === null
      ? sql`insert into tasks (task_id, parent_task_id, action, design_ref, status, node_filter, request_context, created_by)
            values (${values}) returning *`
      : sql`insert into tasks (task_id, parent_task_id, action, design_ref, status, node_filter, request_context, created_by)
            select ${values} from parent returning *`;
  const parent =
    p.parentTaskId === null
      ? sql``
      : sql`parent as (update tasks set version = version + 1, updated = now()
                       where task_id = ${p.parentTaskId} and status not in ('complete', 'terminated')
                       returning task_id),`;
  try {
    const [row] = await run(
      sql,
      p.signal,
      "tasks.insert",
      sql<TaskRow[]>`
        with ${parent} inserted as (${insert})
        select i.*, '{}'::uuid[] as subtask_ids,
               pg_notify(${TASK_CHANNEL}, i.task_id::text),
               case when i.parent_task_id is not null then pg_notify(${TASK_CHANNEL}, i.parent_task_id::text) end
        from inserted i`,
      p.held,
    );
    // No row: the parent is missing or finished (under its row lock, so a
    // PurgeTasks that saw the parent finished can never miss a new subtask of it).
    if (!row) {
      // Under the parent's row lock the statement found it missing or finished. (Read again
      // here, after that lock: a parent unfinished now was finished then, and never reopens.)
      throw (
        (await parentRefusal(sql, p.parentTaskId!, p.signal, p.held)) ??
        new FailedPreconditionError("TASK_FINISHED", `parent task ${p.parentTaskId} is finished; a finished task takes no new subtasks`, {
          task_id: p.parentTaskId!,
        })
      );
    }
    return toTask(row);
  } catch (err) {
    if (pgCode(err) === SQLSTATE.uniqueViolation) throw new AlreadyExistsError("Task", p.taskId);
    throw err;
  }
}

/** Why a subtask of `parentTaskId` cannot be inserted: its parent is missing or finished; undefined when it is neither. */
async function parentRefusal(sql: Queryable, parentTaskId: string, signal: AbortSignal | undefined, held: Permit | undefined): Promise<Error | undefined> {
  const [parent] = await run(sql, signal, "tasks.parent_status", sql<{ status: TaskStatus }[]>`select status from tasks where task_id = ${parentTaskId}`, held);
  if (!parent) return new NotFoundError("Task", parentTaskId, `parent task ${parentTaskId} does not exist`);
  if (!FINISHED_STATUSES.includes(parent.status)) return undefined;
  return new FailedPreconditionError("TASK_FINISHED", `parent task ${parentTaskId} is ${parent.status.toUpperCase()}; a finished task takes no new subtasks`, {
    task_id: parentTaskId,
    status: parent.status.toUpperCase(),
  });
}

/**
 * Inserts the tasks of concurrent CreateTask calls in one statement (one
 * commit), with the outcome of each as tasksInsert would have had it alone:
 * its task, or its ALREADY_EXISTS, NOT_FOUND or TASK_FINISHED error. Every
 * task_id must be distinct (the coalescer keeps repeats for a later batch).
 * Tasks of one batch share their created time (the statement's now()).
 */
export async function tasksInsertBatch(sql: Sql, items: TasksInsertParams[], held: Permit): Promise<(Task | Error | Promise<Task>)[]> {
  const column = <T>(f: (p: TasksInsertParams) => T) => sql.array(items.map(f) as never);
  // Named as the single insert: the statement that inserts tasks, however many.
  const rows = await run(
    sql,
    undefined,
    "tasks.insert",
    sql<TaskRow[]>`
      with input as (
        select * from unnest(${column((p) => p.taskId)}::uuid[], ${column((p) => p.parentTaskId)}::uuid[],
                             ${column((p) => p.action)}::text[], ${column((p) => p.designRef)}::text[],
                             ${column((p) => p.status)}::text[],
                             ${column((p) => (p.nodeFilter === null ? null : JSON.stringify(p.nodeFilter)))}::text[],
                             ${column((p) => (p.requestContext === null ? null : JSON.stringify(p.requestContext)))}::text[],
                             ${column((p) => p.createdBy)}::text[])
          with ordinality as i(task_id, parent_task_id, action, design_ref, status, node_filter, request_context, created_by, ord)
      ), locked as (
        -- Parent rows locked in task_id order, so two batches can never deadlock on each other; a
        -- parent another transaction holds is skipped (its subtask is inserted on its own, below).
        select task_id from tasks where task_id in (select parent_task_id from input) order by task_id for no key update skip locked
      ), parents as (
        update tasks t set version = t.version + 1, updated = now()
        from locked l
        where t.task_id = l.task_id and t.status not in ('complete', 'terminated')
        returning t.task_id
      ), inserted as (
        insert into tasks (task_id, parent_task_id, action, design_ref, status, node_filter, request_context, created_by)
        select task_id, parent_task_id, action, design_ref, status, node_filter::jsonb, request_context::jsonb, created_by
        from input
        where parent_task_id is null or parent_task_id in (select task_id from parents)
        order by ord
        on conflict (task_id) do nothing
        returning *
      )
      select i.*, '{}'::uuid[] as subtask_ids,
             pg_notify(${TASK_CHANNEL}, i.task_id::text),
             case when i.parent_task_id is not null then pg_notify(${TASK_CHANNEL}, i.parent_task_id::text) end
      from inserted i`,
    held,
  );
  const byId = new Map(rows.map((r) => [r.task_id, toTask(r)]));
  const refused = items.filter((p) => !byId.has(p.taskId));
  if (refused.length === 0) return items.map((p) => byId.get(p.taskId)!);
  // Not inserted: the id exists, or the parent is missing or finished.
  const existing = new Set(
    (
      await run(
        sql,
        undefined,
        "tasks.existing",
        sql<{ task_id: string }[]>`select task_id from tasks where task_id = any(${sql.array(refused.map((p) => p.taskId))}::uuid[])`,
        held,
      )
    ).map((r) => r.task_id),
  );
  const outcomes: (Task | Error | Promise<Task>)[] = [];
  for (const p of items) {
    const task = byId.get(p.taskId);
    if (task) outcomes.push(task);
    else if (existing.has(p.taskId) || p.parentTaskId === null) outcomes.push(new AlreadyExistsError("Task", p.taskId));
    else {
      const refusal = await parentRefusal(sql, p.parentTaskId, undefined, held);
      // The parent exists and is unfinished: the batch skipped it, locked by another
      // transaction. Inserted on its own (on a connection of its own), which waits for the lock.
      outcomes.push(refusal ?? tasksInsert(sql, { ...p, signal: undefined, held: undefined }));
    }
  }
  return outcomes;
}

/** Tells watchers (at commit) that these tasks changed. */
async function notify(tx: Queryable, signal: AbortSignal | undefined, ...taskIds: (string | null)[]): Promise<void> {
  const ids = taskIds.filter((x): x is string => x !== null);
  await run(tx, signal, "tasks.notify", tx`select pg_notify(${TASK_CHANNEL}, id) from unnest(${tx.array(ids)}::text[]) as id`);
}

export async function tasksGetById(sql: Queryable, p: { taskId: string; signal?: AbortSignal; held?: Permit }): Promise<Task> {
  const [row] = await run(sql, p.signal, "tasks.get", sql<TaskRow[]>`${selectTasks(sql, sql`where t.task_id = ${p.taskId}`)}`, p.held);
  if (!row) throw new NotFoundError("Task", p.taskId);
  return toTask(row);
}

export async function tasksExists(sql: Queryable, p: { taskId: string; signal?: AbortSignal }): Promise<boolean> {
  const rows = await run(sql, p.signal, "tasks.exists", sql`select 1 from tasks where task_id = ${p.taskId}`);
  return rows.length > 0;
}

export interface TasksListParams {
  statuses: TaskStatus[];
  actions: string[];
  parentTaskId: string | null;
  createdAfter: Micros | null;
  createdBefore: Micros | null;
  /** Only tasks claimed under this term (0n: any). */
  claimedTerm?: bigint;
  /** Keyset cursor: the (created, task_id) of the last task of the previous page. */
  after: { created: Micros; taskId: string } | null;
  limit: number;
  signal?: AbortSignal;
}

/** A page of tasks cut at a byte budget, and whether the cut left tasks out. */
export interface TasksPage {
  tasks: Task[];
  /** Some of the `limit` tasks did not fit in `maxBytes` (at least one task is always returned). */
  cut: boolean;
}

/**
 * Like tasksList, but returns only the tasks whose estimated sizes (each
 * row as text: its JSON columns, result lists and subtask ids) add up to at
 * most `maxBytes`, and at least the first one. Measured in the database, so the
 * tasks left out are never shipped: a task may hold 64 KiB of request
 * context and two lists of 10,000 node names, and a page of 1,000 such tasks
 * would otherwise be built whole.
 */
export async function tasksListPage(sql: Queryable, p: TasksListParams & { maxBytes: number }): Promise<TasksPage> {
  const rows = await run(
    sql,
    p.signal,
    "tasks.list",
    sql<(TaskRow & { bytes: string; running: string; total: string })[]>`
      with page as (${selectTasks(sql, listWhere(sql, p))} order by t.created, t.task_id limit ${p.limit})
      select * from (
        select q.*, sum(q.bytes) over (order by q.created, q.task_id) as running, count(*) over () as total
        from (select page.*, octet_length(page::text) as bytes from page) q
      ) w
      where w.running <= ${p.maxBytes}::bigint or w.running = w.bytes
      order by w.created, w.task_id`,
  );
  const total = rows.length ? Number(rows[0]!.total) : 0;
  return { tasks: rows.map(toTask), cut: rows.length < total };
}

function listWhere(sql: Queryable, p: TasksListParams): Fragment {
  const conds: Fragment[] = [];
  if (p.statuses.length) conds.push(sql`t.status = any(${sql.array(p.statuses)}::text[])`);
  if (p.actions.length) conds.push(sql`t.action = any(${sql.array(p.actions)}::text[])`);
  if (p.parentTaskId !== null) conds.push(sql`t.parent_task_id = ${p.parentTaskId}`);
  if (p.createdAfter !== null) conds.push(sql`t.created >= ${formatMicros(p.createdAfter)}::timestamptz`);
  if (p.createdBefore !== null) conds.push(sql`t.created < ${formatMicros(p.createdBefore)}::timestamptz`);
  if (p.claimedTerm) conds.push(sql`t.claimed_term = ${p.claimedTerm.toString()}::bigint`);
  if (p.after !== null) conds.push(sql`(t.created, t.task_id) > (${formatMicros(p.after.created)}::timestamptz, ${p.after.taskId}::uuid)`);
  return conds.length ? sql`where ${conds.reduce((acc, c, i) => (i === 0 ? c : sql`${acc} and ${c}`))}` : sql``;
}

/** Tasks ordered by (created, task_id), starting after the cursor. */
export async function tasksList(sql: Queryable, p: TasksListParams): Promise<Task[]> {
  const rows = await run(sql, p.signal, "tasks.list", sql<TaskRow[]>`${selectTasks(sql, listWhere(sql, p))} order by t.created, t.task_id limit ${p.limit}`);
  return rows.map(toTask);
}

export interface TasksUpdateParams {
  taskId: string;
  changes: TaskChanges;
  /** 0n: no check. */
  expectedVersion: bigint;
  /** When given, the update applies only while this leadership term is current. */
  fence?: Fence | null;
  /** The fence's clock (tests only; see leases.ts). */
  now?: Date;
  signal?: AbortSignal;
  deadline?: number;
}

/** Applies changes under the row lock, checking version and status transition. */
export async function tasksUpdate(t: Transactor, p: TasksUpdateParams): Promise<Task> {
  return t.transaction(p, async (tx) => {
    if (p.fence) await leasesCheckFence(tx, { ...p.fence, signal: p.signal, now: p.now });
    const [cur] = await run(
      tx,
      p.signal,
      "tasks.update.lock",
      tx<{ status: TaskStatus; terminate: boolean; version: bigint }[]>`
        select status, terminate, version from tasks where task_id = ${p.taskId} for update`,
    );
    if (!cur) throw new NotFoundError("Task", p.taskId);
    if (p.expectedVersion !== 0n && cur.version !== p.expectedVersion) {
      throw new VersionMismatchError(p.taskId, p.expectedVersion, cur.version);
    }
    const c = p.changes;
    if (c.status !== undefined) checkTransition(p.taskId, cur.status, cur.terminate, c.status);
    const cols: Record<string, unknown> = {};
    if (c.status !== undefined) cols.status = c.status;
    if (c.resultStatus !== undefined) cols.result_status = c.resultStatus;
    if (c.resultMessage !== undefined) cols.result_message = c.resultMessage;
    if (c.resultReason !== undefined) cols.result_reason = c.resultReason;
    if (c.resultSuccesses !== undefined) cols.result_successes = tx.array(c.resultSuccesses);
    if (c.resultFailures !== undefined) cols.result_failures = tx.array(c.resultFailures);
    if (c.resultLinks !== undefined) cols.result_links = tx.json(c.resultLinks as never);
    if (c.nodeFilter !== undefined) cols.node_filter = c.nodeFilter === null ? null : tx.json(c.nodeFilter as never);
    if (c.designRef !== undefined) cols.design_ref = c.designRef;
    if (c.retry !== undefined) cols.retry = c.retry;
    // Every mask path maps to at least one column, so cols is never empty.
    await run(
      tx,
      p.signal,
      "tasks.update",
      tx`update tasks set ${tx(cols as never, Object.keys(cols) as never)}, version = version + 1, updated = now()
         where task_id = ${p.taskId}`,
    );
    await notify(tx, p.signal, p.taskId);
    const [row] = await run(tx, p.signal, "tasks.get", tx<TaskRow[]>`${selectTasks(tx, tx`where t.task_id = ${p.taskId}`)}`);
    return toTask(row!);
  });
}

function checkTransition(taskId: string, from: TaskStatus, terminate: boolean, to: TaskStatus): void {
  if (FINISHED_STATUSES.includes(from) && to !== from) {
    throw new FailedPreconditionError("TASK_FINISHED", `task ${taskId} is ${from.toUpperCase()}; its status cannot change`, {
      task_id: taskId,
      status: from.toUpperCase(),
    });
  }
  if (!terminate && (to === "terminating" || to === "terminated") && to !== from) {
    throw new FailedPreconditionError(
      "TERMINATION_NOT_REQUESTED",
      `task ${taskId} has no termination request; call TerminateTask before setting ${to.toUpperCase()}`,
      { task_id: taskId, status: from.toUpperCase() },
    );
  }
  if (terminate && (to === "requested" || to === "queued" || to === "running")) {
    throw new FailedPreconditionError("TASK_TERMINATING", `task ${taskId} is marked for termination; it can only become TERMINATING, TERMINATED or COMPLETE`, {
      task_id: taskId,
      status: from.toUpperCase(),
    });
  }
}

/**
 * Marks a task for termination. Unfinished tasks that are not already
 * TERMINATING become TERMINATING; a second request changes nothing.
 */
export async function tasksTerminate(t: Transactor, p: TransactionScope & { taskId: string; terminatedBy: string }): Promise<Task> {
  return t.transaction(p, async (tx) => {
    const [cur] = await run(
      tx,
      p.signal,
      "tasks.terminate.lock",
      tx<{ status: TaskStatus; terminate: boolean }[]>`
        select status, terminate from tasks where task_id = ${p.taskId} for update`,
    );
    if (!cur) throw new NotFoundError("Task", p.taskId);
    if (FINISHED_STATUSES.includes(cur.status)) {
      throw new FailedPreconditionError("TASK_FINISHED", `task ${p.taskId} is ${cur.status.toUpperCase()}; it cannot be terminated`, {
        task_id: p.taskId,
        status: cur.status.toUpperCase(),
      });
    }
    if (!cur.terminate) {
      await run(
        tx,
        p.signal,
        "tasks.terminate",
        tx`update tasks
           set terminate = true, terminated = now(), terminated_by = ${p.terminatedBy},
               status = case when status in ('requested', 'queued', 'running') then 'terminating' else status end,
               version = version + 1, updated = now()
           where task_id = ${p.taskId}`,
      );
      await notify(tx, p.signal, p.taskId);
    }
    const [row] = await run(tx, p.signal, "tasks.get", tx<TaskRow[]>`${selectTasks(tx, tx`where t.task_id = ${p.taskId}`)}`);
    return toTask(row!);
  });
}

/**
 * Claims the oldest QUEUED task with an allowed action: SKIP LOCKED lets
 * concurrent claimers pass over each other's candidate rows instead of
 * waiting for or double-claiming them. Returns null when nothing is queued.
 */
export async function tasksClaimNext(
  db: Db,
  p: TransactionScope & { instanceId: string; actions: string[]; fence?: Fence | null; now?: Date },
): Promise<Task | null> {
  const claim = async (q: Queryable, term: bigint) => {
    const actionFilter = p.actions.length ? q`and action = any(${q.array(p.actions)}::text[])` : q``;
    const rows = await run(
      q,
      p.signal,
      "tasks.claim",
      q<TaskRow[]>`
        with claimed as (
          update tasks
          set status = 'running', claimed_by = ${p.instanceId}, claimed_at = now(),
              claimed_term = ${term.toString()}::bigint, version = version + 1, updated = now()
          where task_id = (
            select task_id from tasks
            where status = 'queued' ${actionFilter}
            order by created, task_id
            for update skip locked
            limit 1)
          returning *)
        select c.*,
               array(select s.task_id from tasks s where s.parent_task_id = c.task_id
                     order by s.created, s.task_id) as subtask_ids,
               pg_notify(${TASK_CHANNEL}, c.task_id::text)
        from claimed c`,
    );
    return rows[0] ? toTask(rows[0]) : null;
  };
  if (!p.fence) return claim(db.sql, 0n);
  const fence = p.fence;
  return db.tx.transaction(p, async (tx) => {
    await leasesCheckFence(tx, { ...fence, signal: p.signal, now: p.now });
    return claim(tx, fence.term);
  });
}

/**
 * Deletes finished top-level tasks not updated since the cutoff, with their
 * whole subtask trees and result messages, skipping trees that still hold an
 * unfinished task. Returns what it deleted.
 */
export async function tasksPurge(
  t: Transactor,
  p: TransactionScope & { olderThanDays: number },
): Promise<{ tasks: number; resultMessages: number; bootActions: number; bootActionContexts: number }> {
  // A transaction only for its deadline-derived statement and lock bounds.
  const [row] = await t.transaction(p, (sql) =>
    run(
      sql,
      p.signal,
      "tasks.purge",
      sql<{ tasks: bigint; messages: bigint; boot_actions: bigint; contexts: bigint }[]>`
      with recursive roots as (
        select task_id from tasks
        where parent_task_id is null and status in ('complete', 'terminated')
          and updated < now() - make_interval(days => ${p.olderThanDays})
        for update skip locked
      ), tree as (
        select task_id, task_id as root from roots
        union all
        select c.task_id, tree.root from tasks c join tree on c.parent_task_id = tree.task_id
      ), kept_roots as (
        select distinct tree.root from tree join tasks t using (task_id)
        where t.status not in ('complete', 'terminated')
      ), doomed as (
        select task_id from tree where root not in (select root from kept_roots)
      ), messages as (
        select count(*) as n from result_messages where task_id in (select task_id from doomed)
      ), doomed_actions as (
        select count(*) as n from boot_actions where task_id in (select task_id from doomed)
      ), doomed_contexts as (
        select count(*) as n from boot_action_contexts where task_id in (select task_id from doomed)
      ), deleted as (
        -- Subtasks, result messages, boot actions and boot action contexts go
        -- with their root (on delete cascade).
        delete from tasks where task_id in (select root from tree where root not in (select root from kept_roots))
      )
      select (select count(*) from doomed) as tasks, (select n from messages) as messages,
             (select n from doomed_actions) as boot_actions, (select n from doomed_contexts) as contexts`,
    ),
  );
  return {
    tasks: Number(row?.tasks ?? 0n),
    resultMessages: Number(row?.messages ?? 0n),
    bootActions: Number(row?.boot_actions ?? 0n),
    bootActionContexts: Number(row?.contexts ?? 0n),
  };
}

/** Tasks by id (missing ids are skipped), in no particular order. */
export async function tasksGetByIds(
  sql: Queryable,
  p: { taskIds: string[]; signal?: AbortSignal; held?: Permit /** The metrics' name of the statement (default tasks.get_many). */; statement?: string },
): Promise<Task[]> {
  const rows = await run(
    sql,
    p.signal,
    p.statement ?? "tasks.get_many",
    sql<TaskRow[]>`${selectTasks(sql, sql`where t.task_id = any(${sql.array(p.taskIds)}::uuid[])`)}`,
    p.held,
  );
  return rows.map(toTask);
}

/** Ids of tasks changed at or after `since` (for watchers that may have missed notifications). */
export async function tasksChangedSince(sql: Queryable, p: { since: Micros; signal?: AbortSignal }): Promise<string[]> {
  const rows = await run(
    sql,
    p.signal,
    "tasks.changed_since",
    sql<{ task_id: string }[]>`select task_id from tasks where updated >= ${formatMicros(p.since)}::timestamptz`,
  );
  return rows.map((r) => r.task_id);
}

/** The database's clock. */
export async function dbNow(sql: Queryable): Promise<Micros> {
  const [row] = await sql<{ now: Micros }[]>`select now() as now`;
  return row!.now;
}
