// `builddata list|get`, `design fetch`, `health`: the commands around tasks.
import { writeFile } from "node:fs/promises";
import { BuildDataSchema, BuildDataView, GetDesignDocumentsResponseSchema, type BuildData } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import type { Connection } from "./connection.js";
import { CliError, EXIT } from "./exit.js";
import { resolveOptionalTaskId } from "./ids.js";
import { buildDataRow, BUILD_DATA_COLUMNS, jsonLine, jsonOf, table } from "./format.js";
import type { Output } from "./terminal.js";

/** Largest ListBuildData page. */
const MAX_BUILD_DATA_PAGE = 100;

export interface BuildDataFilter {
  node?: string;
  task?: string;
  latest?: boolean;
}

function requireFilter(f: BuildDataFilter): void {
  if (!f.node && !f.task) throw new CliError("give --node, --task or both", EXIT.USAGE);
}

/** Records newest first, until `accept` has taken `limit` of them or the pages end. */
async function scanBuildData(
  conn: Connection,
  f: BuildDataFilter,
  view: BuildDataView,
  limit: number | undefined,
  accept: (b: BuildData) => boolean = () => true,
): Promise<BuildData[]> {
  const found: BuildData[] = [];
  let pageToken = "";
  do {
    const r = await conn.state.listBuildData(
      { nodeName: f.node ?? "", taskId: f.task ?? "", latest: !!f.latest, view, pageSize: MAX_BUILD_DATA_PAGE, pageToken },
      { deadlineMs: conn.deadlineMs },
    );
    for (const b of r.buildData) if (accept(b) && (limit === undefined || found.length < limit)) found.push(b);
    pageToken = r.nextPageToken;
  } while (pageToken && (limit === undefined || found.length < limit));
  return found;
}

export async function buildDataList(conn: Connection, out: Output, given: BuildDataFilter & { limit?: number }): Promise<number> {
  requireFilter(given);
  const f = { ...given, task: await resolveOptionalTaskId(conn, given.task, "--task") };
  const records = await scanBuildData(conn, f, BuildDataView.BASIC, f.limit);
  if (out.mode === "json")
    out.print(
      JSON.stringify(
        records.map((b) => jsonOf(BuildDataSchema, b)),
        null,
        2,
      ),
    );
  else if (records.length === 0) out.note("no build data matches");
  else
    out.print(
      table(
        BUILD_DATA_COLUMNS,
        records.map((b) => buildDataRow(b, out.mode === "wide")),
      ),
    );
  return EXIT.OK;
}

export interface BuildDataGetOptions extends BuildDataFilter {
  generator?: string;
  id?: bigint;
  file?: string;
}

/** The data element of the newest matching record (or the record with --id), to stdout or -f FILE. */
export async function buildDataGet(conn: Connection, out: Output, given: BuildDataGetOptions): Promise<number> {
  requireFilter(given);
  const o = { ...given, task: await resolveOptionalTaskId(conn, given.task, "--task") };
  const accept = (b: BuildData) => (o.id === undefined || b.buildDataId === o.id) && (!o.generator || b.generator === o.generator);
  // Find it without the data (pages of up to 100 elements could be 32 MiB), then fetch its page in full.
  const [basic] = await scanBuildData(conn, o, BuildDataView.BASIC, 1, accept);
  if (!basic) {
    const what = [o.node && `node ${o.node}`, o.task && `task ${o.task}`, o.generator && `generator ${o.generator}`, o.id !== undefined && `id ${o.id}`]
      .filter(Boolean)
      .join(", ");
    throw new CliError(`NOT_FOUND: no build data for ${what}`, EXIT.NOT_FOUND);
  }
  const [record] = await scanBuildData(
    conn,
    { ...o, node: basic.nodeName, task: basic.taskId },
    BuildDataView.FULL,
    1,
    (b) => b.buildDataId === basic.buildDataId,
  );
  if (!record) throw new CliError(`NOT_FOUND: build data ${basic.buildDataId} is gone`, EXIT.NOT_FOUND);
  if (out.mode === "json") out.print(jsonLine(jsonOf(BuildDataSchema, record)));
  else await writeData(out, record.dataElement, o.file, `build data ${record.buildDataId} (${record.generator}, ${record.dataFormat})`);
  return EXIT.OK;
}

async function writeData(out: Output, data: Uint8Array, file: string | undefined, what: string): Promise<void> {
  if (!file) {
    out.stdout.write(data);
    return;
  }
  try {
    await writeFile(file, data);
  } catch (err) {
    throw new CliError(`cannot write ${file}: ${(err as Error).message}`, EXIT.OTHER);
  }
  out.note(`wrote ${data.length} bytes of ${what} to ${file}`);
}

export async function designFetch(conn: Connection, out: Output, ref: string, file: string | undefined): Promise<number> {
  const r = await conn.state.getDesignDocuments({ designRef: ref }, { deadlineMs: conn.deadlineMs });
  if (out.mode === "json") out.print(jsonLine(jsonOf(GetDesignDocumentsResponseSchema, r)));
  else await writeData(out, r.content, file, `design ${r.designRef} (sha256 ${r.sha256}${r.fromCache ? ", from the server's cache" : ""})`);
  return EXIT.OK;
}

export async function health(conn: Connection, out: Output): Promise<number> {
  const r = await conn.health().check({ service: "" }, { deadlineMs: conn.deadlineMs });
  const name = HealthCheckResponse_ServingStatus[r.status] ?? String(r.status);
  if (out.mode === "json") out.print(jsonLine({ status: name }));
  else out.print(r.status === HealthCheckResponse_ServingStatus.SERVING ? out.c.green(name) : out.c.red(name));
  return r.status === HealthCheckResponse_ServingStatus.SERVING ? EXIT.OK : EXIT.TASK_FAILED;
}
