// Build data RPCs.
import type { Sql } from "../db/connect.js";
import { InvalidArgumentError } from "../core/errors.js";
import { buildDataInsert, buildDataList } from "../store/buildData.js";
import { BuildDataView } from "../../gen/drydock/statemgmt/v1/state_service_pb.js";
import { buildDataToPb, microsFromTimestamp } from "./convert.js";
import { filterFingerprint, type PageTokens } from "./pagination.js";
import { NO_COUNTERS, type ServiceCounters } from "../metrics/callCounters.js";
import type { StateImpl } from "./tasks.js";
import { Validator } from "./validate.js";
import type { RpcSettings } from "./settings.js";

/** type "/" subtype, optionally with parameters (RFC 6838 names). */
const MIME_RE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}(\s*;\s*[a-z0-9!#$&^_.+-]+=("[^"\\]*"|[a-z0-9!#$&^_.+-]+))*$/i;

export function buildDataRpcs(
  sql: Sql,
  tokens: PageTokens,
  /** A page ends early once it holds responseMaxBytes estimated bytes (at least one record). */
  settings: Pick<RpcSettings, "buildDataMaxBytes" | "responseMaxBytes">,
  counters: ServiceCounters = NO_COUNTERS,
): StateImpl {
  const { buildDataMaxBytes: maxDataBytes, responseMaxBytes } = settings;
  return {
    async createBuildData(req, ctx) {
      const { signal } = ctx;
      const v = new Validator();
      const b = req.buildData;
      if (!b) throw InvalidArgumentError.field("build_data", "is required");
      v.text("build_data.node_name", b.nodeName, 255, true);
      const taskId = v.uuid("build_data.task_id", b.taskId, true);
      v.timestamp("build_data.collected_at", b.collectedAt);
      v.text("build_data.generator", b.generator, 256, true);
      v.text("build_data.data_format", b.dataFormat, 255, true);
      if (b.dataFormat !== "" && !MIME_RE.test(b.dataFormat)) {
        v.add("build_data.data_format", `"${b.dataFormat.slice(0, 80)}" is not a MIME type such as text/plain or application/json`);
      }
      if (b.dataElement.length === 0) v.add("build_data.data_element", "is required and must not be empty");
      if (b.dataElement.length > maxDataBytes) {
        v.add("build_data.data_element", `is ${b.dataElement.length} bytes; the limit is ${maxDataBytes} bytes (STATEMGMT_BUILD_DATA_MAX_BYTES)`);
      }
      v.check();
      ctx.logFields.taskId = taskId;
      const stored = await buildDataInsert(sql, {
        nodeName: b.nodeName,
        taskId,
        collectedAt: b.collectedAt ? microsFromTimestamp(b.collectedAt) : null,
        generator: b.generator,
        dataFormat: b.dataFormat,
        dataElement: Buffer.from(b.dataElement.buffer, b.dataElement.byteOffset, b.dataElement.byteLength),
        signal,
      });
      counters.buildDataStored();
      return { buildData: buildDataToPb(stored) };
    },

    async listBuildData(req, { signal }) {
      const v = new Validator();
      if (req.nodeName !== "") v.text("node_name", req.nodeName, 255);
      const taskId = v.uuid("task_id", req.taskId, false);
      const limit = v.pageSize("page_size", req.pageSize, 20, 100);
      if (!(req.view in BuildDataView)) v.add("view", `unknown value ${req.view}`);
      v.check();
      const filters = { nodeName: req.nodeName === "" ? null : req.nodeName, taskId: taskId === "" ? null : taskId, latest: req.latest };
      const fingerprint = filterFingerprint(filters);
      const key = tokens.decode("page_token", req.pageToken, fingerprint, ["micros", "int64"]);
      const rows = await buildDataList(sql, {
        ...filters,
        withData: req.view !== BuildDataView.BASIC,
        after: key ? { collectedAt: BigInt(key[0]!), buildDataId: BigInt(key[1]!) } : null,
        limit: limit + 1,
        maxBytes: responseMaxBytes,
        signal,
      });
      // The database cut the page at the byte budget: it returned the first record past it without data.
      let n = 0;
      while (n < Math.min(limit, rows.length) && rows[n]!.fits) n++;
      const page = rows.slice(0, n);
      const last = page[page.length - 1];
      return {
        buildData: page.map(buildDataToPb),
        nextPageToken: rows.length > n && last ? tokens.encode(fingerprint, [last.collectedAt.toString(), last.buildDataId.toString()]) : "",
      };
    },
  };
}
