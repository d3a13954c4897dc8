// The grpc_code label's values: the names go-grpc-prometheus writes (Go's
// codes.Code String()), not grpc-js's enum names, so dashboards and alerts
// written for Go services (grpc_code="NotFound") work unchanged.
import { status } from "@grpc/grpc-js";

const NAMES: Record<status, string> = {
  [status.OK]: "OK",
  [status.CANCELLED]: "Canceled",
  [status.UNKNOWN]: "Unknown",
  [status.INVALID_ARGUMENT]: "InvalidArgument",
  [status.DEADLINE_EXCEEDED]: "DeadlineExceeded",
  [status.NOT_FOUND]: "NotFound",
  [status.ALREADY_EXISTS]: "AlreadyExists",
  [status.PERMISSION_DENIED]: "PermissionDenied",
  [status.RESOURCE_EXHAUSTED]: "ResourceExhausted",
  [status.FAILED_PRECONDITION]: "FailedPrecondition",
  [status.ABORTED]: "Aborted",
  [status.OUT_OF_RANGE]: "OutOfRange",
  [status.UNIMPLEMENTED]: "Unimplemented",
  [status.INTERNAL]: "Internal",
  [status.UNAVAILABLE]: "Unavailable",
  [status.DATA_LOSS]: "DataLoss",
  [status.UNAUTHENTICATED]: "Unauthenticated",
};

/** The grpc_code label of a status code; a code outside the 17 reads as Go writes it, "Code(N)". */
export function grpcCodeLabel(code: status): string {
  return NAMES[code] ?? `Code(${code})`;
}
