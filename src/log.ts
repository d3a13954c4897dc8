import { pino, type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "./config.js";
import { redactUrls } from "./design/reference.js";

export type { Logger };

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
  return destination ? pino(options, destination) : pino(options);
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
