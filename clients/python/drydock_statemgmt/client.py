"""StateClient: the Drydock state service over gRPC, with retry-safe writes and a
resuming task watch. Every method raises a :class:`~drydock_statemgmt.errors.StateError`
subclass on failure and returns the generated protobuf messages (``Task``,
``ResultMessage``, ``BuildData``, ...)."""

from __future__ import annotations

import datetime as _dt
import random
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, TypeVar, Union

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2, timestamp_pb2

from . import errors
from ._proto.drydock.statemgmt.v1 import boot_action_pb2 as ba_pb
from ._proto.drydock.statemgmt.v1 import state_service_pb2 as pb
from ._proto.drydock.statemgmt.v1 import state_service_pb2_grpc as pb_grpc
from ._proto.drydock.statemgmt.v1 import task_pb2

T = TypeVar("T")

#: Largest response accepted: a design of the server's default limit (64 MiB) plus framing.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024 + 1024 * 1024

# ABORTED reasons after which nothing was written, so any call may be retried.
_NOTHING_WRITTEN = {"LOCK_TIMEOUT", "CLAIM_CONTENDED", "TRANSACTION_ROLLED_BACK", "DATABASE_UNAVAILABLE", "SHUTTING_DOWN"}
# Codes after which a call's outcome is unknown (it may have been applied).
_OUTCOME_UNKNOWN = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

MessageLike = Union[task_pb2.ResultMessage, pb.NewResultMessage, Dict[str, Any], str]


def _nothing_written(err: errors.StateError) -> bool:
    return err.reason in _NOTHING_WRITTEN


def _outcome_unknown(err: errors.StateError) -> bool:
    return err.code in _OUTCOME_UNKNOWN and not _nothing_written(err)


