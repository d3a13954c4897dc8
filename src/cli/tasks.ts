// `tasks list|get|create|terminate`: one call (or one page loop) each, then
// the table, the detail view or the server's JSON.
import { readFile } from "node:fs/promises";
import { fromJsonString } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  ResultMessageSchema,
  NodeFilterSchema,
  TaskSchema,
  TaskStatus,
  type NodeFilter,
  type ResultMessage,
  type Task,
} from "../../gen/drydock/statemgmt/v1/task_pb.js";
import { SubtaskFilter } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import type { Connection } from "./connection.js";
import { CliError, EXIT } from "./exit.js";
import { resolveOptionalTaskId, resolveTaskId } from "./ids.js";
import { messagesTable, taskDetail, tasksTable, treeLines, jsonOf, type TaskTree } from "./format.js";
import type { Output } from "./terminal.js";

/** The statuses an operator may name: `running`, `RUNNING` or `TASK_STATUS_RUNNING`. */
export const STATUS_NAMES = ["requested", "queued", "running", "terminating", "terminated", "complete"] as const;

export function parseStatus(s: string): TaskStatus {
  const name = s
    .trim()
    .toUpperCase()
    .replace(/^TASK_STATUS_/, "");
  const v = TaskStatus[name as keyof typeof TaskStatus];
  if (typeof v !== "number" || v === TaskStatus.UNSPECIFIED) throw new Error(`unknown status "${s}" (one of ${STATUS_NAMES.join(", ")})`);
  return v;
}

/** Largest page the server gives (ListTasks, ListSubtasks, ListResultMessages). */
const MAX_PAGE = 1000;

export interface ListOptions {
  statuses: TaskStatus[];
  actions: string[];
  parent?: string;
  /** Only tasks created at or after this time. */
  since?: Date;
  /** Tasks at most; undefined with all. */
  limit?: number;
  /** The newest `limit` tasks, newest first, instead of the oldest. */
  newest?: boolean;
  /** Tasks per ListTasks call (default and at most 1000). */
  pageSize?: number;
}

export interface Listed {
  tasks: Task[];
  /** More tasks match than were kept. */
  more: boolean;
  /** How many tasks match, when every page was read (--newest, --all). */
  total?: number;
}

/**
 * Pages through ListTasks's keyset tokens, which list oldest first (the API
 * has no other order). The oldest `limit`: until one task beyond it tells
 * that more match, or the last page. The newest (`newest`): every page,
 * keeping the last `limit`, returned newest first.
 */
export async function listTasks(conn: Connection, o: ListOptions): Promise<Listed> {
  let tasks: Task[] = [];
  let total = 0;
  let pageToken = "";
  const page = Math.min(MAX_PAGE, o.pageSize ?? MAX_PAGE);
  const createdAfter = o.since ? timestampFromMs(o.since.getTime()) : undefined;
  do {
    // The oldest: ask for one beyond the limit, to know whether more match.
    const want = o.limit === undefined || o.newest ? page : Math.min(page, o.limit + 1 - tasks.length);
    const r = await conn.state.listTasks(
      { statuses: o.statuses, actions: o.actions, parentTaskId: o.parent ?? "", createdAfter, pageSize: want, pageToken },
      { deadlineMs: conn.deadlineMs },
    );
    tasks.push(...r.tasks);
    total += r.tasks.length;
    if (o.newest && o.limit !== undefined && tasks.length > 2 * o.limit) tasks = tasks.slice(-o.limit);
    pageToken = r.nextPageToken;
  } while (pageToken && (o.limit === undefined || o.newest || tasks.length <= o.limit));
  if (o.newest) {
    const kept = o.limit === undefined ? tasks : tasks.slice(-o.limit);
    return { tasks: kept.reverse(), more: total > kept.length, total };
  }
  if (o.limit === undefined) return { tasks, more: false, total };
  return { tasks: tasks.slice(0, o.limit), more: tasks.length > o.limit };
}

export async function tasksList(conn: Connection, out: Output, o: ListOptions): Promise<number> {
  const { tasks, more, total } = await listTasks(conn, { ...o, parent: await resolveOptionalTaskId(conn, o.parent, "--parent") });
  if (out.mode === "json")
    out.print(
      JSON.stringify(
        tasks.map((t) => jsonOf(TaskSchema, t)),
        null,
        2,
      ),
    );
  else if (tasks.length === 0) out.note("no tasks match");
  else out.print(tasksTable(tasks, out.mode === "wide", Date.now(), out.c));
  // On stderr, so that stdout stays the table or the JSON document.
  if (more && o.newest) out.note(`showing the newest ${tasks.length} of ${total} matching tasks, newest first; --limit N shows more, --all every one`);
  else if (more)
    out.note(
      `showing the oldest ${tasks.length} matching tasks; more match: --newest shows the newest, --since narrows by creation time, --limit N shows more, --all every one`,
    );
  return EXIT.OK;
}

