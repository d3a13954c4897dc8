"""Typed exceptions built from the google.rpc.Status every error of the service carries.

The server sends a google.rpc.Status in the ``grpc-status-details-bin`` trailer
with a google.rpc.ErrorInfo (domain ``statemgmt.drydock.airshipit.org``, a
stable ``reason``, string metadata) and, for INVALID_ARGUMENT, a
google.rpc.BadRequest. :func:`from_rpc_error` turns a ``grpc.RpcError`` into
the most specific class below: by reason first, then by status code.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import grpc

from ._proto.google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "statemgmt.drydock.airshipit.org"


class StateError(Exception):
    """Any failure of a call. ``code`` is the grpc.StatusCode, ``reason`` the
    ErrorInfo reason ("" when the server sent none, e.g. a transport failure),
    ``metadata`` the ErrorInfo metadata (str to str)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: Optional[Dict[str, str]] = None,
        field_violations: Optional[List[Tuple[str, str]]] = None,
    ):
        super().__init__(f"{code.name}: {message}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: Dict[str, str] = dict(metadata or {})
        #: (field, description) pairs of a google.rpc.BadRequest.
        self.field_violations: List[Tuple[str, str]] = list(field_violations or [])

    def _int(self, key: str) -> Optional[int]:
        value = self.metadata.get(key, "")
        return int(value) if value.lstrip("-").isdigit() else None


class InvalidArgument(StateError):
    """A malformed request; ``field_violations`` names every offending field."""


class NotFound(StateError):
    pass


class TaskNotFound(NotFound):
    @property
    def task_id(self) -> str:
        return self.metadata.get("task_id", "")


class AlreadyExists(StateError):
    pass


class TaskAlreadyExists(AlreadyExists):
    @property
    def task_id(self) -> str:
        return self.metadata.get("task_id", "")


class Aborted(StateError):
    """A conflict; nothing was written and a retry with backoff is safe."""


class VersionMismatch(Aborted):
    """UpdateTask's expected_version was not current."""

    @property
    def current_version(self) -> Optional[int]:
        return self._int("current_version")


class SequenceMismatch(Aborted):
    """AppendResultMessages' first_sequence was not the task's next sequence."""

    @property
    def next_sequence(self) -> Optional[int]:
        return self._int("next_sequence")


class LockTimeout(Aborted):
    pass


class FailedPrecondition(StateError):
    pass


class _LeaderInfo:
    @property
    def leader(self) -> str:
        return self.metadata.get("leader", "")  # type: ignore[attr-defined]

    @property
    def leader_term(self) -> Optional[int]:
        return self._int("leader_term")  # type: ignore[attr-defined]


class NotLeader(_LeaderInfo, FailedPrecondition):
    """A fence named a term that is not current; ``leader``/``leader_term`` name the current one."""


class LeadershipLost(_LeaderInfo, FailedPrecondition):
    """RenewLeadership of a term that is no longer held."""


class TaskFinished(FailedPrecondition):
    pass


class Unavailable(StateError):
    """Server or database unreachable; retry with backoff (see DatabaseUnavailable for
    "nothing was written")."""


class DatabaseUnavailable(Unavailable):
    pass


class ShuttingDown(Unavailable):
    pass


class ConnectionMaxAge(Unavailable):
    """A stream's connection reached its maximum age: resume on a new call."""


class DeadlineExceeded(StateError):
    """The outcome is unknown: a single-statement write may have committed."""


class Cancelled(StateError):
    pass


class ResourceExhausted(StateError):
    pass


class WatchBufferFull(ResourceExhausted):
    """A watch fell too far behind: reconnect with after_sequence."""


class StreamLimit(ResourceExhausted):
    pass


class PermissionDenied(StateError):
    pass


class Internal(StateError):
    pass


class Unauthenticated(StateError):
    pass


class IdentityKeyRequired(Unauthenticated):
    """A boot action report or key check without the node's identity key."""


class IdentityKeyMismatch(PermissionDenied):
    """The identity key is not the node's (or not the one the boot action was created with)."""


class BootActionNotFound(NotFound):
    pass


class BootActionContextNotFound(NotFound):
    """The node has no boot action context (set_boot_action_context)."""


class BootActionAlreadyExists(AlreadyExists):
    """The node already has an action of this name in the task; ``action_name`` names it."""

    @property
    def action_name(self) -> str:
        return self.metadata.get("action_name", "")


class BootActionContextMismatch(FailedPrecondition):
    """The node's context names another task (``context_task_id``)."""

    @property
    def context_task_id(self) -> str:
        return self.metadata.get("context_task_id", "")


class BootActionAlreadyReported(FailedPrecondition):
    """The action's status is final (or it is UNREPORTED); ``status`` is its status name."""

    @property
    def status(self) -> str:
        return self.metadata.get("status", "")


_BY_REASON = {
    "TASK_NOT_FOUND": TaskNotFound,
    "TASK_ALREADY_EXISTS": TaskAlreadyExists,
    "VERSION_MISMATCH": VersionMismatch,
    "SEQUENCE_MISMATCH": SequenceMismatch,
    "LOCK_TIMEOUT": LockTimeout,
    "NOT_LEADER": NotLeader,
    "LEADERSHIP_LOST": LeadershipLost,
    "TASK_FINISHED": TaskFinished,
    "DATABASE_UNAVAILABLE": DatabaseUnavailable,
    "SHUTTING_DOWN": ShuttingDown,
    "CONNECTION_MAX_AGE": ConnectionMaxAge,
    "WATCH_BUFFER_FULL": WatchBufferFull,
    "STREAM_LIMIT": StreamLimit,
    "IDENTITY_KEY_REQUIRED": IdentityKeyRequired,
    "IDENTITY_KEY_MISMATCH": IdentityKeyMismatch,
    "BOOT_ACTION_NOT_FOUND": BootActionNotFound,
    "BOOT_ACTION_CONTEXT_NOT_FOUND": BootActionContextNotFound,
    "BOOT_ACTION_ALREADY_EXISTS": BootActionAlreadyExists,
    "BOOT_ACTION_CONTEXT_MISMATCH": BootActionContextMismatch,
    "BOOT_ACTION_ALREADY_REPORTED": BootActionAlreadyReported,
}

_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def decode_status(err: grpc.RpcError) -> Optional[status_pb2.Status]:
    """The google.rpc.Status of ``grpc-status-details-bin``, or None."""
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # a status we cannot read is no worse than none
                return None
            return status
    return None


def from_rpc_error(err: grpc.RpcError) -> StateError:
    """The typed exception for a failed call (``err`` becomes its __cause__ when raised)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else None) or ""
    reason, metadata, violations = "", {}, []
    status = decode_status(err)
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
    cls = _BY_REASON.get(reason)
    if cls is None or _BY_CODE.get(code) not in cls.__mro__:
        cls = _BY_CODE.get(code, StateError)
    return cls(code, message, reason, metadata, violations)
