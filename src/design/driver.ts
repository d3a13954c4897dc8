// The contract between the design fetcher and its scheme drivers.
import { abortError } from "../errors.js";

export interface DesignDocument {
  content: Buffer;
  /** From the source when it says (HTTP Content-Type); "" when unknown. */
  contentType: string;
}

export interface FetchContext {
  /** Aborted when the call is over. */
  signal: AbortSignal;
  /** Epoch ms by which the whole fetch, retries included, must be done. */
  deadline: number;
  /** Largest document accepted; anything larger is refused without reading it all. */
  maxBytes: number;
}

/**
 * Fetches the document a reference names, or throws a domain error:
 * InvalidArgumentError (bad reference), NotFoundError, PermissionDeniedError,
 * FailedPreconditionError, DependencyUnavailableError, ResourceExhaustedError
 * (too large). `redacted` is the reference without credentials, for messages.
 */
export interface DesignDriver {
  fetch(url: URL, redacted: string, ctx: FetchContext): Promise<DesignDocument>;
}

/** Scheme (without ":") → driver. */
export type DriverRegistry = ReadonlyMap<string, DesignDriver>;

/**
 * Waits for shared work with the caller's own signal: the caller stops
 * waiting when it aborts, the work goes on for the others.
 */
export function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => (signal.removeEventListener("abort", onAbort), resolve(v)),
      (e) => (signal.removeEventListener("abort", onAbort), reject(e)),
    );
  });
}
