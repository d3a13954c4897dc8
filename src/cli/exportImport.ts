// `statemgmt export` and `statemgmt import`: the whole state to an export
// file (docs/migration.md "Export format") through the server's ExportState, and a file
// written back through ImportRecords. Both need the admin role, no database
// credentials. `import-drydock` (drydock.ts) sends its records the same way.
import { createReadStream } from "node:fs";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { createInterface } from "node:readline";
import { FORMAT_VERSION, FormatError, KINDS, emptyCounts, parseHeader, parseLine, type Kind } from "../export/format.js";
import type { Connection } from "./connection.js";
import { CliError, EXIT } from "./exit.js";
import type { Output } from "./terminal.js";

/** A line on stderr redrawn in place, only when stderr is a terminal; at most every 100 ms. */
export class Progress {
  private last = 0;
  private shown = false;
  constructor(private readonly stderr: NodeJS.WriteStream = process.stderr) {}
  get enabled(): boolean {
    return this.stderr.isTTY === true;
  }
  update(text: () => string, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    this.shown = true;
    this.stderr.write(`\r\x1b[2K${text()}`);
  }
  done(): void {
    if (this.shown) this.stderr.write("\r\x1b[2K");
    this.shown = false;
  }
}

const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

export interface ExportOptions {
  file?: string;
  includeSecrets: boolean;
}

/**
 * Streams the export to `file` (or stdout). A file is written under a
 * temporary name next to it and renamed once the stream ended OK, so a
 * failed export never leaves a file that looks whole; with secrets it is
 * created mode 0600.
 */
