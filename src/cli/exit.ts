// Exit codes of bin/statemgmt and the one-line error text: the part of the
// CLI that scripts depend on (docs/cli.md "Exit codes").
import * as grpc from "@grpc/grpc-js";
import { StateError, stateError } from "../client/stateClient.js";

/** Exit codes; documented in docs/cli.md and in `statemgmt --help`. */
export const EXIT = {
  OK: 0,
  /** A watched task finished with FAILURE, PARTIAL_SUCCESS or no outcome; `health` not SERVING. */
  TASK_FAILED: 1,
  /** Bad usage: unknown command or option, bad value, unreadable input file, INVALID_ARGUMENT. */
  USAGE: 2,
  /** A watched task was TERMINATED. */
  TASK_TERMINATED: 3,
  /** NOT_FOUND: no such task, design or build data. */
  NOT_FOUND: 4,
  /** The task's state forbids the call: ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED. */
  CONFLICT: 5,
  /** The server is not reachable or did not answer in time: UNAVAILABLE, DEADLINE_EXCEEDED. */
  UNAVAILABLE: 6,
  /** UNAUTHENTICATED or PERMISSION_DENIED. */
  DENIED: 7,
  /** Any other failure (INTERNAL, RESOURCE_EXHAUSTED, UNKNOWN, a local I/O error). */
  OTHER: 8,
  /** Ended by Ctrl-C (SIGINT), as shells report 128 + 2. */
  INTERRUPTED: 130,
} as const;

/**
 * Resolves once everything written to `stream` so far has left the process.
 * A write to a pipe is asynchronous: what does not fit in the pipe (64 KiB on
 * Linux) waits in the process, and process.exit() would drop it. Write
 * callbacks run in order, so an empty write's runs after all earlier ones.
 */
export function written(stream: NodeJS.WritableStream & { destroyed?: boolean; writableEnded?: boolean }): Promise<void> {
  if (stream.destroyed || stream.writableEnded) return Promise.resolve();
  return new Promise((resolve) => stream.write("", () => resolve()));
}

/**
 * Exits with `code` once stdout and stderr have been written out, however
 * slowly their reader reads: the only way the CLI ends after doing its work.
 */
export async function exitWhenWritten(code: number): Promise<never> {
  process.exitCode = code;
  await Promise.all([written(process.stdout), written(process.stderr)]);
  process.exit(code);
}

/** A failure the CLI reports itself, with its exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = "CliError";
  }
}

const CODE_EXIT: Partial<Record<grpc.status, number>> = {
  [grpc.status.INVALID_ARGUMENT]: EXIT.USAGE,
  [grpc.status.NOT_FOUND]: EXIT.NOT_FOUND,
  [grpc.status.ALREADY_EXISTS]: EXIT.CONFLICT,
  [grpc.status.FAILED_PRECONDITION]: EXIT.CONFLICT,
  [grpc.status.ABORTED]: EXIT.CONFLICT,
  [grpc.status.UNAVAILABLE]: EXIT.UNAVAILABLE,
  [grpc.status.DEADLINE_EXCEEDED]: EXIT.UNAVAILABLE,
  [grpc.status.UNAUTHENTICATED]: EXIT.DENIED,
  [grpc.status.PERMISSION_DENIED]: EXIT.DENIED,
};

function isGrpcError(err: unknown): boolean {
  return err instanceof StateError || (typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "number" && "metadata" in err);
}

/** What the command line asked for: the hints depend on it. */
export interface FailureContext {
  /** TLS was asked for (--tls, --cacert or --cert). */
  tls: boolean;
  cacert: boolean;
  /** A token was given (--token or STATEMGMT_TOKEN). */
  token: boolean;
}

/** Nothing listening, or no such host: what "server H:P:" and the error code already say. */
const NOTHING_THERE = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT/;
/** A TLS client at a plaintext port. */
const NOT_TLS = /before secure TLS connection was established|wrong version number|EPROTO|ECONNRESET/;
/** The server's certificate did not verify. */
const BAD_CERT = /certificate|self[- ]signed|altnames|ERR_TLS_CERT/i;

/**
 * What to do about a failure, from the command line: the server's message
 * speaks of gRPC metadata and connections, the CLI's answer is an option.
 */
function hintFor(e: StateError, ctx: FailureContext | undefined, server: string): string | undefined {
  if (!ctx) return undefined;
  if (e.code === grpc.status.UNAUTHENTICATED) {
    return ctx.token
      ? "the server refused the token given with --token or STATEMGMT_TOKEN: check that it is the whole token and that it has not expired or been revoked"
      : "give the CLI a token with --token TOKEN or STATEMGMT_TOKEN=TOKEN (it sends it as `authorization: Bearer TOKEN`)";
  }
  // grpc-js's own UNAVAILABLE for a connection that was not set up, though something is there.
  if (e.code !== grpc.status.UNAVAILABLE || e.reason !== grpc.status[e.code] || !/No connection established/.test(e.message) || NOTHING_THERE.test(e.message))
    return undefined;
  if (!ctx.tls)
    return `${server} did not take a plaintext connection: if it serves TLS, add --cacert FILE (the CA that issued its certificate) or --tls (the system's CAs)`;
  if (NOT_TLS.test(e.message)) return `${server} did not answer TLS: if it serves plaintext, leave out --tls, --cacert, --cert and --key`;
  if (BAD_CERT.test(e.message)) {
    return ctx.cacert
      ? "the server's certificate did not verify against --cacert: give the CA that issued it, and a --server name or address the certificate names"
      : "the server's certificate did not verify against the system's CAs: give the CA that issued it with --cacert FILE";
  }
  return undefined;
}

/**
 * The line printed for a failure (without "error: ") and the exit code:
 * `NOT_FOUND TASK_NOT_FOUND: task … does not exist` for a server error (the
 * reason is left out when the server gave none), `UNAVAILABLE: server H:P: …`
 * when it could not be reached.
 */
export function describeFailure(err: unknown, server: string, ctx?: FailureContext): { line: string; exitCode: number; hint?: string } {
  if (err instanceof CliError) return { line: err.message, exitCode: err.exitCode };
  if (isGrpcError(err)) {
    const e = stateError(err);
    const code = grpc.status[e.code] ?? "UNKNOWN";
    const head = e.reason && e.reason !== code ? `${code} ${e.reason}` : code;
    // grpc-js's own UNAVAILABLE (nothing listening, TLS refused) names no server.
    const where = e.code === grpc.status.UNAVAILABLE && e.reason === code ? `server ${server}: ` : "";
    const fields = e.fieldViolations.length > 0 && !e.fieldViolations.every((v) => e.message.includes(v.field));
    const detail = fields ? ` (${e.fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ")})` : "";
    return { line: `${head}: ${where}${oneLine(e.message)}${detail}`, exitCode: CODE_EXIT[e.code] ?? EXIT.OTHER, hint: hintFor(e, ctx, server) };
  }
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === "string" && typeof e.syscall === "string") return { line: oneLine(e.message), exitCode: EXIT.OTHER };
  return { line: oneLine(err instanceof Error ? err.message : String(err)), exitCode: EXIT.OTHER };
}

/** One line; grpc-js's empty trailing "Resolution note:" dropped. */
function oneLine(s: string): string {
  return s
    .replace(/\s*\n\s*/g, " ")
    .replace(/\.?\s*Resolution note:\s*$/, "")
    .trim();
}