async function allMessages(conn: Connection, taskId: string, errorsOnly: boolean): Promise<ResultMessage[]> {
  const msgs: ResultMessage[] = [];
  let pageToken = "";
  do {
    const r = await conn.state.listResultMessages({ taskId, errorsOnly, pageSize: MAX_PAGE, pageToken }, { deadlineMs: conn.deadlineMs });
    msgs.push(...r.messages);
    pageToken = r.nextPageToken;
  } while (pageToken);
  return msgs;
}

async function subtasksOf(conn: Connection, parentTaskId: string): Promise<Task[]> {
  const tasks: Task[] = [];
  let pageToken = "";
  do {
    const r = await conn.state.listSubtasks({ parentTaskId, filter: SubtaskFilter.ALL, pageSize: MAX_PAGE, pageToken }, { deadlineMs: conn.deadlineMs });
    tasks.push(...r.tasks);
    pageToken = r.nextPageToken;
  } while (pageToken);
  return tasks;
}

/** The subtask tree below a task, level by level (the subtasks of one level fetched together). */
async function subtaskTree(conn: Connection, root: Task): Promise<TaskTree> {
  const top: TaskTree = { task: root, subtasks: [] };
  let level = [top];
  while (level.length > 0) {
    const next: TaskTree[] = [];
    await Promise.all(
      level.map(async (node) => {
        if (node.task.subtaskIds.length === 0) return;
        node.subtasks = (await subtasksOf(conn, node.task.taskId)).map((task) => ({ task, subtasks: [] }));
        next.push(...node.subtasks);
      }),
    );
    level = next;
  }
  return top;
}

const treeJson = (n: TaskTree): unknown => ({ task: jsonOf(TaskSchema, n.task), subtasks: n.subtasks.map(treeJson) });

export async function tasksGet(conn: Connection, out: Output, arg: string, o: { messages?: boolean; errors?: boolean; tree?: boolean }): Promise<number> {
  const id = await resolveTaskId(conn, arg);
  const { task } = await conn.state.getTask({ taskId: id }, { deadlineMs: conn.deadlineMs });
  const t = task!;
  // --errors: the server's errors-only view of the messages (ListResultMessages errors_only).
  const [msgs, tree] = await Promise.all([o.messages || o.errors ? allMessages(conn, id, !!o.errors) : undefined, o.tree ? subtaskTree(conn, t) : undefined]);
  if (out.mode === "json") {
    const doc: Record<string, unknown> = { task: jsonOf(TaskSchema, t) };
    if (msgs) doc.resultMessages = msgs.map((m) => jsonOf(ResultMessageSchema, m));
    if (tree) doc.subtasks = tree.subtasks.map(treeJson);
    out.print(JSON.stringify(doc, null, 2));
    return EXIT.OK;
  }
  const parts = [taskDetail(t, Date.now(), out.c)];
  if (tree) parts.push(`\n${out.c.bold("Subtask tree:")}\n${treeLines(tree, out.c).join("\n")}`);
  if (msgs)
    parts.push(`\n${out.c.bold(`${o.errors ? "Error messages" : "Messages"} (${msgs.length}):`)}\n${msgs.length > 0 ? messagesTable(msgs, out.c) : "none"}`);
  out.print(parts.join("\n"));
  return EXIT.OK;
}

export interface CreateOptions {
  designRef?: string;
  nodeFilter?: string;
  queued?: boolean;
  parent?: string;
  id?: string;
}

async function readNodeFilter(file: string): Promise<NodeFilter> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read --node-filter ${file}: ${(err as Error).message}`, EXIT.USAGE);
  }
  try {
    return fromJsonString(NodeFilterSchema, text);
  } catch (err) {
    throw new CliError(`--node-filter ${file} is not a NodeFilter in JSON: ${(err as Error).message}`, EXIT.USAGE);
  }
}

function printTask(out: Output, t: Task): void {
  out.print(out.mode === "json" ? JSON.stringify(jsonOf(TaskSchema, t), null, 2) : taskDetail(t, Date.now(), out.c));
}

export async function tasksCreate(conn: Connection, out: Output, action: string, o: CreateOptions): Promise<number> {
  const nodeFilter = o.nodeFilter ? await readNodeFilter(o.nodeFilter) : undefined;
  const parent = await resolveOptionalTaskId(conn, o.parent, "--parent");
  const { task } = await conn.state.createTask(
    {
      action,
      taskId: o.id ?? "",
      parentTaskId: parent ?? "",
      designRef: o.designRef ?? "",
      nodeFilter,
      initialStatus: o.queued ? TaskStatus.QUEUED : TaskStatus.UNSPECIFIED,
    },
    { deadlineMs: conn.deadlineMs },
  );
  printTask(out, task!);
  return EXIT.OK;
}

export async function tasksTerminate(conn: Connection, out: Output, arg: string): Promise<number> {
  const { task } = await conn.state.terminateTask({ taskId: await resolveTaskId(conn, arg) }, { deadlineMs: conn.deadlineMs });
  printTask(out, task!);
  return EXIT.OK;
}
