// Domain objects <-> protobuf messages.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import {
  ActionResult as PbActionResult,
  FilterSetType as PbFilterSetType,
  TaskStatus as PbTaskStatus,
  TaskSchema,
  ResultMessageSchema,
  type ResultMessage as PbResultMessage,
  type NodeFilter as PbNodeFilter,
  type Task as PbTask,
} from "../../gen/drydock/statemgmt/v1/task_pb.js";
import type {
  ActionResult,
  BootAction,
  BootActionContext,
  BootActionStatus,
  BuildData,
  FilterSetType,
  Lease,
  Micros,
  NodeFilter,
  ResultMessage,
  Task,
  TaskStatus,
} from "../core/domain.js";
import {
  BootActionContextSchema,
  BootActionSchema,
  BootActionStatus as PbBootActionStatus,
  type BootAction as PbBootAction,
  type BootActionContext as PbBootActionContext,
} from "../../gen/drydock/statemgmt/v1/boot_action_pb.js";
import {
  WatchTaskResponseSchema,
  type WatchTaskResponse,
  BuildDataSchema,
  LeaderSchema,
  type BuildData as PbBuildData,
  type Leader as PbLeader,
} from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { redactReference } from "../design/reference.js";

const STATUS_TO_PB: Record<TaskStatus, PbTaskStatus> = {
  requested: PbTaskStatus.REQUESTED,
  queued: PbTaskStatus.QUEUED,
  running: PbTaskStatus.RUNNING,
  terminating: PbTaskStatus.TERMINATING,
  terminated: PbTaskStatus.TERMINATED,
  complete: PbTaskStatus.COMPLETE,
};
const RESULT_TO_PB: Record<ActionResult, PbActionResult> = {
  incomplete: PbActionResult.INCOMPLETE,
  success: PbActionResult.SUCCESS,
  partial_success: PbActionResult.PARTIAL_SUCCESS,
  failure: PbActionResult.FAILURE,
  unreported: PbActionResult.UNREPORTED,
};

const invert = <K extends string, V extends number>(m: Record<K, V>) => new Map<number, K>(Object.entries(m).map(([k, v]) => [v as number, k as K]));
const STATUS_FROM_PB = invert(STATUS_TO_PB);
const RESULT_FROM_PB = invert(RESULT_TO_PB);

/** Domain status of a proto enum value; undefined for UNSPECIFIED or unknown values. */
export const statusFromPb = (s: PbTaskStatus): TaskStatus | undefined => STATUS_FROM_PB.get(s);
export const resultFromPb = (s: PbActionResult): ActionResult | undefined => RESULT_FROM_PB.get(s);
export const statusToPb = (s: TaskStatus): PbTaskStatus => STATUS_TO_PB[s];
export const resultToPb = (r: ActionResult): PbActionResult => RESULT_TO_PB[r];

export function timestampFromMicros(us: Micros): Timestamp {
  const seconds = us / 1_000_000n - (us % 1_000_000n < 0n ? 1n : 0n);
  const nanos = Number(us - seconds * 1_000_000n) * 1000;
  return { $typeName: "google.protobuf.Timestamp", seconds, nanos };
}

/** Whole microseconds of a Timestamp (sub-microsecond nanos are refused by validation). */
export function microsFromTimestamp(ts: Timestamp): Micros {
  return ts.seconds * 1_000_000n + BigInt(Math.floor(ts.nanos / 1000));
}

const filterTypeToPb = (t: FilterSetType) => (t === "intersection" ? PbFilterSetType.INTERSECTION : PbFilterSetType.UNION);
const filterTypeFromPb = (t: PbFilterSetType): FilterSetType => (t === PbFilterSetType.INTERSECTION ? "intersection" : "union");

export function nodeFilterFromPb(f: PbNodeFilter): NodeFilter {
  return {
    filterSetType: filterTypeFromPb(f.filterSetType),
    filterSet: f.filterSet.map((s) => ({
      filterType: filterTypeFromPb(s.filterType),
      nodeNames: s.nodeNames,
      nodeTags: s.nodeTags,
      nodeLabels: { ...s.nodeLabels },
      rackNames: s.rackNames,
      rackLabels: { ...s.rackLabels },
    })),
  };
}

function nodeFilterToPb(f: NodeFilter): MessageInitShape<typeof TaskSchema>["nodeFilter"] {
  return {
    filterSetType: filterTypeToPb(f.filterSetType),
    filterSet: f.filterSet.map((s) => ({ ...s, filterType: filterTypeToPb(s.filterType) })),
  };
}

const taskPbCache = new WeakMap<Task, PbTask>();
/** Messages with the design reference's password redacted, for tasks that have one. */
const redactedTaskPbCache = new WeakMap<Task, PbTask>();

/**
 * Converted once per task object: for snapshots a feed shares with many
 * watchers. Responses of one call use newTaskPb: their objects are sent
 * once, so a cache entry saves nothing and is one more WeakMap entry for the
 * garbage collector to trace (a ListTasks page made 100).
 *
 * `secrets`: whether the caller may see the password of the design
 * reference (an admin); otherwise it is `user:***`. The two forms are kept
 * apart, so watchers of different roles never share a message that differs.
 */
