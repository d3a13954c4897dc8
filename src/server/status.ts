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
  SequenceMismatchError,
  VersionMismatchError,
} from "../errors.js";

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
  [DeadlineExceededError, grpc.status.DEADLINE_EXCEEDED],
  [CancelledError, grpc.status.CANCELLED],
  [ResourceExhaustedError, grpc.status.RESOURCE_EXHAUSTED],
  [PermissionDeniedError, grpc.status.PERMISSION_DENIED],
  [DependencyUnavailableError, grpc.status.UNAVAILABLE],
];

export function toServiceError(err: unknown): grpc.ServiceError {
  if (err instanceof DomainError) {
    const code = CODES.find(([cls]) => err instanceof cls)?.[1] ?? grpc.status.INTERNAL;
    const details = [
      anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: err.reason, domain: ERROR_DOMAIN, metadata: err.metadata })),
    ];
    if (err instanceof InvalidArgumentError) {
      details.push(anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: err.violations })));
    }
    return serviceError(code, err.message, details);
  }
  return serviceError(grpc.status.INTERNAL, "internal error; the server log has the details", [
    anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: "INTERNAL", domain: ERROR_DOMAIN })),
  ]);
}

function serviceError(code: grpc.status, message: string, details: Any[]): grpc.ServiceError {
  const status = create(StatusSchema, { code, message, details });
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, status)));
  return Object.assign(new Error(message), { code, details: message, metadata }) as grpc.ServiceError;
}
