// `bootactions list|get`: nodes' boot actions and where they stand.
import { BootActionSchema, BootActionStatus, type BootAction } from "../../gen/drydock/statemgmt/v1/boot_action_pb.js";
import type { Connection } from "./connection.js";
import { CliError, EXIT } from "./exit.js";
import { resolveOptionalTaskId } from "./ids.js";
import { isoTime, jsonLine, jsonOf, keyValues, shortId, table } from "./format.js";
import type { Colors } from "picocolors/types.js";
import type { Output } from "./terminal.js";

const PAGE = 1000;

export const BOOT_ACTION_COLUMNS = ["ACTION ID", "NODE", "NAME", "STATUS", "CREATED", "REPORTED", "TASK"];

const statusName = (s: BootActionStatus) => (BootActionStatus[s] ?? String(s)).toLowerCase();

function colorStatus(c: Colors, s: BootActionStatus): string {
  const name = statusName(s);
  if (s === BootActionStatus.SUCCESS) return c.green(name);
  if (s === BootActionStatus.FAILURE) return c.red(name);
  if (s === BootActionStatus.INCOMPLETE) return c.yellow(name);
  return c.dim(name);
}

function row(a: BootAction, wide: boolean, c: Colors): string[] {
  return [
    a.actionId,
    a.nodeName,
    a.actionName,
    colorStatus(c, a.status),
    isoTime(a.created),
    a.reported ? isoTime(a.reported) : "-",
    wide ? a.taskId : shortId(a.taskId),
  ];
}

export async function bootActionsList(conn: Connection, out: Output, given: { node?: string; task?: string }): Promise<number> {
  if (!given.node && !given.task) throw new CliError("give --node, --task or both", EXIT.USAGE);
  const f = { ...given, task: await resolveOptionalTaskId(conn, given.task, "--task") };
  const found: BootAction[] = [];
  let pageToken = "";
  do {
    const r = await conn.state.listBootActions({ nodeName: f.node ?? "", taskId: f.task ?? "", pageSize: PAGE, pageToken }, { deadlineMs: conn.deadlineMs });
    found.push(...r.bootActions);
    pageToken = r.nextPageToken;
  } while (pageToken);
  if (out.mode === "json")
    out.print(
      JSON.stringify(
        found.map((a) => jsonOf(BootActionSchema, a)),
        null,
        2,
      ),
    );
  else if (found.length === 0) out.note("no boot actions match");
  else
    out.print(
      table(
        BOOT_ACTION_COLUMNS,
        found.map((a) => row(a, out.mode === "wide", out.c)),
      ),
    );
  return EXIT.OK;
}

export async function bootActionGet(conn: Connection, out: Output, actionId: string): Promise<number> {
  const { bootAction: a } = await conn.state.getBootAction({ actionId }, { deadlineMs: conn.deadlineMs });
  if (out.mode === "json") {
    out.print(jsonLine(jsonOf(BootActionSchema, a!)));
    return EXIT.OK;
  }
  out.print(
    keyValues(
      [
        ["Action", a!.actionId],
        ["Node", a!.nodeName],
        ["Name", a!.actionName],
        ["Status", colorStatus(out.c, a!.status)],
        ["Signalling", a!.signalling ? "yes" : "no (never reported)"],
        ["Task", a!.taskId],
        ["Created", isoTime(a!.created)],
        ["Reported", a!.reported ? isoTime(a!.reported) : "-"],
      ],
      out.c,
    ),
  );
  return EXIT.OK;
}
