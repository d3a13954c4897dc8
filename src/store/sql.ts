// The one place where database failures become domain errors, and where a
// call's AbortSignal cancels the query it is waiting on.
import type { PendingQuery, Row } from "postgres";
import { abortError, DomainError, UnavailableError } from "../errors.js";

/** Named SQLSTATEs we act on. */
export const SQLSTATE = {
  uniqueViolation: "23505",
  foreignKeyViolation: "23503",
  checkViolation: "23514",
  queryCanceled: "57014",
  adminShutdown: "57P01",
  crashShutdown: "57P02",
  cannotConnectNow: "57P03",
  tooManyConnections: "53300",
  invalidAuthorization: "28000",
  invalidPassword: "28P01",
  unknownDatabase: "3D000",
} as const;

export { DeadlineReason } from "../errors.js";

/** postgres.js connection-level error codes (not SQLSTATEs). */
const CONNECTION_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENOTFOUND",
]);

export function pgCode(err: unknown): string | undefined {
  return typeof err === "object" && err !== null && "code" in err ? String((err as { code: unknown }).code) : undefined;
}

/**
 * Translates driver errors the service understands (cancellation, lost
 * database); anything else is returned unchanged and becomes INTERNAL.
 */
export function interpretError(err: unknown, signal?: AbortSignal): unknown {
  if (err instanceof DomainError) return err;
  const code = pgCode(err);
  if (code === SQLSTATE.queryCanceled && signal?.aborted) return abortError(signal, err);
  if (
    (code && CONNECTION_CODES.has(code)) ||
    code === SQLSTATE.adminShutdown ||
    code === SQLSTATE.crashShutdown ||
    code === SQLSTATE.cannotConnectNow ||
    code === SQLSTATE.tooManyConnections ||
    code === SQLSTATE.invalidAuthorization ||
    code === SQLSTATE.invalidPassword ||
    code === SQLSTATE.unknownDatabase ||
    code?.startsWith("08")
  ) {
    return new UnavailableError("the database is unavailable; retry with backoff", { cause: err });
  }
  return err;
}


/** Throws the matching error if the call is already over. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortError(signal, signal.reason);
}

/**
 * Awaits one query; when the call's signal aborts first, asks PostgreSQL to
 * cancel it, so no work outlives the call.
 */
export async function run<T extends readonly (object | undefined)[] = Row[]>(
  signal: AbortSignal | undefined,
  query: PendingQuery<T>,
): Promise<T> {
  throwIfAborted(signal);
  const onAbort = () => void query.cancel();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return (await query) as T;
  } catch (err) {
    throw interpretError(err, signal);
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}
