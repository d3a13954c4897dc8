// The contract between the design fetcher and its scheme drivers.
import type { RequestContext } from "../http/client.js";

export interface DesignDocument {
  content: Buffer;
  /** From the source when it says (HTTP Content-Type); "" when unknown. */
  contentType: string;
}

/** The call's signal and deadline (by which the whole fetch, retries included, must be done), and a size bound. */
export interface FetchContext extends RequestContext {
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
