// ExportState and ImportRecords (admin only, auth/roles.ts): the whole state
// as an export file, and records of one written back. The format is
// src/export/format.ts; the SQL store/exportImport.ts.
import { InvalidArgumentError } from "../core/errors.js";
import { FORMAT_VERSION, FormatError, headerLine, emptyCounts, parseRecordLine, trailerLine, ts, type DataRecord } from "../export/format.js";
import { PushStream } from "../contract/push.js";
import { exportRecords, importRecords, type ImportItem } from "../store/exportImport.js";
import type { Db } from "../store/transactions.js";
import { VERSION } from "../core/version.js";
import type { StateImpl } from "./tasks.js";

/** Bytes of one ExportStateResponse chunk. */
export const EXPORT_CHUNK_BYTES = 1024 * 1024;
/** Records one ImportRecords call takes. */
export const IMPORT_MAX_RECORDS = 10_000;

export function exportImportRpcs(db: Db): StateImpl {
  return {
    exportState(req, ctx) {
      return new PushStream(async (sink) => {
        const counts = emptyCounts();
        let records = 0;
        let pending: Buffer[] = [];
        let pendingBytes = 0;
        const flush = async () => {
          const all = Buffer.concat(pending);
          pending = [];
          pendingBytes = 0;
          for (let at = 0; at < all.length; at += EXPORT_CHUNK_BYTES) {
            if (ctx.signal.aborted) throw ctx.signal.reason;
            if (!sink.write({ chunk: all.subarray(at, at + EXPORT_CHUNK_BYTES), recordsSoFar: BigInt(records) })) await sink.ready();
          }
        };
        const line = async (text: string) => {
          const b = Buffer.from(`${text}\n`);
          pending.push(b);
          pendingBytes += b.length;
          if (pendingBytes >= EXPORT_CHUNK_BYTES) await flush();
        };
        await db.tx.transaction({ signal: ctx.signal }, async (tx) => {
          // A snapshot however long the stream takes; a slow reader must not
          // have it cut by the statement or idle-in-transaction timeouts.
          await tx
            .unsafe(
              "set transaction isolation level repeatable read, read only; set local statement_timeout = 0; set local idle_in_transaction_session_timeout = 0",
            )
            .simple();
          const [{ now }] = await tx<{ now: bigint }[]>`select now() as now`;
          await line(headerLine(`drydock-statemgmt ${VERSION}`, req.includeSecrets, ts(now)));
          await exportRecords(tx, req.includeSecrets, async (r: DataRecord) => {
            counts[r.kind]++;
            records++;
            await line(JSON.stringify(r));
          });
        });
        await line(trailerLine(counts));
        await flush();
        ctx.logFields.records = records;
      });
    },

    async importRecords(req, ctx) {
      if (req.formatVersion !== FORMAT_VERSION) {
        throw InvalidArgumentError.field("format_version", `is ${req.formatVersion}; this server reads version ${FORMAT_VERSION} of the export format`);
      }
      if (req.records.length === 0 || req.records.length > IMPORT_MAX_RECORDS) {
        throw InvalidArgumentError.field("records", `has ${req.records.length} entries; send 1 to ${IMPORT_MAX_RECORDS}`);
      }
      const items: ImportItem[] = [];
      const unreadable: { line: number; reason: string }[] = [];
      req.records.forEach((r, i) => {
        if (r.line < 1n || r.line > BigInt(Number.MAX_SAFE_INTEGER))
          throw InvalidArgumentError.field(`records[${i}].line`, `is ${r.line}; it must be between 1 and ${Number.MAX_SAFE_INTEGER}`);
        try {
          items.push({ line: Number(r.line), record: parseRecordLine(r.json) });
        } catch (err) {
          if (!(err instanceof FormatError)) throw err;
          unreadable.push({ line: Number(r.line), reason: err.message });
        }
      });
      const outcome =
        items.length === 0
          ? { counts: new Map(), refusals: [] }
          : await db.tx.transaction({ signal: ctx.signal, deadline: ctx.deadline }, (tx) => importRecords(tx, items));
      ctx.logFields.records = req.records.length;
      return {
        counts: [...outcome.counts].map(([kind, c]) => ({ kind, added: BigInt(c.added), skipped: BigInt(c.skipped), refused: BigInt(c.refused) })),
        refusals: [
          ...unreadable.map((u) => ({ line: BigInt(u.line), kind: "", reason: u.reason })),
          ...outcome.refusals.map((r) => ({ line: BigInt(r.line), kind: r.kind, reason: r.reason })),
        ].sort((a, b) => (a.line < b.line ? -1 : a.line > b.line ? 1 : 0)),
      };
    },
  };
}
