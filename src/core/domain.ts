// Domain types shared by the store and the RPC layer. No protobuf, no SQL.
import type { Micros } from "./time.js";

export type { Micros };

export const TASK_STATUSES = ["requested", "queued", "running", "terminating", "terminated", "complete"] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
export const FINISHED_STATUSES: readonly TaskStatus[] = ["complete", "terminated"];

export const ACTION_RESULTS = ["incomplete", "success", "partial_success", "failure", "unreported"] as const;
export type ActionResult = (typeof ACTION_RESULTS)[number];

export type FilterSetType = "union" | "intersection";

export type JsonValue = null | boolean | number | string | JsonValue[] | { [k: string]: JsonValue };
export type JsonObject = { [k: string]: JsonValue };

export interface Link {
  rel: string;
  href: string;
}

export interface TaskResult {
  status: ActionResult;
  message: string;
  reason: string;
  errorCount: number;
  successes: string[];
  failures: string[];
  links: Link[];
}

export interface NodeFilterSet {
  filterType: FilterSetType;
  nodeNames: string[];
  nodeTags: string[];
  nodeLabels: Record<string, string>;
  rackNames: string[];
  rackLabels: Record<string, string>;
}

export interface NodeFilter {
  filterSetType: FilterSetType;
  filterSet: NodeFilterSet[];
}

export interface Task {
  taskId: string;
  parentTaskId: string | null;
  subtaskIds: string[];
  action: string;
  designRef: string;
  status: TaskStatus;
  result: TaskResult;
  nodeFilter: NodeFilter | null;
  requestContext: JsonObject | null;
  created: Micros;
  updated: Micros;
  terminated: Micros | null;
  createdBy: string;
  terminatedBy: string | null;
  terminate: boolean;
  retry: number;
  version: bigint;
  claimedBy: string | null;
  claimedAt: Micros | null;
  /** Leadership term of the claim; 0n when unfenced or unclaimed. */
  claimedTerm: bigint;
}

/** Proof of leadership carried by operations only the leader may perform. */
export interface Fence {
  election: string;
  term: bigint;
  /** Who uses the fence: null or absent, anyone; else the subject that must have claimed the term (auth/roles.ts leaseActor). */
  actor?: string | null;
}

/** Fields UpdateTask may change; absent means unchanged. */
export interface TaskChanges {
  status?: TaskStatus;
  resultStatus?: ActionResult;
  resultMessage?: string;
  resultReason?: string;
  resultSuccesses?: string[];
  resultFailures?: string[];
  resultLinks?: Link[];
  nodeFilter?: NodeFilter | null;
  designRef?: string;
  retry?: number;
}

export interface ResultMessage {
  taskId: string;
  sequence: bigint;
  message: string;
  error: boolean;
  contextType: string;
  context: string;
  ts: Micros;
  extra: JsonObject | null;
}

/** A message to append; the store assigns task, sequence and (when null) ts. */
export interface NewResultMessage {
  message: string;
  error: boolean;
  contextType: string;
  context: string;
  ts: Micros | null;
  extra: JsonObject | null;
}

export interface BuildData {
  buildDataId: bigint;
  nodeName: string;
  taskId: string;
  collectedAt: Micros;
  generator: string;
  dataFormat: string;
  /** Null when a listing left the data out. */
  dataElement: Buffer | null;
}

export interface Lease {
  election: string;
  holder: string;
  term: bigint;
  acquiredAt: Micros;
  renewedAt: Micros;
  expiresAt: Micros;
}

/** Default election of the orchestrator. */
export const DEFAULT_ELECTION = "orchestrator";

export const BOOT_ACTION_STATUSES = ["incomplete", "success", "failure", "unreported"] as const;
export type BootActionStatus = (typeof BOOT_ACTION_STATUSES)[number];

/** A node's current deployment, as its boot actions know it. The identity key never leaves the store. */
export interface BootActionContext {
  nodeName: string;
  taskId: string;
  updated: Micros;
}

export interface BootAction {
  /** ULID, canonical upper-case Crockford base32. */
  actionId: string;
  nodeName: string;
  actionName: string;
  taskId: string;
  signalling: boolean;
  status: BootActionStatus;
  created: Micros;
  reported: Micros | null;
}

/** What a node reports about a boot action; each becomes a result message of the action's task. */
export interface BootActionDetail {
  message: string;
  error: boolean;
  extra: JsonObject | null;
}