def _timestamp(value: Union[None, _dt.datetime, timestamp_pb2.Timestamp]) -> Optional[timestamp_pb2.Timestamp]:
    if value is None or isinstance(value, timestamp_pb2.Timestamp):
        return value
    ts = timestamp_pb2.Timestamp()
    if value.tzinfo is None:  # naive datetimes are UTC, as Drydock stores them
        value = value.replace(tzinfo=_dt.timezone.utc)
    ts.seconds, ts.nanos = int(value.timestamp() // 1), value.microsecond * 1000
    return ts


def _struct(value: Union[None, Dict[str, Any], struct_pb2.Struct]) -> Optional[struct_pb2.Struct]:
    if value is None or isinstance(value, struct_pb2.Struct):
        return value
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _new_message(m: MessageLike) -> pb.NewResultMessage:
    if isinstance(m, pb.NewResultMessage):
        return m
    if isinstance(m, str):
        return pb.NewResultMessage(message=m)
    if isinstance(m, task_pb2.ResultMessage):
        out = pb.NewResultMessage(message=m.message, error=m.error, context_type=m.context_type, context=m.context)
        if m.HasField("ts"):
            out.ts.CopyFrom(m.ts)
        if m.HasField("extra"):
            out.extra.CopyFrom(m.extra)
        return out
    d = dict(m)
    ts, extra = d.pop("ts", None), d.pop("extra", None)
    out = pb.NewResultMessage(**d)
    if ts is not None:
        out.ts.CopyFrom(_timestamp(ts))
    if extra is not None:
        out.extra.CopyFrom(_struct(extra))
    return out


def _pem(value: Union[None, bytes, str]) -> Optional[bytes]:
    return value.encode() if isinstance(value, str) else value


class StateClient:
    """A client of one server.

    ``root_certificates``, ``private_key`` and ``certificate_chain`` (PEM bytes)
    switch to TLS (``grpc.ssl_channel_credentials``; the last two for mutual TLS);
    ``token`` is sent as ``authorization: Bearer <token>`` on every call.
    ``timeout`` bounds each attempt of a unary call (seconds); ``retries`` is how
    many times a call is retried when that is safe (see the README).
    """

    def __init__(
        self,
        address: str,
        token: Optional[str] = None,
        root_certificates: Union[None, bytes, str] = None,
        private_key: Union[None, bytes, str] = None,
        certificate_chain: Union[None, bytes, str] = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        options: Sequence[tuple] = (),
    ):
        opts = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES), *options]
        if root_certificates or private_key or certificate_chain:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_pem(root_certificates), private_key=_pem(private_key), certificate_chain=_pem(certificate_chain)
            )
            self.channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(address, options=opts)
        #: The generated stub, for anything this class does not wrap.
        self.stub = pb_grpc.StateServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retries = retries

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "StateClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------

    def call(self, method: str, request, timeout: Optional[float] = None):
        """One attempt of a unary RPC by name; failures become typed exceptions."""
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from e

    def _backoff(self, attempt: int) -> None:
        time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random() / 2))

    def _retry(self, attempt_fn: Callable[[int], T], retry_if: Callable[[errors.StateError], bool]) -> T:
        attempt = 0
        while True:
            try:
                return attempt_fn(attempt)
            except errors.StateError as err:
                if attempt >= self.retries or not retry_if(err):
                    raise
            self._backoff(attempt)
            attempt += 1

    def _read(self, method: str, request):
        """A read: retried on any UNAVAILABLE or DEADLINE_EXCEEDED too."""
        return self._retry(lambda _: self.call(method, request), lambda e: _nothing_written(e) or _outcome_unknown(e))

    def _write(self, method: str, request):
        """A write without an idempotency key: retried only when nothing was written."""
        return self._retry(lambda _: self.call(method, request), _nothing_written)

    def _pages(self, method: str, request, items: str) -> Iterator:
        while True:
            resp = self._read(method, request)
            yield from getattr(resp, items)
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    # -- tasks -------------------------------------------------------------------

    def create_task(
        self,
        action: str,
        *,
        task_id: Optional[str] = None,
        parent_task_id: str = "",
        design_ref: str = "",
        node_filter: Optional[task_pb2.NodeFilter] = None,
        request_context: Union[None, Dict[str, Any], struct_pb2.Struct] = None,
        created_by: str = "",
        queued: bool = False,
    ) -> task_pb2.Task:
        """Creates a task under a client-chosen id (a new uuid4 unless given), so it is
        retried on UNAVAILABLE and DEADLINE_EXCEEDED: ALREADY_EXISTS on a retry means
        an earlier attempt landed, and that task is returned."""
        req = pb.CreateTaskRequest(
            task_id=task_id or str(uuid.uuid4()),
            parent_task_id=parent_task_id,
            action=action,
            design_ref=design_ref,
            node_filter=node_filter,
            request_context=_struct(request_context),
            created_by=created_by,
            initial_status=task_pb2.TASK_STATUS_QUEUED if queued else task_pb2.TASK_STATUS_REQUESTED,
        )
        uncertain = False

        def attempt(_: int) -> task_pb2.Task:
            nonlocal uncertain
            try:
                return self.call("CreateTask", req).task
            except errors.TaskAlreadyExists:
                if not uncertain:
                    raise
                return self.get_task(req.task_id)
            except errors.StateError as err:
                uncertain = uncertain or _outcome_unknown(err)
                raise

        return self._retry(attempt, lambda e: _nothing_written(e) or _outcome_unknown(e))

    def get_task(self, task_id: str) -> task_pb2.Task:
        return self._read("GetTask", pb.GetTaskRequest(task_id=task_id)).task

    def get_task_full(self, task_id: str):
        """The task and its result messages (at most 10,000; more raises FailedPrecondition)."""
        resp = self._read("GetTask", pb.GetTaskRequest(task_id=task_id, view=pb.TASK_VIEW_FULL))
        return resp.task, list(resp.result_messages)

    def list_tasks(
        self,
        *,
        statuses: Iterable[int] = (),
        actions: Iterable[str] = (),
        parent_task_id: str = "",
        created_after: Optional[_dt.datetime] = None,
        created_before: Optional[_dt.datetime] = None,
        claimed_term: int = 0,
        page_size: int = 0,
    ) -> Iterator[task_pb2.Task]:
        """Every matching task, oldest first, fetching pages as it goes."""
        req = pb.ListTasksRequest(
            statuses=list(statuses), actions=list(actions), parent_task_id=parent_task_id,
            created_after=_timestamp(created_after), created_before=_timestamp(created_before),
            claimed_term=claimed_term, page_size=page_size,
        )
        return self._pages("ListTasks", req, "tasks")

    def update_task(
        self,
        task: task_pb2.Task,
        paths: Iterable[str],
        *,
        expected_version: int = 0,
        fence: Optional[pb.LeaderFence] = None,
    ) -> task_pb2.Task:
        """Changes the fields ``paths`` names (e.g. ``["status", "result.status"]``) to
        their values in ``task``. Retried only after failures that wrote nothing: after an
        unknown outcome (Unavailable, DeadlineExceeded) re-read the task before trying again."""
        req = pb.UpdateTaskRequest(
            task=task, update_mask=field_mask_pb2.FieldMask(paths=list(paths)), expected_version=expected_version, fence=fence
        )
        return self._write("UpdateTask", req).task

    def terminate_task(self, task_id: str, terminated_by: str = "") -> task_pb2.Task:
        """Idempotent, so retried like a read."""
        return self._read("TerminateTask", pb.TerminateTaskRequest(task_id=task_id, terminated_by=terminated_by)).task

    def list_subtasks(self, parent_task_id: str, filter: int = pb.SUBTASK_FILTER_ALL) -> Iterator[task_pb2.Task]:
        return self._pages("ListSubtasks", pb.ListSubtasksRequest(parent_task_id=parent_task_id, filter=filter), "tasks")

    def claim_next_task(
        self, instance_id: str, actions: Iterable[str] = (), fence: Optional[pb.LeaderFence] = None
    ) -> Optional[task_pb2.Task]:
        """The oldest QUEUED task with an allowed action, now RUNNING; None when there is none.
        Not retried after an unknown outcome (a task claimed by a lost answer stays RUNNING
        under ``instance_id``: find it with list_tasks(claimed_term=...))."""
        resp = self._write("ClaimNextTask", pb.ClaimNextTaskRequest(instance_id=instance_id, actions=list(actions), fence=fence))
        return resp.task if resp.HasField("task") else None

    def purge_tasks(self, older_than_days: int) -> pb.PurgeTasksResponse:
        return self._read("PurgeTasks", pb.PurgeTasksRequest(older_than_days=older_than_days))

    # -- result messages ---------------------------------------------------------

    def append_result_messages(
        self, task_id: str, messages: Iterable[MessageLike], *, first_sequence: int = 0
    ) -> pb.AppendResultMessagesResponse:
        """Appends messages (NewResultMessage, dicts of its fields, or plain strings).

        With ``first_sequence`` (the sequence the first message must get) the append is
        retried on UNAVAILABLE and DEADLINE_EXCEEDED: a retry answered SEQUENCE_MISMATCH
        whose next_sequence shows the earlier attempt landed (and whose stored messages
        are these) counts as success. Without it, only failures that wrote nothing are
        retried."""
        msgs = [_new_message(m) for m in messages]
        req = pb.AppendResultMessagesRequest(task_id=task_id, messages=msgs, first_sequence=first_sequence)
        if not first_sequence:
            return self._write("AppendResultMessages", req)
        uncertain = False

        def attempt(_: int) -> pb.AppendResultMessagesResponse:
            nonlocal uncertain
            try:
                return self.call("AppendResultMessages", req)
            except errors.SequenceMismatch as err:
                if uncertain and (err.next_sequence or 0) >= first_sequence + len(msgs) and self._stored(task_id, first_sequence, msgs):
                    task = self.get_task(task_id)
                    return pb.AppendResultMessagesResponse(
                        sequences=list(range(first_sequence, first_sequence + len(msgs))),
                        task_version=task.version, error_count=task.result.error_count,
                    )
                raise
            except errors.StateError as err:
                uncertain = uncertain or _outcome_unknown(err)
                raise

        return self._retry(attempt, lambda e: _nothing_written(e) or _outcome_unknown(e))

    def _stored(self, task_id: str, first: int, msgs: List[pb.NewResultMessage]) -> bool:
        got = []
        for m in self.list_result_messages(task_id, after_sequence=first - 1):
            got.append(m)
            if len(got) == len(msgs):
                break
        key = lambda m: (m.message, m.error, m.context_type, m.context)  # noqa: E731
        return [key(m) for m in got] == [key(m) for m in msgs]

    def list_result_messages(
        self, task_id: str, *, after_sequence: int = 0, errors_only: bool = False, page_size: int = 0
    ) -> Iterator[task_pb2.ResultMessage]:
        req = pb.ListResultMessagesRequest(task_id=task_id, after_sequence=after_sequence, errors_only=errors_only, page_size=page_size)
        return self._pages("ListResultMessages", req, "messages")

    def result_writer(self, task_id: str, next_sequence: Optional[int] = None) -> "ResultWriter":
        """A retry-safe appender for the one writer of a task's messages (see ResultWriter)."""
        return ResultWriter(self, task_id, next_sequence)

    def watch_task(self, task_id: str, after_sequence: int = 0, *, max_backoff: float = 2.0) -> "TaskWatch":
        """Streams the task (snapshots: ``Task``) and its messages (``ResultMessage``) after
        ``after_sequence``, reconnecting by itself; see TaskWatch."""
        return TaskWatch(self, task_id, after_sequence, max_backoff=max_backoff)

    def watch_tasks(self, *, statuses: Iterable[int] = (), actions: Iterable[str] = (), parent_task_id: str = "", send_initial: bool = False):
        """The raw WatchTasks stream (grpc iterator of WatchTasksResponse; ``.cancel()`` ends it)."""
        req = pb.WatchTasksRequest(statuses=list(statuses), actions=list(actions), parent_task_id=parent_task_id, send_initial=send_initial)
        return self.stub.WatchTasks(req, metadata=self.metadata)

    # -- build data --------------------------------------------------------------

    def create_build_data(
        self,
        node_name: str,
        task_id: str,
        generator: str,
        data_element: bytes,
        data_format: str = "text/plain",
        collected_at: Optional[_dt.datetime] = None,
    ) -> pb.BuildData:
        bd = pb.BuildData(node_name=node_name, task_id=task_id, generator=generator, data_format=data_format, data_element=data_element)
        if collected_at is not None:
            bd.collected_at.CopyFrom(_timestamp(collected_at))
        return self._write("CreateBuildData", pb.CreateBuildDataRequest(build_data=bd)).build_data

    def list_build_data(
        self, *, node_name: str = "", task_id: str = "", latest: bool = False, with_data: bool = True, page_size: int = 0
    ) -> Iterator[pb.BuildData]:
        """Newest first; ``latest`` keeps the newest per generator; ``with_data=False`` is
        Drydock's verbosity 1 (data_element left out)."""
        req = pb.ListBuildDataRequest(
            node_name=node_name, task_id=task_id, latest=latest, page_size=page_size,
            view=pb.BUILD_DATA_VIEW_FULL if with_data else pb.BUILD_DATA_VIEW_BASIC,
        )
        return self._pages("ListBuildData", req, "build_data")

    # -- leadership --------------------------------------------------------------

    def claim_leadership(self, election: str, instance_id: str, ttl: float) -> pb.ClaimLeadershipResponse:
        """Claims or renews (when held by ``instance_id``) the lease for ``ttl`` seconds
        (1 to 3600). Retried like a read: a repeated claim by the holder renews."""
        d = duration_pb2.Duration()
        d.FromMilliseconds(int(round(ttl * 1000)))
        return self._read("ClaimLeadership", pb.ClaimLeadershipRequest(election=election, instance_id=instance_id, ttl=d))

    def renew_leadership(self, election: str, instance_id: str, term: int) -> pb.Leader:
        """Raises LeadershipLost when the term is no longer held."""
        return self._read("RenewLeadership", pb.RenewLeadershipRequest(election=election, instance_id=instance_id, term=term)).leader

    def resign_leadership(self, election: str, instance_id: str, term: int) -> bool:
        return self._read("ResignLeadership", pb.ResignLeadershipRequest(election=election, instance_id=instance_id, term=term)).resigned

    def get_leader(self, election: str = "") -> Optional[pb.Leader]:
        resp = self._read("GetLeader", pb.GetLeaderRequest(election=election))
        return resp.leader if resp.HasField("leader") else None

    def watch_leader(self, election: str = ""):
        """The raw WatchLeader stream (grpc iterator of WatchLeaderResponse)."""
        return self.stub.WatchLeader(pb.WatchLeaderRequest(election=election), metadata=self.metadata)

    # -- boot actions ------------------------------------------------------------

    def set_boot_action_context(
        self, node_name: str, task_id: str, identity_key: Optional[bytes] = None
    ) -> "tuple[ba_pb.BootActionContext, bytes]":
        """Sets the node's context for the deployment ``task_id`` and returns it with the
        node's identity key: ``identity_key`` (32 bytes) when given, else the one the
        server generated (returned only here: give it to the node). Retried like a read:
        a repeated set replaces the context, and the key returned is the one in force."""
        req = pb.SetBootActionContextRequest(node_name=node_name, task_id=task_id, identity_key=identity_key or b"")
        resp = self._read("SetBootActionContext", req)
        return resp.context, (identity_key or resp.generated_identity_key)

    def get_boot_action_context(self, node_name: str) -> ba_pb.BootActionContext:
        """Raises BootActionContextNotFound for a node without one (the key is never returned)."""
        return self._read("GetBootActionContext", pb.GetBootActionContextRequest(node_name=node_name)).context

    def create_boot_actions(
        self, node_name: str, task_id: str, actions: Iterable[Union[str, "tuple[str, bool]", "tuple[str, bool, str]"]]
    ) -> List[ba_pb.BootAction]:
        """Creates the node's boot actions of one deployment: names (signalling),
        ``(name, signalling)`` pairs, or ``(name, signalling, action_id)`` with an id (ULID)
        of the caller's. Retried on UNAVAILABLE and DEADLINE_EXCEEDED: names are unique per
        node and task, so BOOT_ACTION_ALREADY_EXISTS after an uncertain attempt means that
        attempt landed, and its actions are returned."""
        given = [(a, True, None) if isinstance(a, str) else (a[0], bool(a[1]), a[2] if len(a) > 2 else None) for a in actions]
        wanted = [(n, sig) for n, sig, _ in given]
        req = pb.CreateBootActionsRequest(
            node_name=node_name, task_id=task_id,
            actions=[ba_pb.NewBootAction(action_name=n, signalling=sig, action_id=aid) for n, sig, aid in given],
        )
        uncertain = False

        def attempt(_: int) -> List[ba_pb.BootAction]:
            nonlocal uncertain
            try:
                return list(self.call("CreateBootActions", req).boot_actions)
            except errors.BootActionAlreadyExists:
                if not uncertain:
                    raise
                by_name = {a.action_name: a for a in self.list_boot_actions(node_name=node_name, task_id=task_id)}
                if any(n not in by_name for n, _ in wanted):
                    raise
                return [by_name[n] for n, _ in wanted]
            except errors.StateError as err:
                uncertain = uncertain or _outcome_unknown(err)
                raise

        return self._retry(attempt, lambda e: _nothing_written(e) or _outcome_unknown(e))

    def report_boot_action(
        self,
        action_id: str,
        identity_key: bytes,
        status: Optional[str] = None,
        details: Iterable[Union[str, Dict[str, Any]]] = (),
    ) -> ba_pb.BootAction:
        """What a node sends (Drydock's ``POST /bootaction/{id}``): details (strings, or
        dicts with ``message``, ``error`` and any further fields, kept as ``extra``), and
        the final ``status`` "success"/"failure" (None: details only). A final report is
        retried on UNAVAILABLE and DEADLINE_EXCEEDED: BootActionAlreadyReported with the
        same status after an uncertain attempt means it landed. A details-only report is
        retried only when nothing was written (a blind retry could post them twice)."""
        wire_status = {None: ba_pb.BOOT_ACTION_STATUS_UNSPECIFIED, "success": ba_pb.BOOT_ACTION_STATUS_SUCCESS,
                       "failure": ba_pb.BOOT_ACTION_STATUS_FAILURE}[status.lower() if status else None]
        req = pb.ReportBootActionStatusRequest(action_id=action_id, identity_key=identity_key, status=wire_status)
        for d in details:
            if isinstance(d, str):
                req.details.add(message=d)
                continue
            d = dict(d)
            detail = req.details.add(message=d.pop("message"), error=bool(d.pop("error", False)))
            if d:
                detail.extra.update(d)
        if status is None:
            return self._write("ReportBootActionStatus", req).boot_action
        uncertain = False

        def attempt(_: int) -> ba_pb.BootAction:
            nonlocal uncertain
            try:
                return self.call("ReportBootActionStatus", req).boot_action
            except errors.BootActionAlreadyReported as err:
                if not uncertain or err.status != status.upper():
                    raise
                return self.get_boot_action(action_id)
            except errors.StateError as err:
                uncertain = uncertain or _outcome_unknown(err)
                raise

        return self._retry(attempt, lambda e: _nothing_written(e) or _outcome_unknown(e))

    def verify_boot_action_key(self, node_name: str, identity_key: bytes) -> ba_pb.BootActionContext:
        """The node's context if ``identity_key`` is its current key (IdentityKeyMismatch otherwise)."""
        return self._read("VerifyBootActionKey", pb.VerifyBootActionKeyRequest(node_name=node_name, identity_key=identity_key)).context

    def get_boot_action(self, action_id: str) -> ba_pb.BootAction:
        return self._read("GetBootAction", pb.GetBootActionRequest(action_id=action_id)).boot_action

    def list_boot_actions(self, *, node_name: str = "", task_id: str = "", page_size: int = 0) -> Iterator[ba_pb.BootAction]:
        """In ULID (creation) order; a node's actions of every deployment."""
        return self._pages("ListBootActions", pb.ListBootActionsRequest(node_name=node_name, task_id=task_id, page_size=page_size), "boot_actions")

    # -- designs -----------------------------------------------------------------

    def get_design_documents(self, design_ref: str) -> pb.GetDesignDocumentsResponse:
        return self._read("GetDesignDocuments", pb.GetDesignDocumentsRequest(design_ref=design_ref))


