// Task ids as an operator types them: the full UUID, or a unique prefix of
// it such as the 8 characters the tables show (as docker takes a short id).
//
// The API has no search by id prefix, so a prefix is resolved by reading the
// ids of every task with ListTasks (pages of 1000) and keeping those that
// start with it; a full UUID goes to the server as it is, without that scan.
import type { Task } from "../../gen/drydock/statemgmt/v1/task_pb.js";
import type { Connection } from "./connection.js";
import { CliError, EXIT } from "./exit.js";
import { isoTime, statusName } from "./format.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SHAPE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
/** Candidates listed for an ambiguous prefix. */
const SHOWN = 10;
const PAGE = 1000;

/** A beginning of a UUID (with its dashes, or without any): `2ef18a66`, `2ef18a66-5f`, `2ef18a665f60`. */
export function isIdPrefix(s: string): boolean {
  if (s.length === 0 || s.length >= SHAPE.length) return false;
  if (/^[0-9a-f]+$/i.test(s)) return s.length <= 32;
  return [...s].every((ch, i) => (SHAPE[i] === "-" ? ch === "-" : /[0-9a-f]/i.test(ch)));
}

function matches(id: string, prefix: string): boolean {
  return id.startsWith(prefix) || (!prefix.includes("-") && id.replace(/-/g, "").startsWith(prefix));
}

/**
 * The full id of the task `arg` names: a UUID as it is; a unique prefix of
 * one resolved (none: NOT_FOUND, exit 4; several: the candidates, exit 2);
 * anything else as it is, for the server to judge. `what` names the argument
 * in messages, e.g. "--parent".
 */
export async function resolveTaskId(conn: Connection, arg: string, what = "task id"): Promise<string> {
  if (UUID.test(arg) || !isIdPrefix(arg)) return arg;
  const prefix = arg.toLowerCase();
  const found: Task[] = [];
  let pageToken = "";
  do {
    const r = await conn.state.listTasks({ pageSize: PAGE, pageToken }, { deadlineMs: conn.deadlineMs });
    for (const t of r.tasks) if (matches(t.taskId, prefix)) found.push(t);
    pageToken = r.nextPageToken;
  } while (pageToken);
  if (found.length === 1) return found[0]!.taskId;
  if (found.length === 0) throw new CliError(`NOT_FOUND: no task's id starts with ${arg}${what === "task id" ? "" : ` (${what})`}`, EXIT.NOT_FOUND);
  const lines = found.slice(0, SHOWN).map((t) => `  ${t.taskId}  ${t.action}  ${statusName(t.status)}  ${isoTime(t.created)}`);
  if (found.length > SHOWN) lines.push(`  … and ${found.length - SHOWN} more`);
  throw new CliError(`${what} ${arg} is ambiguous: ${found.length} tasks' ids start with it; give more of the id:\n${lines.join("\n")}`, EXIT.USAGE);
}

/** resolveTaskId for an optional option's value. */
export async function resolveOptionalTaskId(conn: Connection, arg: string | undefined, what: string): Promise<string | undefined> {
  return arg === undefined || arg === "" ? arg : resolveTaskId(conn, arg, what);
}
