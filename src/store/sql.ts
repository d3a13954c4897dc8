// The one place where database failures become domain errors, and where a
// call's AbortSignal ends its wait for the database.
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
  if (code === SQLSTATE.queryCanceled) {
    if (signal?.aborted) return abortError(signal, err);
    // Not ours (we never cancel): an operator's pg_cancel_backend or a
    // server-side statement_timeout. Nothing was committed; retrying is safe.
    return new UnavailableError("the database cancelled the statement; retry with backoff", { cause: err });
  }
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
 * Awaits one query. When the call's signal aborts first, the call stops
 * waiting at once. A query still waiting for a connection is withdrawn (it
 * never reaches PostgreSQL). A query already running is left to finish, its
 * outcome ignored: inside a transaction the transaction then rolls back; a
 * single-statement write may still commit (gRPC's DEADLINE_EXCEEDED and
 * CANCELLED mean "outcome unknown" for that reason).
 *
 * We never send PostgreSQL a cancel request for a running query: a cancel
 * names a connection, not a query, and the pool's connections are shared by
 * every call. A cancel that arrives after its query finished hits whatever
 * query of another call runs next on that connection, so a cancelled GetTask
 * could fail a concurrent ListTasks or ClaimNextTask. Our statements are
 * short and indexed; letting one finish costs a connection for milliseconds.
 */
export function run<T extends readonly (object | undefined)[] = Row[]>(
  signal: AbortSignal | undefined,
  query: PendingQuery<T>,
): Promise<T> {
  if (signal?.aborted) return Promise.reject(abortError(signal, signal.reason));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      // postgres.js gives a query a `state` (its connection's backend) once a
      // connection takes it; before that, cancel() just drops it from the queue.
      if (!(query as unknown as { state?: unknown }).state) void query.cancel();
      query.then(undefined, () => {}); // finishes unobserved
      reject(abortError(signal!, signal!.reason));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    query.then(
      (rows) => {
        signal?.removeEventListener("abort", onAbort);
        resolve(rows as unknown as T);
      },
      (err: unknown) => {
        signal?.removeEventListener("abort", onAbort);
        reject(interpretError(err, signal));
      },
    );
  });
}