class ResultWriter:
    """Appends a task's result messages with ``first_sequence`` so that every append is
    retried safely. Meant for the single writer of a task's messages (Drydock's
    orchestrator); a message appended by someone else makes the next append raise
    SequenceMismatch (then create a new writer). ``next_sequence`` defaults to the
    sequence after the task's last message, read once."""

    def __init__(self, client: StateClient, task_id: str, next_sequence: Optional[int] = None):
        self.client, self.task_id = client, task_id
        if next_sequence is None:
            next_sequence = 1
            for m in client.list_result_messages(task_id, page_size=1000):
                next_sequence = m.sequence + 1
        self.next_sequence = next_sequence

    def append(self, *messages: MessageLike) -> pb.AppendResultMessagesResponse:
        resp = self.client.append_result_messages(self.task_id, messages, first_sequence=self.next_sequence)
        self.next_sequence = resp.sequences[-1] + 1
        return resp


class TaskWatch:
    """Iterates over a task's watch: ``Task`` snapshots and ``ResultMessage``s.

    It reconnects by itself after UNAVAILABLE (dropped connections, CONNECTION_MAX_AGE,
    a server shutting down), RESOURCE_EXHAUSTED WATCH_BUFFER_FULL and a cancellation it
    did not ask for, resuming after ``last_sequence``, the last message it yielded: no
    message is yielded twice or skipped, and a snapshot is yielded only when its version
    is newer than the last one yielded. Iteration ends when the server ends the stream
    (the task finished and the linger passed) or after :meth:`close`, which any thread
    may call. Other errors are raised as typed exceptions. It retries for as long as it
    is iterated (backoff capped at ``max_backoff`` seconds); ``reconnects`` counts them.
    """

    def __init__(self, client: StateClient, task_id: str, after_sequence: int = 0, *, max_backoff: float = 2.0):
        self.client, self.task_id = client, task_id
        self.last_sequence = after_sequence
        self.last_version = 0
        #: How many times the stream was re-opened.
        self.reconnects = 0
        self.max_backoff = max_backoff
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._call = None
        self._events = self._run()

    def __iter__(self) -> "TaskWatch":
        return self

    def __next__(self):
        if self._closed.is_set():
            raise StopIteration
        return next(self._events)

    def __enter__(self) -> "TaskWatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def cut(self) -> None:
        """Cancels the current stream only, as a dropped connection would (for tests)."""
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def _retriable(self, err: errors.StateError) -> bool:
        return (
            err.code == grpc.StatusCode.UNAVAILABLE
            or err.reason == "WATCH_BUFFER_FULL"
            or err.code == grpc.StatusCode.CANCELLED  # not ours: close() was not called
            or (err.code == grpc.StatusCode.INTERNAL and not err.reason)  # a stream reset by a proxy
        )

    def _run(self):
        attempt = 0
        while not self._closed.is_set():
            req = pb.WatchTaskRequest(task_id=self.task_id, after_sequence=self.last_sequence)
            with self._lock:
                call = self._call = self.client.stub.WatchTask(req, metadata=self.client.metadata)
            try:
                for ev in call:
                    attempt = 0
                    kind = ev.WhichOneof("event")
                    if kind == "message":
                        m = ev.message
                        if m.sequence <= self.last_sequence:
                            continue
                        if m.sequence != self.last_sequence + 1:
                            raise errors.Internal(
                                grpc.StatusCode.INTERNAL, f"watch of {self.task_id} skipped from {self.last_sequence} to {m.sequence}"
                            )
                        self.last_sequence = m.sequence
                        yield m
                    elif kind == "task" and ev.task.version > self.last_version:
                        self.last_version = ev.task.version
                        yield ev.task
                return
            except grpc.RpcError as e:
                if self._closed.is_set():
                    return
                err = errors.from_rpc_error(e)
                if not self._retriable(err):
                    raise err from e
            finally:
                call.cancel()
            self.reconnects += 1
            self._closed.wait(min(self.max_backoff, 0.05 * 2**attempt) * (0.5 + random.random() / 2))
            attempt += 1
