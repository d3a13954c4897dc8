// The one mapping from errors to gRPC statuses. Domain errors keep their
// message and get structured details (google.rpc.Status in
// grpc-status-details-bin: ErrorInfo, plus BadRequest for invalid arguments);
// anything else becomes INTERNAL with a neutral message: no SQL text or stack
// trace reaches a client (the adapter logs the original).
import * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, type Any } from "@bufbuild/protobuf/wkt";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import {
  AbortedError,
  AlreadyExistsError,
  CancelledError,
  ConnectionAgedError,
  DeadlineExceededError,
  DomainError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  PermissionDeniedError,
  DependencyUnavailableError,
  ShuttingDownError,
  UnavailableError,
  UnauthenticatedError,
  SequenceMismatchError,
  VersionMismatchError,
} from "../core/errors.js";

/** ErrorInfo.domain of every error this service sends. */
export const ERROR_DOMAIN = "statemgmt.drydock.airshipit.org";

const CODES: [new (...a: never[]) => DomainError, grpc.status][] = [
  [InvalidArgumentError, grpc.status.INVALID_ARGUMENT],
  [NotFoundError, grpc.status.NOT_FOUND],
  [AlreadyExistsError, grpc.status.ALREADY_EXISTS],
  [VersionMismatchError, grpc.status.ABORTED],
  [SequenceMismatchError, grpc.status.ABORTED],
  [AbortedError, grpc.status.ABORTED],
  [FailedPreconditionError, grpc.status.FAILED_PRECONDITION],
  [UnavailableError, grpc.status.UNAVAILABLE],
  [ShuttingDownError, grpc.status.UNAVAILABLE],
  [ConnectionAgedError, grpc.status.UNAVAILABLE],
  [DeadlineExceededError, grpc.status.DEADLINE_EXCEEDED],
  [CancelledError, grpc.status.CANCELLED],
  [ResourceExhaustedError, grpc.status.RESOURCE_EXHAUSTED],
  [PermissionDeniedError, grpc.status.PERMISSION_DENIED],
  [DependencyUnavailableError, grpc.status.UNAVAILABLE],
  [UnauthenticatedError, grpc.status.UNAUTHENTICATED],
];

export function toServiceError(err: unknown): grpc.ServiceError {
  if (err instanceof DomainError) {
    const code = CODES.find(([cls]) => err instanceof cls)?.[1] ?? grpc.status.INTERNAL;
    const violations = err instanceof InvalidArgumentError ? err.violations : undefined;
    return withinTrailerBudget(({ cut, maxViolations }) => {
      const metadata = Object.fromEntries(Object.entries(err.metadata).map(([k, v]) => [k, cut(v)]));
      const details = [anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: err.reason, domain: ERROR_DOMAIN, metadata }))];
      if (violations) {
        const shown = violations.slice(0, maxViolations).map((v) => ({ field: cut(v.field), description: cut(v.description) }));
        if (violations.length > maxViolations) shown.push({ field: "", description: `and ${violations.length - maxViolations} more violations not listed` });
        details.push(anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: shown })));
      }
      return serviceError(code, cut(err.message), details);
    });
  }
  return serviceError(grpc.status.INTERNAL, "internal error; the server log has the details", [
    anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "INTERNAL", domain: ERROR_DOMAIN })),
  ]);
}

/**
 * Most bytes a status may take in the trailers: grpc-message (percent-encoded)
 * plus grpc-status-details-bin (base64). Clients refuse trailers over 8 KiB
 * (C-core's grpc.max_metadata_size, used by Python, C++, Ruby ...), and
 * messages quote input: a 2,048-character design_ref of emoji is 24 KiB once
 * percent-encoded. Over the budget, every string is shortened, then the list
 * of violations, until the status fits.
 */
export const TRAILER_BUDGET = 6 * 1024;
const STEPS = [
  { maxChars: Infinity, maxViolations: Infinity },
  { maxChars: 1024, maxViolations: Infinity },
  { maxChars: 256, maxViolations: Infinity },
  { maxChars: 64, maxViolations: Infinity },
  { maxChars: 64, maxViolations: 5 },
];

function withinTrailerBudget(build: (o: { cut: (s: string) => string; maxViolations: number }) => grpc.ServiceError): grpc.ServiceError {
  let se: grpc.ServiceError | undefined;
  for (const { maxChars, maxViolations } of STEPS) {
    se = build({ cut: (s) => (s.length <= maxChars ? s : `${s.slice(0, maxChars)}…`), maxViolations });
    if (trailerBytes(se) <= TRAILER_BUDGET) break;
  }
  return se!;
}

function trailerBytes(se: grpc.ServiceError): number {
  const bin = se.metadata.get("grpc-status-details-bin")[0] as Buffer;
  return encodeURI(se.details).length + Math.ceil(bin.length / 3) * 4;
}

/** Lone UTF-16 surrogates (e.g. input quoted up to a length that cut a pair in two). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function serviceError(code: grpc.status, text: string, details: Any[]): grpc.ServiceError {
  // grpc-js sends the message through encodeURI, which throws on a lone
  // surrogate: the status would never be sent. U+FFFD instead.
  const message = text.replace(LONE_SURROGATE, "\uFFFD");
  const status = create(StatusSchema, { code, message, details });
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  return Object.assign(new Error(message), { code, details: message, metadata }) as grpc.ServiceError;
}