export function taskToPb(t: Task, secrets: boolean): PbTask {
  const cache = secrets || redactReference(t.designRef) === t.designRef ? taskPbCache : redactedTaskPbCache;
  let pb = cache.get(t);
  if (!pb) {
    pb = newTaskPb(t, cache === taskPbCache);
    cache.set(t, pb);
  }
  return pb;
}

/** A fresh message for a response only this call sends; `secrets` as for taskToPb. */
export function newTaskPb(t: Task, secrets: boolean): PbTask {
  return create(TaskSchema, {
    taskId: t.taskId,
    parentTaskId: t.parentTaskId ?? "",
    subtaskIds: t.subtaskIds,
    action: t.action,
    designRef: secrets ? t.designRef : redactReference(t.designRef),
    status: STATUS_TO_PB[t.status],
    result: {
      status: RESULT_TO_PB[t.result.status],
      message: t.result.message,
      reason: t.result.reason,
      errorCount: t.result.errorCount,
      successes: t.result.successes,
      failures: t.result.failures,
      links: t.result.links,
    },
    nodeFilter: t.nodeFilter ? nodeFilterToPb(t.nodeFilter) : undefined,
    requestContext: t.requestContext ?? undefined,
    created: timestampFromMicros(t.created),
    updated: timestampFromMicros(t.updated),
    terminated: t.terminated === null ? undefined : timestampFromMicros(t.terminated),
    createdBy: t.createdBy,
    terminatedBy: t.terminatedBy ?? "",
    terminate: t.terminate,
    retry: t.retry,
    version: t.version,
    claimedBy: t.claimedBy ?? "",
    claimedAt: t.claimedAt === null ? undefined : timestampFromMicros(t.claimedAt),
    claimedTerm: t.claimedTerm,
  });
}

const messagePbCache = new WeakMap<ResultMessage, PbResultMessage>();

/** Converted once per message object, however many watchers send it (see taskToPb). */
export function messageToPb(m: ResultMessage): PbResultMessage {
  let pb = messagePbCache.get(m);
  if (!pb) {
    pb = newMessagePb(m);
    messagePbCache.set(m, pb);
  }
  return pb;
}

/** A fresh message for a response only this call sends. */
export function newMessagePb(m: ResultMessage): PbResultMessage {
  return create(ResultMessageSchema, {
    taskId: m.taskId,
    sequence: m.sequence,
    message: m.message,
    error: m.error,
    contextType: m.contextType,
    context: m.context,
    ts: timestampFromMicros(m.ts),
    extra: m.extra ?? undefined,
  });
}

export function buildDataToPb(b: BuildData): PbBuildData {
  return create(BuildDataSchema, {
    buildDataId: b.buildDataId,
    nodeName: b.nodeName,
    taskId: b.taskId,
    collectedAt: timestampFromMicros(b.collectedAt),
    generator: b.generator,
    dataFormat: b.dataFormat,
    dataElement: b.dataElement ?? new Uint8Array(0),
  });
}

export function leaderToPb(l: Lease): PbLeader {
  return create(LeaderSchema, {
    election: l.election,
    instanceId: l.holder,
    term: l.term,
    acquiredAt: timestampFromMicros(l.acquiredAt),
    renewedAt: timestampFromMicros(l.renewedAt),
    expiresAt: timestampFromMicros(l.expiresAt),
  });
}

const messageEventCache = new WeakMap<ResultMessage, WatchTaskResponse>();

/**
 * The WatchTask event of a message, built once per message object: a feed
 * hands the same object to every watcher, and the server serializes a given
 * response object once (see grpcDefinition), however many watchers send it.
 */
export function messageEventToPb(m: ResultMessage): WatchTaskResponse {
  let ev = messageEventCache.get(m);
  if (!ev) {
    ev = create(WatchTaskResponseSchema, { event: { case: "message", value: messageToPb(m) } });
    messageEventCache.set(m, ev);
  }
  return ev;
}

const BOOT_ACTION_STATUS_TO_PB: Record<BootActionStatus, PbBootActionStatus> = {
  incomplete: PbBootActionStatus.INCOMPLETE,
  success: PbBootActionStatus.SUCCESS,
  failure: PbBootActionStatus.FAILURE,
  unreported: PbBootActionStatus.UNREPORTED,
};

export function bootActionToPb(a: BootAction): PbBootAction {
  return create(BootActionSchema, {
    actionId: a.actionId,
    nodeName: a.nodeName,
    actionName: a.actionName,
    taskId: a.taskId,
    signalling: a.signalling,
    status: BOOT_ACTION_STATUS_TO_PB[a.status],
    created: timestampFromMicros(a.created),
    reported: a.reported === null ? undefined : timestampFromMicros(a.reported),
  });
}

export function bootActionContextToPb(c: BootActionContext): PbBootActionContext {
  return create(BootActionContextSchema, { nodeName: c.nodeName, taskId: c.taskId, updated: timestampFromMicros(c.updated) });
}
