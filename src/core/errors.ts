// Domain errors. The store, the fetcher and the RPC layer throw these; only
// src/server/status.ts turns them into gRPC statuses. Each has a stable
// `reason` (sent to clients as google.rpc.ErrorInfo.reason) and the fields a
// caller needs to act on it.

export interface FieldViolation {
  /**
   * Request field path in proto (snake_case) form, e.g. "task.result.message";
   * "" for the request as a whole (bytes that do not decode as the message).
   */
  field: string;
  description: string;
}

export abstract class DomainError extends Error {
  abstract readonly reason: string;
  /** Extra machine-readable detail, sent as ErrorInfo.metadata. */
  readonly metadata: Record<string, string>;
  constructor(message: string, metadata: Record<string, string> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.metadata = metadata;
  }
}

/**
 * A domain error whose reason the thrower names (the classes below differ
 * only in the gRPC code status.ts maps them to).
 */
abstract class ReasonedError extends DomainError {
  constructor(
    readonly reason: string,
    message: string,
    metadata: Record<string, string> = {},
    options?: { cause?: unknown },
  ) {
    super(message, metadata, options);
  }
}

/**
 * Violations sent back, at most: the status travels in HTTP/2 trailers, and
 * clients refuse trailers over 8 KiB (grpc.max_metadata_size); a request with
 * 1,000 bad messages once produced a status no client could read.
 */
export const MAX_VIOLATIONS = 20;

/** The request is malformed; nothing was read or written. */
export class InvalidArgumentError extends DomainError {
  readonly reason = "INVALID_ARGUMENT";
  /** The first MAX_VIOLATIONS violations, then one saying how many more there were. */
  readonly violations: FieldViolation[];
  constructor(all: FieldViolation[]) {
    const more = all.length - MAX_VIOLATIONS;
    const shown = more > 0 ? [...all.slice(0, MAX_VIOLATIONS), { field: "", description: `and ${more} more violations not listed` }] : all;
    const head = all.slice(0, 3).map((v) => (v.field === "" ? v.description : `${v.field}: ${v.description}`));
    super(all.length > 3 ? `${head.join("; ")}; and ${all.length - 3} more (see BadRequest details)` : head.join("; "));
    this.violations = shown;
  }
  static field(field: string, description: string): InvalidArgumentError {
    return new InvalidArgumentError([{ field, description }]);
  }
}

export class NotFoundError extends DomainError {
  readonly reason: string;
  /** `key`: the ErrorInfo metadata key naming the resource (default <type>_id). */
  constructor(
    readonly resourceType: string,
    readonly resourceName: string,
    message?: string,
    key = `${snake(resourceType)}_id`,
  ) {
    super(message ?? `${resourceType} ${resourceName} does not exist`, { [key]: resourceName });
    this.reason = `${snake(resourceType).toUpperCase()}_NOT_FOUND`;
  }
}

export class AlreadyExistsError extends DomainError {
  readonly reason: string;
  /** `key`: the ErrorInfo metadata key naming the resource (default <type>_id). */
  constructor(
    readonly resourceType: string,
    readonly resourceName: string,
    message?: string,
    key = `${snake(resourceType)}_id`,
  ) {
    super(message ?? `${resourceType} ${resourceName} already exists`, { [key]: resourceName });
    this.reason = `${snake(resourceType).toUpperCase()}_ALREADY_EXISTS`;
  }
}

/** Optimistic concurrency: the caller's expected version is not current. */
export class VersionMismatchError extends DomainError {
  readonly reason = "VERSION_MISMATCH";
  constructor(taskId: string, expected: bigint, current: bigint) {
    super(`task ${taskId} is at version ${current}, not the expected ${expected}; re-read it and retry`, {
      task_id: taskId,
      expected_version: String(expected),
      current_version: String(current),
    });
  }
}

