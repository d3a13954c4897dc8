// All SQL of the boot_action_contexts and boot_actions tables.
//
// Identity keys arrive here already hashed (auth/identityKey.ts) and never
// leave: the functions that need a key compare a presented hash themselves
// and throw PERMISSION_DENIED on a mismatch.
import type { Fragment } from "postgres";
import type { Queryable, Sql } from "../db/connect.js";
import type { Micros } from "../core/time.js";
import type { BootAction, BootActionContext, BootActionDetail, BootActionStatus } from "../core/domain.js";
import { AlreadyExistsError, FailedPreconditionError, NotFoundError, PermissionDeniedError, ResourceExhaustedError } from "../core/errors.js";
import { identityKeyMatches } from "../auth/identityKey.js";
import { messagesAppend } from "./messages.js";
import { pgCode, run, SQLSTATE } from "./sql.js";
import type { TransactionScope, Transactor } from "./transactions.js";

/** Result messages of boot action reports carry this context type (as Drydock's do). */
export const BOOT_ACTION_CONTEXT_TYPE = "bootaction";

interface ContextRow {
  node_name: string;
  task_id: string;
  identity_key_sha256: Buffer;
  updated: Micros;
}

interface ActionRow {
  action_id: string;
  node_name: string;
  action_name: string;
  task_id: string;
  identity_key_sha256: Buffer;
  signalling: boolean;
  status: BootActionStatus;
  created: Micros;
  reported: Micros | null;
  detail_count: number;
  detail_bytes: bigint;
}

const toContext = (row: ContextRow): BootActionContext => ({ nodeName: row.node_name, taskId: row.task_id, updated: row.updated });

const toAction = (row: ActionRow): BootAction => ({
  actionId: row.action_id,
  nodeName: row.node_name,
  actionName: row.action_name,
  taskId: row.task_id,
  signalling: row.signalling,
  status: row.status,
  created: row.created,
  reported: row.reported,
});

const contextNotFound = (nodeName: string) =>
  new NotFoundError("BootActionContext", nodeName, `node ${nodeName} has no boot action context (SetBootActionContext)`, "node_name");

const keyMismatch = (what: string) => new PermissionDeniedError("IDENTITY_KEY_MISMATCH", `the identity key is not the one of ${what}`);

/** Sets (inserts or replaces) a node's context; NotFoundError when the task does not exist. */
export async function bootActionContextSet(
  sql: Sql,
  params: { nodeName: string; taskId: string; keyHash: Buffer; signal?: AbortSignal },
): Promise<BootActionContext> {
  try {
    const [row] = await run(
      sql,
      params.signal,
      "boot_action_contexts.set",
      sql<ContextRow[]>`
        insert into boot_action_contexts as c (node_name, task_id, identity_key_sha256)
        select ${params.nodeName}, ${params.taskId}, ${params.keyHash}
        where exists (select 1 from tasks where task_id = ${params.taskId})
        on conflict (node_name) do update
          set task_id = excluded.task_id, identity_key_sha256 = excluded.identity_key_sha256, updated = now()
        returning c.*`,
    );
    if (!row) throw new NotFoundError("Task", params.taskId);
    return toContext(row);
  } catch (err) {
    // The task was purged between the check and the insert.
    if (pgCode(err) === SQLSTATE.foreignKeyViolation) throw new NotFoundError("Task", params.taskId);
    throw err;
  }
}

/** A node's context; NotFoundError when it has none. */
export async function bootActionContextGet(sql: Queryable, params: { nodeName: string; signal?: AbortSignal }): Promise<BootActionContext> {
  return toContext(await contextRow(sql, params));
}

/** A node's context when `identityKey` is its current key; PERMISSION_DENIED otherwise. */
export async function bootActionContextVerify(
  sql: Queryable,
  params: { nodeName: string; identityKey: Uint8Array; signal?: AbortSignal },
): Promise<BootActionContext> {
  const row = await contextRow(sql, params);
  if (!identityKeyMatches(params.identityKey, row.identity_key_sha256)) throw keyMismatch(`node ${params.nodeName}`);
  return toContext(row);
}

async function contextRow(sql: Queryable, params: { nodeName: string; signal?: AbortSignal }): Promise<ContextRow> {
  const [row] = await run(
    sql,
    params.signal,
    "boot_action_contexts.get",
    sql<ContextRow[]>`select * from boot_action_contexts where node_name = ${params.nodeName}`,
  );
  if (!row) throw contextNotFound(params.nodeName);
  return row;
}

export interface NewBootActionRow {
  actionId: string;
  actionName: string;
  signalling: boolean;
}

/**
 * Creates a node's boot actions in one statement, all or none, with the key
 * of the node's context, which must name `taskId`. Returns them in input order.
 */
