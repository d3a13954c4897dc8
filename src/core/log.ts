import { pino, type DestinationStream, type Logger } from "pino";
import { redactUrls } from "./redact.js";

export type { Logger };

/** STATEMGMT_LOG_LEVEL / --log-level (config.ts). */
export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

/**
 * Lines written to stdout together: one write per call's line was a tenth of
 * a GetTask's server CPU (a syscall each, BENCHMARKS.md). A line waits at most
 * LOG_FLUSH_MS for the buffer to fill; pino writes what is left when the
 * process exits (even on process.exit); a SIGKILL loses at most that much.
 */
export const LOG_BUFFER_BYTES = 4096;
export const LOG_FLUSH_MS = 200;

/**
 * Structured JSON logs on stdout (or `destination`). Errors are logged with
 * URL passwords (design references' `user:pass@`) replaced by ***, wherever
 * they come from.
 */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: "drydock-statemgmt" },
    serializers: { err: redactedErr },
  };
  return pino(options, destination ?? pino.destination({ dest: 1, sync: false, minLength: LOG_BUFFER_BYTES, periodicFlush: LOG_FLUSH_MS }));
}

function redactedErr(err: unknown): unknown {
  const out = pino.stdSerializers.err(err as Error) as unknown;
  if (typeof out === "string") return redactUrls(out);
  if (typeof out !== "object" || out === null) return out;
  try {
    return JSON.parse(redactUrls(JSON.stringify(out, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v))));
  } catch {
    const e = out as { type?: string; message?: string };
    return { type: e.type, message: redactUrls(String(e.message)) };
  }
}
