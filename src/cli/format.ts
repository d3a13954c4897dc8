// Output formatting: enum names, times, ages, tables, the key-value view of
// a task, the subtask tree, JSON. Pure functions of the data and the output's
// colour functions; nothing here writes.
import Table from "cli-table3";
import type { Colors } from "picocolors/types.js";
import { toJson, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { ActionResult, TaskStatus, type ResultMessage, type Task } from "../../gen/drydock/statemgmt/v1/task_pb.js";
import type { BuildData, Leader } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";

/** "RUNNING" for TASK_STATUS_RUNNING. */
export const statusName = (s: TaskStatus): string => TaskStatus[s] ?? String(s);
/** "PARTIAL_SUCCESS" for ACTION_RESULT_PARTIAL_SUCCESS. */
export const resultName = (r: ActionResult | undefined): string => (r === undefined ? "-" : (ActionResult[r] ?? String(r)));

export const isFinished = (t: Task): boolean => t.status === TaskStatus.COMPLETE || t.status === TaskStatus.TERMINATED;

/** Termination was requested but the status does not say so yet (the orchestrator has not acted). */
const terminationPending = (t: Task): boolean => t.terminate && t.status !== TaskStatus.TERMINATING && t.status !== TaskStatus.TERMINATED;

/** The first 8 characters of a UUID, as the tables show it. */
export const shortId = (id: string): string => (id ? id.slice(0, 8) : "-");

/** 2025-12-01T23:10:05Z (UTC, whole seconds). */
export const isoDate = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, "Z");

/** isoDate of a timestamp, or "-". */
export function isoTime(ts: Timestamp | undefined): string {
  return ts ? isoDate(timestampDate(ts)) : "-";
}

/** 23:10:05.123 (UTC), the time column of messages. */
export function clockTime(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString().slice(11, 23) : "--:--:--.---";
}

