// Task RPCs: validate, call one store function, convert the result.
import { randomUUID } from "node:crypto";
import { create, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { Sql } from "../db/connect.js";
import type { Db } from "../store/transactions.js";
import type { Readers } from "../store/readers.js";
import type { Writers } from "../store/writers.js";
import { SYSTEM_CLOCK, type Clock } from "../core/clock.js";
import type { ServiceImpl } from "../contract/contract.js";
import type { StateService } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import {
  GetTaskResponseSchema,
  ListSubtasksResponseSchema,
  ListTasksResponseSchema,
  SubtaskFilter,
  TaskView,
} from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { TaskStatus as PbTaskStatus, type Task as PbTask } from "../../gen/drydock/statemgmt/v1/task_pb.js";
import type { ResultMessage, TaskChanges, TaskStatus } from "../core/domain.js";
import { messagesList, messagesMeasure } from "../store/messages.js";
import { responseTooLarge, taskBytes } from "./budget.js";
import type { RpcSettings } from "./settings.js";
import * as tasks from "../store/tasks.js";
import { FailedPreconditionError, NotFoundError } from "../core/errors.js";
import { actingAs, leaseActor, seesSecrets } from "../auth/roles.js";
import { newMessagePb, microsFromTimestamp, nodeFilterFromPb, resultFromPb, statusFromPb, newTaskPb } from "./convert.js";
import { filterFingerprint, type PageTokens } from "./pagination.js";
import { withEncodedTasks } from "./taskWire.js";
import { LIMITS, Validator } from "./validate.js";

/**
 * Most result messages GetTask's FULL view returns: past it the response
 * (and the server's memory for it) would grow without bound.
 */
export const FULL_VIEW_MAX_MESSAGES = 10_000;

type Methods = typeof StateService extends { method: infer M } ? M : never;
export type StateImpl = ServiceImpl<Methods>;

/** Mask paths UpdateTask accepts. */
const UPDATE_PATHS = [
  "status",
  "result",
  "result.status",
  "result.message",
  "result.reason",
  "result.successes",
  "result.failures",
  "result.links",
  "node_filter",
  "design_ref",
  "retry",
] as const;
type UpdatePath = (typeof UPDATE_PATHS)[number];

export function taskRpcs(
  db: Db,
  tokens: PageTokens,
  writers: Writers,
  readers: Readers,
  settings: Pick<RpcSettings, "responseMaxBytes">,
  clock: Clock = SYSTEM_CLOCK,
): StateImpl {
  const { sql } = db;
  const { responseMaxBytes } = settings;
  return {
    async createTask(req, ctx) {
      const { signal, caller } = ctx;
      const v = new Validator();
      const taskId = req.taskId === "" ? randomUUID() : v.uuid("task_id", req.taskId, false);
      const parentTaskId = v.uuid("parent_task_id", req.parentTaskId, false);
      v.action("action", req.action)
        .designRef("design_ref", req.designRef)
        .nodeFilter("node_filter", req.nodeFilter)
        .jsonObject("request_context", req.requestContext, LIMITS.requestContextBytes)
        .text("created_by", req.createdBy, LIMITS.name);
      const initial = req.initialStatus === PbTaskStatus.UNSPECIFIED ? "requested" : statusFromPb(req.initialStatus);
      if (initial !== "requested" && initial !== "queued") v.add("initial_status", "must be REQUESTED, QUEUED or unspecified");
      v.check();
      const createdBy = actingAs(caller, "created_by", req.createdBy);
      ctx.logFields.taskId = taskId;
      const task = await writers.insertTask({
        taskId,
        parentTaskId: parentTaskId === "" ? null : parentTaskId,
        action: req.action,
        designRef: req.designRef,
        status: initial as "requested" | "queued",
        nodeFilter: req.nodeFilter ? nodeFilterFromPb(req.nodeFilter) : null,
        requestContext: req.requestContext ?? null,
        createdBy,
        signal,
      });
      return { task: newTaskPb(task, seesSecrets(caller)) };
    },

    async getTask(req, { signal, caller }) {
      const v = new Validator();
      const taskId = v.uuid("task_id", req.taskId, true);
      if (!(req.view in TaskView)) v.add("view", `unknown value ${req.view}`);
      v.check();
      const task = await readers.getTask({ taskId, signal });
      const secrets = seesSecrets(caller);
      // The task pre-encoded (rpc/taskWire.ts), as for list pages.
      if (req.view !== TaskView.FULL) return withEncodedTasks(create(GetTaskResponseSchema), 1, [task], secrets);
      // Measured in the database first (nothing but the sizes leaves it):
      // a response that cannot be sent is refused before it is built.
      const room = responseMaxBytes - taskBytes(task);
      const measured = await messagesMeasure(sql, { taskId, afterSequence: 0n, errorsOnly: false, limit: FULL_VIEW_MAX_MESSAGES, maxBytes: room, signal });
      if (!measured.fitsAll) {
        if (measured.bytes > room) {
          throw responseTooLarge(
            `task ${taskId} with its result messages`,
            responseMaxBytes,
            measured.bytes + responseMaxBytes - room,
            "read the task with view BASIC and its messages page by page with ListResultMessages",
            { task_id: taskId },
          );
        }
        throw new FailedPreconditionError(
          "TOO_MANY_MESSAGES_FOR_FULL_VIEW",
          `task ${taskId} has more than ${FULL_VIEW_MAX_MESSAGES} result messages, more than view FULL returns; read them page by page with ListResultMessages`,
          { task_id: taskId, limit: String(FULL_VIEW_MAX_MESSAGES) },
        );
      }
      // The messages measured, and no later ones: what was measured is what is sent.
      const resultMessages: ResultMessage[] = [];
      for (let after = 0n; resultMessages.length < measured.count; ) {
        const batch = await messagesList(sql, {
          taskId,
          afterSequence: after,
          errorsOnly: false,
          limit: Math.min(1000, measured.count - resultMessages.length),
          signal,
        });
        if (batch.length === 0) break;
        resultMessages.push(...batch);
        after = batch[batch.length - 1]!.sequence;
      }
      return withEncodedTasks(create(GetTaskResponseSchema, { resultMessages: resultMessages.map(newMessagePb) }), 1, [task], secrets);
    },

    async listTasks(req, { signal, caller }) {
      const v = new Validator();
      const limit = v.pageSize("page_size", req.pageSize);
      const statuses = statusList(v, "statuses", req.statuses);
      if (req.actions.length > LIMITS.listFilterValues) v.add("actions", `at most ${LIMITS.listFilterValues} actions`);
      req.actions.forEach((a, i) => v.action(`actions[${i}]`, a));
      const parent = v.uuid("parent_task_id", req.parentTaskId, false);
      v.timestamp("created_after", req.createdAfter).timestamp("created_before", req.createdBefore);
      if (req.claimedTerm < 0n) v.add("claimed_term", "must not be negative");
      v.check();
      const filters = {
        claimedTerm: req.claimedTerm,
        statuses,
        actions: req.actions,
        parentTaskId: parent === "" ? null : parent,
        createdAfter: req.createdAfter ? microsFromTimestamp(req.createdAfter) : null,
        createdBefore: req.createdBefore ? microsFromTimestamp(req.createdBefore) : null,
      };
      return listPage(ListTasksResponseSchema, sql, tokens, filters, limit, req.pageToken, signal, seesSecrets(caller), responseMaxBytes);
    },

    async listSubtasks(req, { signal, caller }) {
      const v = new Validator();
      const parent = v.uuid("parent_task_id", req.parentTaskId, true);
      const limit = v.pageSize("page_size", req.pageSize);
      if (!(req.filter in SubtaskFilter)) v.add("filter", `unknown value ${req.filter}`);
      v.check();
      // Existence first, so an unknown parent is NOT_FOUND rather than an empty list.
      if (!(await tasks.tasksExists(sql, { taskId: parent, signal }))) throw new NotFoundError("Task", parent);
      const statuses: TaskStatus[] =
        req.filter === SubtaskFilter.ACTIVE ? ["requested", "queued", "running", "terminating"] : req.filter === SubtaskFilter.COMPLETE ? ["complete"] : [];
      const filters = { statuses, actions: [], parentTaskId: parent, createdAfter: null, createdBefore: null };
      return listPage(ListSubtasksResponseSchema, sql, tokens, filters, limit, req.pageToken, signal, seesSecrets(caller), responseMaxBytes);
    },

    async updateTask(req, ctx) {
      const { signal, deadline, caller } = ctx;
      const v = new Validator();
      const t = req.task;
      const taskId = v.uuid("task.task_id", t?.taskId ?? "", true);
      const paths = req.updateMask?.paths ?? [];
      if (paths.length === 0) v.add("update_mask", `is required; allowed paths: ${UPDATE_PATHS.join(", ")}`);
      for (const p of paths) {
        if (!(UPDATE_PATHS as readonly string[]).includes(p)) {
          v.add("update_mask", `path "${p}" cannot be updated; allowed paths: ${UPDATE_PATHS.join(", ")}`);
        }
      }
      if (req.expectedVersion < 0n) v.add("expected_version", "must not be negative");
      const fence = v.fence("fence", req.fence);
      v.check();
      const changes = taskChanges(v, t!, new Set(paths as UpdatePath[]));
      v.check();
      ctx.logFields.taskId = taskId;
      const task = await tasks.tasksUpdate(db.tx, {
        taskId,
        changes,
        expectedVersion: req.expectedVersion,
        fence: fence && { ...fence, actor: leaseActor(caller) },
        now: clock.sqlNow(),
        signal,
        deadline,
      });
      return { task: newTaskPb(task, seesSecrets(caller)) };
    },

    async terminateTask(req, ctx) {
      const { signal, deadline, caller } = ctx;
      const v = new Validator();
      const taskId = v.uuid("task_id", req.taskId, true);
      v.text("terminated_by", req.terminatedBy, LIMITS.name);
      v.check();
      const terminatedBy = actingAs(caller, "terminated_by", req.terminatedBy);
      ctx.logFields.taskId = taskId;
      return { task: newTaskPb(await tasks.tasksTerminate(db.tx, { taskId, terminatedBy, signal, deadline }), seesSecrets(caller)) };
    },

    async claimNextTask(req, ctx) {
      const { signal, deadline, caller } = ctx;
      const v = new Validator();
      v.text("instance_id", req.instanceId, LIMITS.name, true);
      if (req.actions.length > LIMITS.listFilterValues) v.add("actions", `at most ${LIMITS.listFilterValues} actions`);
      req.actions.forEach((a, i) => v.action(`actions[${i}]`, a));
      const fence = v.fence("fence", req.fence);
      v.check();
      const task = await tasks.tasksClaimNext(db, {
        instanceId: req.instanceId,
        actions: req.actions,
        fence: fence && { ...fence, actor: leaseActor(caller) },
        now: clock.sqlNow(),
        signal,
        deadline,
      });
      if (task) ctx.logFields.taskId = task.taskId;
      return { task: task ? newTaskPb(task, seesSecrets(caller)) : undefined };
    },

    async purgeTasks(req, { signal, deadline }) {
      const v = new Validator();
      v.range("older_than_days", req.olderThanDays, 0, LIMITS.purgeDays);
      v.check();
      const n = await tasks.tasksPurge(db.tx, { olderThanDays: req.olderThanDays, signal, deadline });
      return {
        tasksDeleted: BigInt(n.tasks),
        resultMessagesDeleted: BigInt(n.resultMessages),
        bootActionsDeleted: BigInt(n.bootActions),
        bootActionContextsDeleted: BigInt(n.bootActionContexts),
      };
    },
  };
}

export function statusList(v: Validator, field: string, values: PbTaskStatus[]): TaskStatus[] {
  const out: TaskStatus[] = [];
  values.forEach((s, i) => {
    const d = statusFromPb(s);
    if (d === undefined) v.add(`${field}[${i}]`, `${PbTaskStatus[s] ?? s} is not a task status`);
    else out.push(d);
  });
  return out;
}

async function listPage<S extends typeof ListTasksResponseSchema | typeof ListSubtasksResponseSchema>(
  schema: S,
  sql: Sql,
  tokens: PageTokens,
  filters: Omit<tasks.TasksListParams, "after" | "limit" | "signal">,
  limit: number,
  pageToken: string,
  signal: AbortSignal,
  secrets: boolean,
  maxBytes: number,
): Promise<MessageShape<S>> {
  const fingerprint = filterFingerprint(filters);
  const key = tokens.decode("page_token", pageToken, fingerprint, ["micros", "uuid"]);
  const after = key ? { created: BigInt(key[0]!), taskId: key[1]! } : null;
  const { tasks: rows, cut } = await tasks.tasksListPage(sql, { ...filters, after, limit: limit + 1, maxBytes, signal });
  // A page cut at the byte budget holds fewer tasks than asked for; the next page starts after its last.
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  const nextPageToken = (cut || rows.length > limit) && last ? tokens.encode(fingerprint, [last.created.toString(), last.taskId]) : "";
  // The tasks pre-encoded (rpc/taskWire.ts): a page of 100 cost 1 ms in protobuf-es.
  return withEncodedTasks(create(schema, { nextPageToken } as MessageInitShape<S>) as MessageShape<S>, 1, page, secrets);
}

/** The changes named by the mask, validated. */
function taskChanges(v: Validator, t: PbTask, paths: Set<UpdatePath>): TaskChanges {
  const c: TaskChanges = {};
  const has = (p: UpdatePath) => paths.has(p) || (p.startsWith("result.") && paths.has("result"));
  const r = t.result;
  if (has("status")) {
    const s = statusFromPb(t.status);
    if (s === undefined) v.add("task.status", "must be a task status (not UNSPECIFIED)");
    else c.status = s;
  }
  if (has("result.status")) {
    const s = r ? resultFromPb(r.status) : "incomplete";
    if (s === undefined) v.add("task.result.status", "must be an action result (not UNSPECIFIED)");
    else c.resultStatus = s;
  }
  if (has("result.message")) {
    v.text("task.result.message", r?.message ?? "", LIMITS.resultText);
    c.resultMessage = r?.message ?? "";
  }
  if (has("result.reason")) {
    v.text("task.result.reason", r?.reason ?? "", LIMITS.resultText);
    c.resultReason = r?.reason ?? "";
  }
  if (has("result.successes")) {
    v.texts("task.result.successes", r?.successes ?? [], LIMITS.nodeList, LIMITS.name);
    c.resultSuccesses = r?.successes ?? [];
  }
  if (has("result.failures")) {
    v.texts("task.result.failures", r?.failures ?? [], LIMITS.nodeList, LIMITS.name);
    c.resultFailures = r?.failures ?? [];
  }
  if (has("result.links")) {
    v.links("task.result.links", r?.links ?? []);
    c.resultLinks = (r?.links ?? []).map((l) => ({ rel: l.rel, href: l.href }));
  }
  if (has("node_filter")) {
    v.nodeFilter("task.node_filter", t.nodeFilter);
    c.nodeFilter = t.nodeFilter ? nodeFilterFromPb(t.nodeFilter) : null;
  }
  if (has("design_ref")) {
    v.designRef("task.design_ref", t.designRef);
    c.designRef = t.designRef;
  }
  if (has("retry")) {
    if (t.retry < 0) v.add("task.retry", "must not be negative");
    c.retry = t.retry;
  }
  return c;
}