export async function bootActionsCreate(
  sql: Sql,
  params: { nodeName: string; taskId: string; actions: NewBootActionRow[]; signal?: AbortSignal },
): Promise<BootAction[]> {
  const { nodeName, taskId, actions, signal } = params;
  let rows: ActionRow[];
  try {
    rows = await run(
      sql,
      signal,
      "boot_actions.create",
      sql<ActionRow[]>`
        insert into boot_actions (action_id, node_name, action_name, task_id, identity_key_sha256, signalling, status)
        select a.action_id, c.node_name, a.action_name, c.task_id, c.identity_key_sha256, a.signalling,
               case when a.signalling then 'incomplete' else 'unreported' end
        from boot_action_contexts c,
             unnest(${sql.array(actions.map((a) => a.actionId))}::text[],
                    ${sql.array(actions.map((a) => a.actionName))}::text[],
                    ${sql.array(actions.map((a) => a.signalling))}::boolean[]) as a(action_id, action_name, signalling)
        where c.node_name = ${nodeName} and c.task_id = ${taskId}
        returning *`,
    );
  } catch (err) {
    if (pgCode(err) !== SQLSTATE.uniqueViolation) throw err;
    // A client-chosen action_id (CreateBootActions' optional action_id) taken by any boot action.
    const ids = actions.map((a) => a.actionId);
    const [takenId] = await run(
      sql,
      signal,
      "boot_actions.taken_id",
      sql<{ action_id: string }[]>`select action_id from boot_actions where action_id = any(${sql.array(ids)}::text[]) limit 1`,
    );
    if (takenId) {
      throw new AlreadyExistsError("BootAction", takenId.action_id, `boot action ${takenId.action_id} already exists; nothing was created`, "action_id");
    }
    const names = actions.map((a) => a.actionName);
    const [taken] = await run(
      sql,
      signal,
      "boot_actions.taken_name",
      sql<{ action_name: string }[]>`
        select action_name from boot_actions
        where task_id = ${taskId} and node_name = ${nodeName} and action_name = any(${sql.array(names)}::text[])
        limit 1`,
    );
    const name = taken?.action_name ?? names[0]!;
    throw new AlreadyExistsError(
      "BootAction",
      name,
      `node ${nodeName} already has a boot action named ${JSON.stringify(name)} in task ${taskId}; nothing was created`,
      "action_name",
    );
  }
  if (rows.length === 0) {
    const context = await contextRow(sql, { nodeName, signal });
    throw new FailedPreconditionError(
      "BOOT_ACTION_CONTEXT_MISMATCH",
      `node ${nodeName}'s boot action context names task ${context.task_id}, not ${taskId}; set the context for this deployment first`,
      { node_name: nodeName, context_task_id: context.task_id },
    );
  }
  const byId = new Map(rows.map((r) => [r.action_id, toAction(r)]));
  return actions.map((a) => byId.get(a.actionId)!);
}

/** One boot action; NotFoundError when unknown. */
export async function bootActionGet(sql: Queryable, params: { actionId: string; signal?: AbortSignal }): Promise<BootAction> {
  const [row] = await run(sql, params.signal, "boot_actions.get", sql<ActionRow[]>`select * from boot_actions where action_id = ${params.actionId}`);
  if (!row) throw new NotFoundError("BootAction", params.actionId, `boot action ${params.actionId} does not exist`, "action_id");
  return toAction(row);
}

export interface BootActionsListParams {
  nodeName: string | null;
  taskId: string | null;
  /** Keyset cursor: the last action_id of the previous page. */
  afterActionId: string | null;
  limit: number;
  signal?: AbortSignal;
}

/** Actions ordered by action_id. */
export async function bootActionsList(sql: Queryable, params: BootActionsListParams): Promise<BootAction[]> {
  const conditions: Fragment[] = [];
  if (params.nodeName !== null) conditions.push(sql`node_name = ${params.nodeName}`);
  if (params.taskId !== null) conditions.push(sql`task_id = ${params.taskId}`);
  if (params.afterActionId !== null) conditions.push(sql`action_id > ${params.afterActionId}`);
  const where = conditions.length ? sql`where ${conditions.reduce((all, c) => sql`${all} and ${c}`)}` : sql``;
  const rows = await run(
    sql,
    params.signal,
    "boot_actions.list",
    sql<ActionRow[]>`select * from boot_actions ${where} order by action_id limit ${params.limit}`,
  );
  return rows.map(toAction);
}

/** What the reports on one boot action may store in all (STATEMGMT_BOOT_ACTION_MAX_DETAILS, _MAX_DETAIL_BYTES). */
export interface BootActionReportLimits {
  /** Detail messages per action. */
  maxDetails: number;
  /** Bytes of those messages: text (UTF-8) plus extra as compact JSON. */
  maxDetailBytes: number;
}