/** A compact age like kubectl's: 45s, 12m, 5h, 3d. */
export function age(ts: Timestamp | undefined, now: number): string {
  if (!ts) return "-";
  const s = Math.max(0, Math.floor((now - timestampDate(ts).getTime()) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172_800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

/** 00:01:05 (or 2d 03:04:05) for a duration in milliseconds. */
export function elapsed(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const pad = (n: number) => String(n).padStart(2, "0");
  const hms = `${pad(Math.floor(s / 3600) % 24)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
  return s >= 86_400 ? `${Math.floor(s / 86_400)}d ${hms}` : hms;
}

/** The protobuf JSON of a message (lowerCamelCase, enum names, int64 as strings), as grpcurl prints it. */
export function jsonOf<D extends DescMessage>(schema: D, msg: MessageShape<D>): unknown {
  return toJson(schema, msg);
}

export function jsonLine(value: unknown): string {
  return JSON.stringify(value);
}

/** Colours a task status: green COMPLETE, yellow TERMINATING/TERMINATED, cyan RUNNING. */
export function colorStatus(c: Colors, s: TaskStatus): string {
  const name = statusName(s);
  if (s === TaskStatus.COMPLETE) return c.green(name);
  if (s === TaskStatus.RUNNING) return c.cyan(name);
  if (s === TaskStatus.TERMINATING || s === TaskStatus.TERMINATED) return c.yellow(name);
  return name;
}

export function colorResult(c: Colors, r: ActionResult | undefined): string {
  const name = resultName(r);
  if (r === ActionResult.SUCCESS) return c.green(name);
  if (r === ActionResult.FAILURE) return c.red(name);
  if (r === ActionResult.PARTIAL_SUCCESS) return c.yellow(name);
  return name;
}

/**
 * A borderless table like kubectl's: a header row of capitals, columns two
 * spaces apart, no trailing padding. cli-table3 measures cells with
 * string-width, so colours and wide characters line up.
 */
export function table(head: string[], rows: string[][]): string {
  const t = new Table({
    head,
    chars: {
      top: "",
      "top-mid": "",
      "top-left": "",
      "top-right": "",
      bottom: "",
      "bottom-mid": "",
      "bottom-left": "",
      "bottom-right": "",
      left: "",
      "left-mid": "",
      mid: "",
      "mid-mid": "",
      right: "",
      "right-mid": "",
      middle: "  ",
    },
    style: { "padding-left": 0, "padding-right": 0, head: [], border: [], compact: true },
  });
  t.push(...rows);
  return t
    .toString()
    .split("\n")
    .map((l) => l.trimEnd())
    .join("\n");
}

export const TASK_COLUMNS = ["ID", "ACTION", "STATUS", "RESULT", "CREATED", "AGE"];
export const TASK_WIDE_COLUMNS = ["ID", "ACTION", "STATUS", "RESULT", "ERRORS", "SUBTASKS", "PARENT", "CREATED", "AGE", "CREATED BY", "CLAIMED BY"];

/** One row of `tasks list` (and `tasks watch-all`). */
export function taskRow(t: Task, wide: boolean, now: number, c: Colors): string[] {
  const status = terminationPending(t) ? `${colorStatus(c, t.status)}*` : colorStatus(c, t.status);
  if (!wide) return [shortId(t.taskId), t.action, status, colorResult(c, t.result?.status), isoTime(t.created), age(t.created, now)];
  return [
    t.taskId,
    t.action,
    status,
    colorResult(c, t.result?.status),
    String(t.result?.errorCount ?? 0),
    String(t.subtaskIds.length),
    t.parentTaskId || "-",
    isoTime(t.created),
    age(t.created, now),
    t.createdBy || "-",
    t.claimedBy ? `${t.claimedBy}${t.claimedTerm > 0n ? ` (term ${t.claimedTerm})` : ""}` : "-",
  ];
}

export function tasksTable(tasks: Task[], wide: boolean, now: number, c: Colors): string {
  return table(
    wide ? TASK_WIDE_COLUMNS : TASK_COLUMNS,
    tasks.map((t) => taskRow(t, wide, now, c)),
  );
}

/** `Key:   value` lines, keys padded to one width. */
export function keyValues(pairs: [string, string][], c: Colors): string {
  const w = Math.max(...pairs.map(([k]) => k.length)) + 2;
  return pairs.map(([k, v]) => `${c.bold(`${k}:`.padEnd(w))}${v}`).join("\n");
}

/** The detail view of `tasks get`, `tasks create` and `tasks terminate`. */
export function taskDetail(t: Task, now: number, c: Colors): string {
  const r = t.result;
  const pairs: [string, string][] = [
    ["Task", t.taskId],
    ["Action", t.action],
    ["Status", `${colorStatus(c, t.status)}${terminationPending(t) ? " (termination requested)" : ""}`],
    ["Result", colorResult(c, r?.status)],
  ];
  if (r?.message) pairs.push(["Message", clean(r.message)]);
  if (r?.reason) pairs.push(["Reason", clean(r.reason)]);
  pairs.push(["Errors", String(r?.errorCount ?? 0)]);
  if (r?.successes.length) pairs.push(["Successes", r.successes.join(", ")]);
  if (r?.failures.length) pairs.push(["Failures", r.failures.join(", ")]);
  for (const l of r?.links ?? []) pairs.push(["Link", `${l.rel} ${l.href}`]);
  pairs.push(["Parent", t.parentTaskId || "-"]);
  pairs.push(["Subtasks", String(t.subtaskIds.length)]);
  if (t.designRef) pairs.push(["Design", t.designRef]);
  pairs.push(["Created", `${isoTime(t.created)} (${age(t.created, now)} ago)${t.createdBy ? ` by ${t.createdBy}` : ""}`]);
  pairs.push(["Updated", isoTime(t.updated)]);
  if (t.claimedBy) pairs.push(["Claimed", `${isoTime(t.claimedAt)} by ${t.claimedBy}${t.claimedTerm > 0n ? ` (term ${t.claimedTerm})` : ""}`]);
  if (t.terminated) pairs.push(["Terminated", `${isoTime(t.terminated)}${t.terminatedBy ? ` by ${t.terminatedBy}` : ""}`]);
  pairs.push(["Version", String(t.version)]);
  return keyValues(pairs, c);
}

/**
 * Text from the server made safe for one terminal line: control characters
 * (newlines, tabs, ESC, C1) become spaces, so a message can neither break a
 * table nor send escape codes of its own.
 */
export function clean(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching the C0 and C1 control characters is the point
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, " ");
}

/** "node n1", "task", or "" for a message without context. */
export function messageContext(m: ResultMessage): string {
  if (m.contextType && m.context) return clean(`${m.contextType} ${m.context}`);
  return clean(m.contextType || m.context);
}

export const MESSAGE_COLUMNS = ["SEQ", "TIME", "CONTEXT", "MESSAGE"];

export function messagesTable(msgs: ResultMessage[], c: Colors): string {
  return table(
    MESSAGE_COLUMNS,
    msgs.map((m) => [String(m.sequence), isoTime(m.ts), messageContext(m) || "-", m.error ? c.red(`ERROR ${clean(m.message)}`) : clean(m.message)]),
  );
}

/** A message as one plain line: `#42 23:10:05.123 [node n1] ERROR text`. */
export function messageLine(m: ResultMessage, c: Colors): string {
  const ctx = messageContext(m);
  const text = m.error ? c.red(`ERROR ${clean(m.message)}`) : clean(m.message);
  return `${c.dim(`#${m.sequence}`)} ${c.dim(clockTime(m.ts))} ${ctx ? `${c.cyan(`[${ctx}]`)} ` : ""}${text}`;
}

/** One line per task: `deploy_nodes 1b2c3d4e COMPLETE SUCCESS`. */
export function taskLine(t: Task, c: Colors): string {
  return `${t.action} ${shortId(t.taskId)} ${colorStatus(c, t.status)} ${colorResult(c, t.result?.status)}`;
}

export interface TaskTree {
  task: Task;
  subtasks: TaskTree[];
}

/** The subtask tree drawn with box characters, one task per line. */
export function treeLines(tree: TaskTree, c: Colors): string[] {
  const out = [taskLine(tree.task, c)];
  const walk = (nodes: TaskTree[], prefix: string) => {
    nodes.forEach((n, i) => {
      const last = i === nodes.length - 1;
      out.push(`${prefix}${last ? "└─ " : "├─ "}${taskLine(n.task, c)}`);
      walk(n.subtasks, `${prefix}${last ? "   " : "│  "}`);
    });
  };
  walk(tree.subtasks, "");
  return out;
}

export const LEADER_COLUMNS = ["ELECTION", "LEADER", "TERM", "ACQUIRED", "RENEWED", "EXPIRES"];

export function leaderRow(election: string, l: Leader | undefined): string[] {
  if (!l) return [election, "-", "-", "-", "-", "-"];
  return [l.election || election, l.instanceId, String(l.term), isoTime(l.acquiredAt), isoTime(l.renewedAt), isoTime(l.expiresAt)];
}

export const BUILD_DATA_COLUMNS = ["ID", "NODE", "GENERATOR", "FORMAT", "COLLECTED", "TASK"];

export function buildDataRow(b: BuildData, wide: boolean): string[] {
  return [String(b.buildDataId), b.nodeName, b.generator, b.dataFormat, isoTime(b.collectedAt), wide ? b.taskId : shortId(b.taskId)];
}