export async function exportState(conn: Connection, out: Output, o: ExportOptions, signal: AbortSignal): Promise<number> {
  const progress = new Progress(out.stderr);
  const tmp = o.file ? `${o.file}.partial-${process.pid}` : undefined;
  let fh: FileHandle | undefined;
  if (tmp) {
    try {
      fh = await open(tmp, "wx", o.includeSecrets ? 0o600 : 0o644);
    } catch (err) {
      throw new CliError(`cannot write ${o.file}: ${(err as Error).message}`, EXIT.OTHER);
    }
  }
  const call = conn.state.exportState({ includeSecrets: o.includeSecrets });
  const onAbort = () => call.cancel();
  signal.addEventListener("abort", onAbort, { once: true });
  let bytes = 0;
  let records = 0n;
  let tail = "";
  try {
    for await (const r of call) {
      bytes += r.chunk.length;
      records = r.recordsSoFar;
      tail = (tail + Buffer.from(r.chunk).toString("latin1")).slice(-4096);
      if (fh) await fh.write(r.chunk);
      else if (!out.stdout.write(r.chunk)) await new Promise((res) => out.stdout.once("drain", res));
      progress.update(() => `exporting: ${records} records, ${mib(bytes)}`);
    }
    if (fh) {
      await fh.sync();
      await fh.close();
      fh = undefined;
      await rename(tmp!, o.file!);
    }
  } catch (err) {
    progress.done();
    await fh?.close().catch(() => {});
    if (tmp) await rm(tmp, { force: true });
    if (signal.aborted) return EXIT.INTERRUPTED;
    throw err;
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
  progress.done();
  const trailer = tail.trimEnd().split("\n").pop() ?? "";
  const counts = (JSON.parse(trailer) as { counts: Record<Kind, number> }).counts;
  out.note(`exported ${records} records (${KINDS.map((k) => `${counts[k]} ${k}`).join(", ")}), ${bytes} bytes${o.file ? ` to ${o.file}` : ""}`);
  return EXIT.OK;
}

/** One record to send, with where it came from (for refusals). */
export interface Outgoing {
  line: number;
  json: string;
}

export interface KindCounts {
  added: number;
  skipped: number;
  refused: number;
}

export interface ImportSummary {
  counts: Record<Kind, KindCounts>;
  refusals: { line: number; kind: string; reason: string }[];
}

const BATCH_RECORDS = 1000;
const BATCH_BYTES = 4 * 1024 * 1024;

/** Sends records in ImportRecords calls of up to 1000 records (4 MiB), in order. */
export async function sendRecords(
  conn: Connection,
  records: AsyncIterable<Outgoing>,
  onProgress: (sent: number) => void,
  signal: AbortSignal,
): Promise<ImportSummary> {
  const summary: ImportSummary = {
    counts: Object.fromEntries(KINDS.map((k) => [k, { added: 0, skipped: 0, refused: 0 }])) as Record<Kind, KindCounts>,
    refusals: [],
  };
  let batch: Outgoing[] = [];
  let bytes = 0;
  let sent = 0;
  const flush = async () => {
    if (batch.length === 0) return;
    const r = await conn.state.importRecords(
      { formatVersion: FORMAT_VERSION, records: batch.map((b) => ({ line: BigInt(b.line), json: b.json })) },
      // A batch of large build data records may take longer than a lookup.
      { deadlineMs: Math.max(conn.deadlineMs, 60_000), signal },
    );
    for (const c of r.counts) {
      const k = summary.counts[c.kind as Kind];
      if (!k) continue;
      k.added += Number(c.added);
      k.skipped += Number(c.skipped);
      k.refused += Number(c.refused);
    }
    for (const f of r.refusals) summary.refusals.push({ line: Number(f.line), kind: f.kind, reason: f.reason });
    sent += batch.length;
    batch = [];
    bytes = 0;
    onProgress(sent);
  };
  for await (const rec of records) {
    if (signal.aborted) break;
    if (batch.length > 0 && (batch.length >= BATCH_RECORDS || bytes + rec.json.length > BATCH_BYTES)) await flush();
    batch.push(rec);
    bytes += rec.json.length;
  }
  if (!signal.aborted) await flush();
  return summary;
}

/** Prints the summary (a table, or JSON with -o json) and the refusals; the exit code. */
export function printSummary(out: Output, s: ImportSummary, describe: (line: number) => string = (l) => `line ${l}`): number {
  if (out.mode === "json") {
    out.print(JSON.stringify({ counts: s.counts, refusals: s.refusals }, null, 2));
  } else {
    out.print(`${"KIND".padEnd(20)} ${"ADDED".padStart(8)} ${"SKIPPED".padStart(8)} ${"REFUSED".padStart(8)}`);
    for (const k of KINDS) {
      const c = s.counts[k];
      out.print(`${k.padEnd(20)} ${String(c.added).padStart(8)} ${String(c.skipped).padStart(8)} ${String(c.refused).padStart(8)}`);
    }
  }
  for (const r of s.refusals) out.note(`refused: ${describe(r.line)}: ${r.reason}`);
  return s.refusals.length > 0 ? EXIT.CONFLICT : EXIT.OK;
}

/** Lines of a file, numbered from 1. */
async function* lines(file: string): AsyncIterable<{ n: number; text: string }> {
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  let n = 0;
  for await (const text of rl) yield { n: ++n, text };
}

/**
 * Checks a whole export file before anything is sent: the header, every
 * record (as the server will read it), the order of kinds, and the trailer's
 * counts (a file cut short has none). Throws naming the first wrong line.
 */
export async function checkFile(
  file: string,
  onLine: (n: number) => void = () => {},
): Promise<{ records: number; counts: Record<Kind, number>; trailerLine: number }> {
  const counts = emptyCounts();
  let kindAt = 0;
  let trailerAt = 0;
  let last = 0;
  const bad = (n: number, what: string): never => {
    throw new CliError(`${file}: line ${n} ${what}; nothing was imported`, EXIT.USAGE);
  };
  try {
    for await (const { n, text } of lines(file)) {
      last = n;
      onLine(n);
      if (n === 1) {
        try {
          parseHeader(text);
        } catch (err) {
          if (err instanceof FormatError) bad(1, err.message);
          throw err;
        }
        continue;
      }
      if (trailerAt) bad(n, `follows the trailer (line ${trailerAt}), which must be the last line`);
      let r: ReturnType<typeof parseLine>;
      try {
        r = parseLine(text);
      } catch (err) {
        if (err instanceof FormatError) bad(n, err.message);
        throw err;
      }
      if (r.kind === "end") {
        trailerAt = n;
        for (const k of KINDS) {
          if (r.counts[k] !== counts[k])
            bad(n, `(the trailer) counts ${r.counts[k]} ${k} records, but the file holds ${counts[k]}: it is incomplete or was edited`);
        }
        continue;
      }
      const at = KINDS.indexOf(r.kind);
      if (at < kindAt) bad(n, `is a ${r.kind} record after ${KINDS[kindAt]} records; records come in the order ${KINDS.join(", ")}`);
      kindAt = at;
      counts[r.kind]++;
    }
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`, EXIT.USAGE);
  }
  if (last === 0) throw new CliError(`${file} is empty; nothing was imported`, EXIT.USAGE);
  if (!trailerAt) throw new CliError(`${file} ends at line ${last} without its trailer: the file is truncated; nothing was imported`, EXIT.USAGE);
  return { records: KINDS.reduce((a, k) => a + counts[k], 0), counts, trailerLine: trailerAt };
}

/** Checks the file, then sends its records. */
export async function importFile(conn: Connection, out: Output, file: string, signal: AbortSignal): Promise<number> {
  const progress = new Progress(out.stderr);
  const { records, trailerLine } = await checkFile(file, (n) => progress.update(() => `checking ${file}: line ${n}`));
  progress.done();
  async function* recordsOf(): AsyncIterable<Outgoing> {
    for await (const { n, text } of lines(file)) {
      if (n === 1) continue;
      if (n >= trailerLine) break;
      yield { line: n, json: text };
    }
  }
  const summary = await sendRecords(conn, recordsOf(), (sent) => progress.update(() => `importing: ${sent} of ${records} records`, true), signal).catch(
    (err: unknown) => {
      if (signal.aborted) return undefined;
      throw err;
    },
  );
  progress.done();
  if (!summary || signal.aborted) {
    out.note("interrupted: the records sent so far are stored (importing the file again skips them)");
    return EXIT.INTERRUPTED;
  }
  return printSummary(out, summary);
}