/** Generous for Drydock, whose nodes report a handful of details per action. */
export const DEFAULT_REPORT_LIMITS: BootActionReportLimits = { maxDetails: 1000, maxDetailBytes: 1024 * 1024 };

/** The bytes a detail counts against BootActionReportLimits.maxDetailBytes. */
export function detailBytes(d: BootActionDetail): number {
  return Buffer.byteLength(d.message) + (d.extra ? Buffer.byteLength(JSON.stringify(d.extra)) : 0);
}

export interface BootActionReport {
  actionId: string;
  identityKey: Uint8Array;
  /** The final status, or null for details only. */
  status: "success" | "failure" | null;
  details: BootActionDetail[];
}

/**
 * A node's report, in one transaction: checks the key and that the action is
 * still incomplete (under its row lock, so two reports cannot both pass),
 * that its details keep the action within `limits` (under the same lock, so
 * concurrent reports cannot pass them together), appends the details to the
 * action's task, then saves the totals and the final status.
 */
export async function bootActionReport(
  t: Transactor,
  scope: TransactionScope,
  report: BootActionReport,
  limits: BootActionReportLimits = DEFAULT_REPORT_LIMITS,
): Promise<{ bootAction: BootAction; sequences: bigint[] }> {
  const count = report.details.length;
  const bytes = report.details.reduce((sum, d) => sum + detailBytes(d), 0);
  return t.transaction(scope, async (tx) => {
    const [row] = await run(
      tx,
      scope.signal,
      "boot_actions.report.lock",
      tx<ActionRow[]>`select * from boot_actions where action_id = ${report.actionId} for update`,
    );
    if (!row) throw new NotFoundError("BootAction", report.actionId, `boot action ${report.actionId} does not exist`, "action_id");
    if (!identityKeyMatches(report.identityKey, row.identity_key_sha256)) throw keyMismatch(`boot action ${report.actionId}'s node`);
    if (row.status !== "incomplete") {
      throw new FailedPreconditionError(
        "BOOT_ACTION_ALREADY_REPORTED",
        row.status === "unreported"
          ? `boot action ${report.actionId} has signalling off (UNREPORTED): its node does not report on it`
          : `boot action ${report.actionId} was already reported as ${row.status.toUpperCase()}; its status is final`,
        { action_id: report.actionId, status: row.status.toUpperCase() },
      );
    }
    if (count > 0) {
      const storedBytes = Number(row.detail_bytes);
      if (row.detail_count + count > limits.maxDetails) {
        throw reportLimit(report.actionId, "details", "STATEMGMT_BOOT_ACTION_MAX_DETAILS", limits.maxDetails, row.detail_count, count);
      }
      if (storedBytes + bytes > limits.maxDetailBytes) {
        throw reportLimit(report.actionId, "detail bytes", "STATEMGMT_BOOT_ACTION_MAX_DETAIL_BYTES", limits.maxDetailBytes, storedBytes, bytes);
      }
    }
    let sequences: bigint[] = [];
    if (count > 0) {
      const appended = await messagesAppend(tx, {
        taskId: row.task_id,
        messages: report.details.map((d) => ({
          message: d.message,
          error: d.error,
          contextType: BOOT_ACTION_CONTEXT_TYPE,
          context: report.actionId,
          ts: null,
          extra: d.extra,
        })),
        signal: scope.signal,
      });
      sequences = appended.sequences;
    }
    if (report.status === null && count === 0) return { bootAction: toAction(row), sequences };
    const [updated] = await run(
      tx,
      scope.signal,
      "boot_actions.report.status",
      report.status === null
        ? tx<ActionRow[]>`
            update boot_actions set detail_count = detail_count + ${count}, detail_bytes = detail_bytes + ${bytes}
            where action_id = ${report.actionId} returning *`
        : tx<ActionRow[]>`
            update boot_actions set status = ${report.status}, reported = now(),
              detail_count = detail_count + ${count}, detail_bytes = detail_bytes + ${bytes}
            where action_id = ${report.actionId} returning *`,
    );
    return { bootAction: toAction(updated!), sequences };
  });
}

/** A report that would take its action past a limit: refused whole, nothing written. */
function reportLimit(actionId: string, what: string, setting: string, limit: number, current: number, requested: number): ResourceExhaustedError {
  return new ResourceExhaustedError(
    "BOOT_ACTION_REPORT_LIMIT",
    `boot action ${actionId} has ${current} ${what} stored and this report adds ${requested}; the limit is ${limit} per action (${setting}). ` +
      `Nothing of this report was stored; a report of the status alone (no details) is still accepted`,
    { action_id: actionId, limit_name: setting, limit: String(limit), current: String(current), requested: String(requested) },
  );
}