/** A conditional append: the task's next message sequence is not the one the caller named. */
export class SequenceMismatchError extends DomainError {
  readonly reason = "SEQUENCE_MISMATCH";
  constructor(taskId: string, expected: bigint, next: bigint) {
    super(
      `task ${taskId} would give the first message sequence ${next}, not the requested ${expected}` +
        (next > expected ? "; messages from a previous attempt may already be there (ListResultMessages after it)" : ""),
      { task_id: taskId, first_sequence: String(expected), next_sequence: String(next) },
    );
  }
}

/**
 * A concurrency conflict ended the call and nothing was written (a lock wait
 * ran out, a transaction was rolled back, a claim kept racing): retrying,
 * with backoff, is safe.
 */
export class AbortedError extends ReasonedError {}

/** The operation is not allowed in the resource's current state. */
export class FailedPreconditionError extends ReasonedError {}

/**
 * The database cannot be reached or refused the connection: reason
 * DATABASE_UNAVAILABLE, or DATABASE_CONNECT_TIMEOUT when no connection could
 * be opened within the connect timeout (store/sql.ts).
 */
export class UnavailableError extends DomainError {
  readonly reason: string;
  constructor(message: string, options?: { cause?: unknown; reason?: string; metadata?: Record<string, string> }) {
    super(message, options?.metadata ?? {}, options);
    this.reason = options?.reason ?? "DATABASE_UNAVAILABLE";
  }
}

/** The call's deadline passed before it finished; its outcome is unknown (see store/sql.ts run). */
export class DeadlineExceededError extends DomainError {
  readonly reason = "DEADLINE_EXCEEDED";
  constructor(message = "deadline exceeded before the call finished; a write may or may not have been applied", options?: { cause?: unknown }) {
    super(message, {}, options);
  }
}

/** The client cancelled the call; as with a deadline, a write's outcome is unknown. */
export class CancelledError extends DomainError {
  readonly reason = "CANCELLED";
  constructor(message = "call cancelled by the client", options?: { cause?: unknown }) {
    super(message, {}, options);
  }
}

function snake(s: string): string {
  return s
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/[\s-]+/g, "_")
    .toLowerCase();
}

/** The server is shutting down; the client should retry on another replica. */
export class ShuttingDownError extends DomainError {
  readonly reason = "SHUTTING_DOWN";
  constructor() {
    super("the server is shutting down; retry on another replica");
  }
}

/**
 * A stream ended because its connection reached its maximum age (the server
 * already asked the client to move to a new connection): resume on a new call.
 */
export class ConnectionAgedError extends DomainError {
  readonly reason = "CONNECTION_MAX_AGE";
  constructor() {
    super("the connection reached its maximum age; resume on a new call (a watch with after_sequence), which opens a new connection");
  }
}

/** A bounded resource ran out, e.g. a watch stream whose client stopped reading. */
export class ResourceExhaustedError extends ReasonedError {}

/** The caller may not read this resource (e.g. a file outside the design roots). */
export class PermissionDeniedError extends ReasonedError {}

/**
 * The call carries no credentials, or ones the server does not accept
 * (unknown, expired, malformed). The message never quotes the credential.
 */
export class UnauthenticatedError extends DomainError {
  constructor(
    readonly reason: "UNAUTHENTICATED" | "TOKEN_INVALID" | "IDENTITY_KEY_REQUIRED",
    message: string,
  ) {
    super(message);
  }
}

/** A dependency (e.g. a design source) could not be reached; retrying later may work. */
export class DependencyUnavailableError extends ReasonedError {}

/** The reason a call's signal carries when its deadline passed. */
export class DeadlineReason extends Error {}

/** The domain error for an aborted call: its own when it has one, else deadline or cancellation. */
export function abortError(signal: AbortSignal, cause?: unknown): DomainError {
  if (signal.reason instanceof DomainError) return signal.reason;
  return signal.reason instanceof DeadlineReason
    ? new DeadlineExceededError(undefined, { cause: cause ?? signal.reason })
    : new CancelledError(undefined, { cause: cause ?? signal.reason });
}
