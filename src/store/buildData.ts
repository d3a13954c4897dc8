// All SQL of the build_data table.
import type { Fragment } from "postgres";
import type { Queryable } from "../db/connect.js";
import { formatMicros, type Micros } from "../core/time.js";
import type { BuildData } from "../core/domain.js";
import { NotFoundError } from "../core/errors.js";
import { run } from "./sql.js";

/** A build_data row as postgres.js returns it (data_element null where a list leaves it out; the export reads these too). */
export interface BuildDataRow {
  build_data_id: bigint;
  node_name: string;
  task_id: string;
  collected_at: Micros;
  generator: string;
  data_format: string;
  data_element: Buffer | null;
}

const toBuildData = (r: BuildDataRow): BuildData => ({
  buildDataId: r.build_data_id,
  nodeName: r.node_name,
  taskId: r.task_id,
  collectedAt: r.collected_at,
  generator: r.generator,
  dataFormat: r.data_format,
  dataElement: r.data_element,
});

export interface BuildDataInsertParams {
  nodeName: string;
  taskId: string;
  collectedAt: Micros | null;
  generator: string;
  dataFormat: string;
  dataElement: Buffer;
  signal?: AbortSignal;
}

/** Stores a record if its task exists (NotFoundError otherwise). */
export async function buildDataInsert(sql: Queryable, p: BuildDataInsertParams): Promise<BuildData> {
  const [row] = await run(
    sql,
    p.signal,
    "build_data.insert",
    sql<BuildDataRow[]>`
      insert into build_data (node_name, task_id, collected_at, generator, data_format, data_element)
      select ${p.nodeName}, ${p.taskId}, coalesce(${p.collectedAt === null ? null : formatMicros(p.collectedAt)}::timestamptz, now()),
             ${p.generator}, ${p.dataFormat}, ${p.dataElement}
      where exists (select 1 from tasks where task_id = ${p.taskId})
      returning *`,
  );
  if (!row) throw new NotFoundError("Task", p.taskId);
  return toBuildData(row);
}

export interface BuildDataListParams {
  nodeName: string | null;
  taskId: string | null;
  /** Only the newest record per generator. */
  latest: boolean;
  withData: boolean;
  /** Keyset cursor: the last record of the previous page. */
  after: { collectedAt: Micros; buildDataId: bigint } | null;
  limit: number;
  /**
   * With data: stop once the records' estimated bytes (data plus 256 a
   * record) pass this (the first record whatever its size). The first record
   * that does not fit is returned without data and marked `fits: false`
   * (more follow); the database ships no data past the page.
   */
  maxBytes?: number;
  signal?: AbortSignal;
}

/** Records ordered by (collected_at, build_data_id) descending; see maxBytes. */
export async function buildDataList(sql: Queryable, p: BuildDataListParams): Promise<(BuildData & { fits: boolean })[]> {
  const conds: Fragment[] = [];
  if (p.nodeName !== null) conds.push(sql`node_name = ${p.nodeName}`);
  if (p.taskId !== null) conds.push(sql`task_id = ${p.taskId}`);
  const where = conds.length ? sql`where ${conds.reduce((a, c) => sql`${a} and ${c}`)}` : sql``;
  const maxBytes = p.withData && p.maxBytes !== undefined ? Math.floor(p.maxBytes) : null;
  const columns = p.withData
    ? sql`build_data_id, node_name, task_id, collected_at, generator, data_format, case when fits then data_element end as data_element, fits`
    : sql`build_data_id, node_name, task_id, collected_at, generator, data_format, null::bytea as data_element, true as fits`;
  const source = p.latest
    ? sql`(select distinct on (generator) * from build_data ${where}
           order by generator, collected_at desc, build_data_id desc) b`
    : sql`(select * from build_data ${where}) b`;
  const cursor = p.after
    ? sql`where (collected_at, build_data_id) < (${formatMicros(p.after.collectedAt)}::timestamptz, ${p.after.buildDataId.toString()}::bigint)`
    : sql``;
  const rows = await run(
    sql,
    p.signal,
    "build_data.list",
    sql<BuildDataRow[]>`
      select ${columns} from (
        select b.*, (n = 1 or ${maxBytes}::bigint is null or total <= ${maxBytes}::bigint) as fits, total - size as before
        from (
          select b.*, octet_length(data_element)::bigint + 256 as size,
                 row_number() over w as n, sum(octet_length(data_element)::bigint + 256) over w as total
          from ${source} ${cursor}
          window w as (order by collected_at desc, build_data_id desc)
          order by collected_at desc, build_data_id desc
          limit ${p.limit}) b
      ) b
      where n = 1 or ${maxBytes}::bigint is null or before <= ${maxBytes}::bigint
      order by collected_at desc, build_data_id desc`,
  );
  return rows.map((r) => ({ ...toBuildData(r), fits: (r as BuildDataRow & { fits: boolean }).fits }));
}
