// The contract between the design fetcher and its scheme drivers.

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
