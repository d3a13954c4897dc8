"""``DrydockState`` over drydock-statemgmt: the class Drydock's orchestrator, API and drivers
call, with Drydock's method names, arguments, return values and objects, backed by the gRPC
service instead of SQLAlchemy on Drydock's own tables. The switch in Drydock is one line::

    from drydock_statemgmt.drydock import DrydockState   # was: statemgmt.DrydockState

When ``drydock_provisioner`` is importable, tasks, result messages and build data come back as
its ``objects.Task``, ``objects.TaskStatusMessage`` and ``objects.BuildData``, built with their
``from_db`` from dictionaries shaped like Drydock's rows; otherwise as the stand-ins below, which
have the same attribute names. Any object with those attributes is accepted.

Configuration: constructor arguments first, then the ``[statemgmt]`` options registered with
oslo.config (Drydock's ``config_mgr.conf`` when Drydock is importable, else ``cfg.CONF``), then
``STATEMGMT_*`` environment variables. See clients/python/README.md for what differs from
Drydock's own class.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
import uuid
from typing import Any, Dict, Iterable, List, Optional

from google.protobuf import json_format

from . import errors as se
from ._proto.drydock.statemgmt.v1 import boot_action_pb2 as ba_pb
from ._proto.drydock.statemgmt.v1 import state_service_pb2 as pb
from ._proto.drydock.statemgmt.v1 import task_pb2
from .client import StateClient

UTC = _dt.timezone.utc
DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_ELECTION = "orchestrator"
DEFAULT_GRACE_PERIOD = 300  # Drydock's leader_grace_period default (seconds)

# Drydock's enum values (objects/fields.py), as stored in its tables.
_TASK_STATUS = {"requested": 1, "queued": 2, "running": 3, "terminating": 4, "terminated": 5, "complete": 6}
_TASK_STATUS_NAME = {v: k for k, v in _TASK_STATUS.items()}
_ACTION_RESULT = {"incomplete": 1, "success": 2, "partial_success": 3, "failure": 4, "unreported": 5}
_ACTION_RESULT_NAME = {v: k for k, v in _ACTION_RESULT.items()}
_FILTER_TYPE = {"union": 1, "intersection": 2}
_FILTER_TYPE_NAME = {v: k for k, v in _FILTER_TYPE.items()}
_BA_STATUS_NAME = {1: "incomplete", 2: "success", 3: "failure", 4: "unreported"}
_FINISHED = ("terminated", "complete")

# Limits of the service that Drydock's own columns did not have (or had smaller).
_MESSAGE_MAX, _CONTEXT_TYPE_MAX, _CONTEXT_MAX, _RESULT_TEXT_MAX = 1024, 64, 256, 1024


# -- stand-ins for Drydock's objects (used when drydock_provisioner is not importable) ------------


class RequestContext:
    """Stand-in for control.base.DrydockRequestContext: the stored dictionary as attributes."""

    def __init__(self, **values: Any):
        self.__dict__.update(values)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RequestContext":
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "policy_engine"}


class TaskStatusMessage:
    """Stand-in for objects.TaskStatusMessage."""

    def __init__(self, msg, error, ctx_type, ctx, **kwargs):
        self.message = msg
        self.error = error
        self.ctx_type = ctx_type
        self.ctx = ctx
        self.ts = kwargs.pop("ts") if "ts" in kwargs else _dt.datetime.now(UTC)
        self.extra = kwargs

    @classmethod
    def from_db(cls, d: Dict[str, Any]) -> "TaskStatusMessage":
        i = cls(d.get("message"), d.get("error"), d.get("context_type"), d.get("context"))
        if "extra" in d:
            i.extra = d.get("extra")
        i.ts = d.get("ts")
        return i


class TaskStatus:
    """Stand-in for objects.TaskStatus (a task's ``result``)."""

    def __init__(self):
        self.error_count = 0
        self.message_list: List[Any] = []
        self.message = None
        self.reason = None
        self.status = "incomplete"
        self.links: Dict[str, List[str]] = {}
        self.successes: List[str] = []
        self.failures: List[str] = []

    def add_status_msg(self, msg=None, error=None, ctx_type=None, ctx=None, **kwargs):
        m = TaskStatusMessage(msg, error, ctx_type, ctx, **kwargs)
        self.message_list.append(m)
        if error:
            self.error_count += 1
        return m


class Task:
    """Stand-in for objects.Task, with the attributes DrydockState reads and sets."""

    def __init__(self, action=None, design_ref=None, parent_task_id=None, node_filter=None, context=None, statemgr=None, retry=0):
        self.statemgr = statemgr
        self.task_id = uuid.uuid4()
        self.status = "requested"
        self.subtask_id_list: List[uuid.UUID] = []
        self.result = TaskStatus()
        self.action = action or "noop"
        self.design_ref = design_ref
        self.retry = retry
        self.parent_task_id = parent_task_id
        self.created = _dt.datetime.now(UTC)
        self.node_filter = node_filter
        self.created_by = getattr(context, "user", None)
        self.updated = None
        self.terminated = None
        self.terminated_by = None
        self.request_context = context
        self.terminate = False

    def get_id(self):
        return self.task_id

    def add_status_msg(self, **kwargs):
        m = self.result.add_status_msg(**kwargs)
        self.statemgr.post_result_message(self.task_id, m)

    @classmethod
    def from_db(cls, d: Dict[str, Any]) -> "Task":
        i = cls()
        i.task_id = uuid.UUID(bytes=bytes(d["task_id"]))
        if d.get("parent_task_id") is not None:
            i.parent_task_id = uuid.UUID(bytes=bytes(d["parent_task_id"]))
        i.subtask_id_list = [uuid.UUID(bytes=bytes(t)) for t in d.get("subtask_id_list") or []]
        for f in ("status", "created", "created_by", "design_ref", "action", "terminated", "terminated_by", "terminate", "updated", "retry", "node_filter"):
            setattr(i, f, d.get(f))
        i.result = TaskStatus()
        i.result.error_count = d.get("result_error_count")
        i.result.message = d.get("result_message")
        i.result.reason = d.get("result_reason")
        i.result.status = d.get("result_status")
        i.result.successes = d.get("result_successes", [])
        i.result.failures = d.get("result_failures", [])
        i.result.links = d.get("result_links", [])
        return i


class BuildDataError(Exception):
    """Stand-in for drydock_provisioner.error.BuildDataError."""


class InvalidDesignReference(Exception):
    """Stand-in for drydock_provisioner.error.InvalidDesignReference."""


class BuildData:
    """Stand-in for objects.BuildData."""

    def __init__(self, node_name=None, task_id=None, collected_date=None, generator=None, data_format=None, data_element=None):
        if not all((node_name, task_id, generator, data_format, data_element)):
            raise ValueError("Required field missing.")
        if isinstance(data_element, bytes):
            data_element = data_element.decode("utf-8")
        elif not isinstance(data_element, str):
            data_element = str(data_element)
        self.node_name = node_name
        self.task_id = task_id
        self.collected_date = collected_date or _dt.datetime.now(UTC)
        self.generator = generator
        self.data_format = data_format
        self.data_element = data_element

    @classmethod
    def from_db(cls, d: Dict[str, Any]) -> "BuildData":
        d["task_id"] = uuid.UUID(bytes=bytes(d["task_id"]))
        return cls(**d)


_drydock_types: Optional[Dict[str, Any]] = None
_types_lock = threading.Lock()


def drydock_types() -> Dict[str, Any]:
    """The classes objects are built with: Drydock's when importable (imported on first use, so
    that importing this module from Drydock itself makes no import cycle), else the stand-ins."""
    global _drydock_types
    with _types_lock:
        if _drydock_types is None:
            try:
                from drydock_provisioner import error as dd_errors
                from drydock_provisioner.control.base import DrydockRequestContext
                from drydock_provisioner.objects.builddata import BuildData as DdBuildData
                from drydock_provisioner.objects.task import Task as DdTask
                from drydock_provisioner.objects.task import TaskStatusMessage as DdMessage

                _drydock_types = dict(
                    drydock=True, Task=DdTask, TaskStatusMessage=DdMessage, BuildData=DdBuildData,
                    RequestContext=DrydockRequestContext, BuildDataError=dd_errors.BuildDataError,
                    InvalidDesignReference=dd_errors.InvalidDesignReference,
                )
            except ImportError:
                _drydock_types = dict(
                    drydock=False, Task=Task, TaskStatusMessage=TaskStatusMessage, BuildData=BuildData,
                    RequestContext=RequestContext, BuildDataError=BuildDataError, InvalidDesignReference=InvalidDesignReference,
                )
        return _drydock_types


# -- ULIDs (Drydock's boot action ids) ---------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_str(action_id) -> str:
    """A boot action id as the service writes it: Drydock's binary ULID (16 bytes, from
    ulid2.generate_binary_ulid) or its base32 form, as 26 upper-case characters."""
    if isinstance(action_id, (bytes, bytearray)):
        if len(action_id) != 16:
            raise ValueError("a binary ULID is 16 bytes")
        n = int.from_bytes(action_id, "big")
        return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))
    return str(action_id).upper()


def ulid_bytes(action_id: str) -> bytes:
    """The 16 bytes of a base32 ULID (ulid2.decode_ulid_base32)."""
    n = 0
    for c in action_id.upper():
        n = n * 32 + _CROCKFORD.index(c)
    return n.to_bytes(16, "big")


# -- conversions ---------------------------------------------------------------------------------


def _uuid_str(value) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _uuid_bytes(value: str) -> Optional[bytes]:
    return uuid.UUID(value).bytes if value else None


def _datetime(ts) -> Optional[_dt.datetime]:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts.seconds, tz=UTC) + _dt.timedelta(microseconds=ts.nanos // 1000)


def _pb_datetime(msg, field: str) -> Optional[_dt.datetime]:
    return _datetime(getattr(msg, field)) if msg.HasField(field) else None


def _to_datetime(value) -> Optional[_dt.datetime]:
    if value is None or isinstance(value, _dt.datetime):
        return value
    return _dt.datetime.fromisoformat(str(value))


def _node_filter_pb(nf) -> Optional[task_pb2.NodeFilter]:
    if not nf:
        return None
    out = task_pb2.NodeFilter(filter_set_type=_FILTER_TYPE.get(str(nf.get("filter_set_type") or "").lower(), 0))
    for fs in nf.get("filter_set") or []:
        out.filter_set.add(
            filter_type=_FILTER_TYPE.get(str(fs.get("filter_type") or "").lower(), 0),
            node_names=list(fs.get("node_names") or []), node_tags=list(fs.get("node_tags") or []),
            node_labels={str(k): str(v) for k, v in (fs.get("node_labels") or {}).items()},
            rack_names=list(fs.get("rack_names") or []),
            rack_labels={str(k): str(v) for k, v in (fs.get("rack_labels") or {}).items()},
        )
    return out


def _node_filter_dict(t: task_pb2.Task) -> Optional[Dict[str, Any]]:
    if not t.HasField("node_filter"):
        return None
    nf = t.node_filter
    sets = []
    for fs in nf.filter_set:
        d: Dict[str, Any] = {"filter_type": _FILTER_TYPE_NAME.get(fs.filter_type)}
        for key in ("node_names", "node_tags", "rack_names"):
            if getattr(fs, key):
                d[key] = list(getattr(fs, key))
        for key in ("node_labels", "rack_labels"):
            if getattr(fs, key):
                d[key] = dict(getattr(fs, key))
        sets.append(d)
    return {"filter_set_type": _FILTER_TYPE_NAME.get(nf.filter_set_type), "filter_set": sets}


def _context_dict(ctx) -> Optional[Dict[str, Any]]:
    if ctx is None:
        return None
    if isinstance(ctx, dict):
        return ctx
    return ctx.to_dict()


def _struct_dict(s) -> Dict[str, Any]:
    return json_format.MessageToDict(s)


def _task_row(t: task_pb2.Task) -> Dict[str, Any]:
    """A Task as a row of Drydock's tasks table (what Task.from_db reads)."""
    links: Dict[str, List[str]] = {}
    for link in t.result.links:
        links.setdefault(link.rel, []).append(link.href)
    return {
        "task_id": uuid.UUID(t.task_id).bytes,
        "parent_task_id": _uuid_bytes(t.parent_task_id),
        "subtask_id_list": [uuid.UUID(s).bytes for s in t.subtask_ids],
        "result_status": _ACTION_RESULT_NAME.get(t.result.status),
        "result_message": t.result.message or None,
        "result_reason": t.result.reason or None,
        "result_error_count": t.result.error_count,
        "result_successes": list(t.result.successes),
        "result_failures": list(t.result.failures),
        "result_links": links,
        "retry": t.retry,
        "status": _TASK_STATUS_NAME.get(t.status),
        "created": _pb_datetime(t, "created"),
        "created_by": t.created_by or None,
        "updated": _pb_datetime(t, "updated"),
        "design_ref": t.design_ref or None,
        "request_context": _struct_dict(t.request_context) if t.HasField("request_context") else None,
        "node_filter": _node_filter_dict(t),
        "action": t.action,
        "terminated": _pb_datetime(t, "terminated"),
        "terminated_by": t.terminated_by or None,
        "terminate": t.terminate,
    }


def _message_row(m: task_pb2.ResultMessage) -> Dict[str, Any]:
    """A ResultMessage as a row of Drydock's result_message table."""
    return {
        "sequence": m.sequence,
        "task_id": uuid.UUID(m.task_id).bytes,
        "message": m.message,
        "error": m.error,
        "context": m.context,
        "context_type": m.context_type,
        "ts": _pb_datetime(m, "ts"),
        "extra": _struct_dict(m.extra) if m.HasField("extra") else {},
    }


class IdentityKey(bytes):
    """A node's identity key in the dictionaries boot action methods return.

    The service stores only a hash of each key, so a key is known here only when this
    DrydockState posted it or verified it; otherwise this is ``b""``. Either way it compares
    equal (``==``/``!=``, as Drydock's ``BootactionUtils.check_auth`` compares) to the bytes the
    service confirms as the node's current key (VerifyBootActionKey), and only to those.
    """

    def __new__(cls, value: Optional[bytes], state: "DrydockState", node_name: str):
        obj = super().__new__(cls, value or b"")
        obj._state = state
        obj._node_name = node_name
        return obj

    def __eq__(self, other):
        if isinstance(other, (bytes, bytearray)) and not isinstance(other, IdentityKey):
            return self._state._verify_key(self._node_name, bytes(other))
        return bytes.__eq__(self, other)

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = bytes.__hash__


class _Pending:
    """A task post_task accepted and that is not on the server yet (see post_task)."""

    def __init__(self, task):
        self.task = task
        self.creating: Optional[threading.Event] = None


def _opts():
    from oslo_config import cfg

    return [
        cfg.StrOpt("address", help="host:port of the drydock-statemgmt server (env STATEMGMT_ADDRESS; default 127.0.0.1:50051)"),
        cfg.StrOpt("token", secret=True, help="Bearer token sent on every call (env STATEMGMT_TOKEN)"),
        cfg.StrOpt("tls_ca_file", help="PEM CA bundle: switches to TLS (env STATEMGMT_TLS_CA_FILE)"),
        cfg.StrOpt("tls_cert_file", help="PEM client certificate for mutual TLS (env STATEMGMT_TLS_CERT_FILE)"),
        cfg.StrOpt("tls_key_file", help="PEM client key for mutual TLS (env STATEMGMT_TLS_KEY_FILE)"),
        cfg.FloatOpt("timeout", help="Seconds per attempt of a call (env STATEMGMT_TIMEOUT; default 30)"),
        cfg.IntOpt("retries", help="Retries of a call when safe (env STATEMGMT_RETRIES; default 5)"),
        cfg.StrOpt("election", help="Leadership election name (env STATEMGMT_ELECTION; default orchestrator)"),
    ]


def register_opts(conf) -> None:
    """Registers the ``[statemgmt]`` options on an oslo.config ConfigOpts (idempotent)."""
    conf.register_opts(_opts(), group="statemgmt")


def _default_conf():
    try:
        from drydock_provisioner import config as dd_config

        return dd_config.config_mgr.conf
    except ImportError:
        pass
    try:
        from oslo_config import cfg

        return cfg.CONF
    except ImportError:
        return None


def _read_file(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


class DrydockState:
    """Drydock's ``statemgmt.DrydockState`` over drydock-statemgmt; safe to share between threads.

    Arguments (each optional; see the module docstring for the order of precedence):
    ``address``, ``token``, ``tls_ca_file``/``tls_cert_file``/``tls_key_file`` (paths),
    ``timeout`` and ``retries`` (per call), ``election``, ``leader_grace_period`` (seconds;
    Drydock's option of that name when unset), ``conf`` (an oslo.config ConfigOpts),
    ``client`` (a StateClient to use as is).
    """

    def __init__(
        self,
        address: Optional[str] = None,
        token: Optional[str] = None,
        tls_ca_file: Optional[str] = None,
        tls_cert_file: Optional[str] = None,
        tls_key_file: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
        retries: Optional[int] = None,
        election: Optional[str] = None,
        leader_grace_period: Optional[float] = None,
        conf=None,
        client: Optional[StateClient] = None,
    ):
        conf = conf if conf is not None else _default_conf()
        opts = None
        if conf is not None:
            try:
                register_opts(conf)
                opts = conf.statemgmt
            except Exception:  # noqa: BLE001 - a conf we cannot use is the same as none
                opts = None

        def pick(arg, name, env, default=None, cast=str):
            if arg is not None:
                return arg
            value = getattr(opts, name, None) if opts is not None else None
            if value is None:
                value = os.environ.get(env) or None
            return cast(value) if value is not None else default

        self.address = pick(address, "address", "STATEMGMT_ADDRESS", DEFAULT_ADDRESS)
        self.token = pick(token, "token", "STATEMGMT_TOKEN")
        self.tls_ca_file = pick(tls_ca_file, "tls_ca_file", "STATEMGMT_TLS_CA_FILE")
        self.tls_cert_file = pick(tls_cert_file, "tls_cert_file", "STATEMGMT_TLS_CERT_FILE")
        self.tls_key_file = pick(tls_key_file, "tls_key_file", "STATEMGMT_TLS_KEY_FILE")
        self.timeout = pick(timeout, "timeout", "STATEMGMT_TIMEOUT", 30.0, float)
        self.retries = pick(retries, "retries", "STATEMGMT_RETRIES", 5, int)
        self.election = pick(election, "election", "STATEMGMT_ELECTION", DEFAULT_ELECTION)
        if leader_grace_period is None:
            leader_grace_period = getattr(conf, "leader_grace_period", None) if conf is not None else None
        if leader_grace_period is None:
            leader_grace_period = os.environ.get("STATEMGMT_LEADER_GRACE_PERIOD") or DEFAULT_GRACE_PERIOD
        self.leader_grace_period = float(leader_grace_period)

        logger_name = "drydock"
        try:
            logger_name = conf.logging.global_logger_name  # Drydock's
        except Exception:  # noqa: BLE001
            pass
        self.logger = logging.getLogger(logger_name)

        self._client = client
        self._lock = threading.Lock()
        self._pending: Dict[str, _Pending] = {}
        self._terms: Dict[str, int] = {}
        self._keys: Dict[str, tuple] = {}  # node_name -> (task_id, identity key)

    # -- connection ------------------------------------------------------------------------------

    def connect_db(self):
        """Opens the gRPC channel to the drydock-statemgmt server (there is no database to
        connect to here). Idempotent; other methods connect on first use anyway."""
        with self._lock:
            if self._client is None:
                self._client = StateClient(
                    self.address, token=self.token, root_certificates=_read_file(self.tls_ca_file),
                    private_key=_read_file(self.tls_key_file), certificate_chain=_read_file(self.tls_cert_file),
                    timeout=self.timeout, retries=self.retries,
                )
        return

    @property
    def client(self) -> StateClient:
        if self._client is None:
            self.connect_db()
        return self._client  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            c, self._client = self._client, None
        if c is not None:
            c.close()

    def tabularasa(self):
        """Empties what the service lets a client empty, for tests: PurgeTasks(0) deletes every
        finished (COMPLETE or TERMINATED) task tree with its result messages, boot actions and
        boot action contexts; this object forgets its pending tasks, keys and leadership terms.
        Unfinished tasks, build data and leases stay: a clean slate is a fresh server."""
        with self._lock:
            self._pending.clear()
            self._keys.clear()
            self._terms.clear()
        self.client.purge_tasks(0)

    # -- tasks -----------------------------------------------------------------------------------

    def _types(self):
        return drydock_types()

    def _build_task(self, t: task_pb2.Task, messages: Iterable[task_pb2.ResultMessage]):
        ty = self._types()
        row = _task_row(t)
        task = ty["Task"].from_db(dict(row))
        if row["request_context"] is not None:
            task.request_context = ty["RequestContext"].from_dict(row["request_context"])
        error_count = 0
        for m in messages:
            msg = ty["TaskStatusMessage"].from_db(_message_row(m))
            if msg.error:
                error_count += 1
            task.result.message_list.append(msg)
        task.result.error_count = error_count
        task.statemgr = self
        return task

    def _with_messages(self, t: task_pb2.Task):
        return self._build_task(t, self.client.list_result_messages(t.task_id, page_size=1000))

    def _flush(self, task_id, parent_task_id: Optional[str] = None) -> Optional[bool]:
        """Creates the task post_task deferred, if ``task_id`` is one: True once created, None
        when it is not pending (any more). Concurrent callers wait for the one creating it; a
        failed creation leaves it pending, for the next call to try again."""
        tid = _uuid_str(task_id)
        while True:
            with self._lock:
                entry = self._pending.get(tid)
                if entry is None:
                    return None
                wait = entry.creating
                if wait is None:
                    done = entry.creating = threading.Event()
            if wait is None:
                break
            wait.wait()
        created = False
        try:
            self._create(entry.task, parent_task_id)
            created = True
            return True
        finally:
            with self._lock:
                if created:
                    self._pending.pop(tid, None)
                else:
                    entry.creating = None
            done.set()

    def _create(self, task, parent_task_id: Optional[str]) -> bool:
        status = task.status if task.status in ("requested", "queued") else "requested"
        parent = parent_task_id or (_uuid_str(task.parent_task_id) if getattr(task, "parent_task_id", None) else "")
        try:
            self.client.create_task(
                task.action, task_id=_uuid_str(task.task_id), parent_task_id=parent, design_ref=task.design_ref or "",
                node_filter=_node_filter_pb(task.node_filter), request_context=_context_dict(task.request_context),
                created_by=task.created_by or "", queued=status == "queued",
            )
        except se.TaskAlreadyExists:
            pass  # an earlier attempt whose answer was lost created it (the uuid4 is this task's)
        if task.status != status or self._result_changed(task):
            self._update(task)
        return True

    @staticmethod
    def _result_changed(task) -> bool:
        r = task.result
        return bool(
            (r.status or "incomplete") != "incomplete" or r.message or r.reason or r.successes or r.failures or r.links or task.retry
        )

    def _update(self, task) -> None:
        tid = _uuid_str(task.task_id)
        if task.terminate:
            try:
                self.client.terminate_task(tid, terminated_by=task.terminated_by or "")
            except se.TaskFinished:
                pass
            except se.PermissionDenied:  # naming another user needs admin: terminate as ourselves
                self.client.terminate_task(tid)
        r = task.result
        t = task_pb2.Task(task_id=tid, retry=int(task.retry or 0))
        paths = ["retry", "result.successes", "result.failures", "result.links", "result.message", "result.reason"]
        status = task.status
        if task.terminate and status in ("requested", "queued"):
            # Nobody runs it, so nobody would finish the termination: it ends here, as
            # Drydock's Task.terminate_task documents ("if the task is queued, just mark it
            # terminated").
            status = task.status = "terminated"
        elif task.terminate and status == "running":
            status = None  # the service made it TERMINATING; its runner finishes it
        if status is not None:
            t.status = _TASK_STATUS[status]
            paths.append("status")
        if r.status is not None:
            t.result.status = _ACTION_RESULT[r.status]
            paths.append("result.status")
        t.result.message = (r.message or "")[:_RESULT_TEXT_MAX]
        t.result.reason = (r.reason or "")[:_RESULT_TEXT_MAX]
        t.result.successes.extend(r.successes or [])
        t.result.failures.extend(r.failures or [])
        links = r.links or {}
        for rel, hrefs in (links.items() if isinstance(links, dict) else []):
            for href in hrefs:
                t.result.links.add(rel=rel, href=href)
        if task.node_filter is not None:
            t.node_filter.CopyFrom(_node_filter_pb(task.node_filter) or task_pb2.NodeFilter())
            paths.append("node_filter")
        if task.design_ref is not None:
            t.design_ref = task.design_ref
            paths.append("design_ref")
        self.client.update_task(t, paths)

    def post_task(self, task):
        """Stores a new task (not its result messages). A top-level task is created on the
        server when first named by another call (get_task, put_task, post_result_message, ...),
        or under its parent by add_subtask: Drydock creates a subtask first and links it
        after, while the service links a subtask only as it is created."""
        tid = _uuid_str(task.task_id)
        try:
            if getattr(task, "parent_task_id", None) is None:
                with self._lock:
                    if tid in self._pending:
                        raise ValueError("task %s was already posted" % tid)
                    self._pending[tid] = _Pending(task)
                return True
            return self._create(task, None)
        except Exception as ex:
            self.logger.error("Error inserting task %s: %s" % (tid, str(ex)))
            return False

    def put_task(self, task):
        """Updates a task: status, result, node filter, design_ref, retry; a task marked
        ``terminate`` is terminated first (TerminateTask). False when it does not exist."""
        tid = str(task.task_id)
        try:
            self._flush(task.task_id)  # a task still pending is created first
            self._update(task)
            return True
        except Exception as ex:
            self.logger.error("Error updating task %s: %s" % (tid, str(ex)))
            return False

    def get_task(self, task_id):
        """The task (objects.Task, ``statemgr`` set) with its result messages in order and
        their error count; None when it does not exist or on error."""
        try:
            self._flush(task_id)
            try:
                resp = self.client._read("GetTask", pb.GetTaskRequest(task_id=_uuid_str(task_id), view=pb.TASK_VIEW_FULL))
                return self._build_task(resp.task, resp.result_messages)
            except se.FailedPrecondition:  # more messages than one response holds: page them
                return self._with_messages(self.client.get_task(_uuid_str(task_id)))
        except se.NotFound:
            return None
        except Exception as ex:
            self.logger.error("Error querying task %s: %s" % (str(task_id), str(ex)), exc_info=True)
            return None

    def get_tasks(self):
        """Every task (created on the server), oldest first; [] on error."""
        try:
            return [self._with_messages(t) for t in self.client.list_tasks(page_size=1000)]
        except Exception as ex:
            self.logger.error("Error querying task list: %s" % str(ex))
            return []

    def _subtasks(self, task_id, statuses, error):
        try:
            found = self.client.list_tasks(parent_task_id=_uuid_str(task_id), statuses=statuses, page_size=1000)
            return [self._with_messages(t) for t in found]
        except Exception as ex:
            self.logger.error(error % str(ex))
            return []

    def get_complete_subtasks(self, task_id):
        """Subtasks that are TERMINATED or COMPLETE."""
        return self._subtasks(task_id, [5, 6], "Error querying complete subtask: %s")

    def get_active_subtasks(self, task_id):
        """Subtasks that are not TERMINATED or COMPLETE."""
        return self._subtasks(task_id, [1, 2, 3, 4], "Error querying active subtask: %s")

    def get_all_subtasks(self, task_id):
        return self._subtasks(task_id, [], "Error querying all subtask: %s")

    def get_next_queued_task(self, allowed_actions=None):
        """The oldest QUEUED task (of one of ``allowed_actions`` when given), unclaimed and
        unchanged, as Drydock's; None when there is none or on error."""
        try:
            if allowed_actions is not None and len(allowed_actions) == 0:
                return None
            for t in self.client.list_tasks(statuses=[2], actions=allowed_actions or (), page_size=1):
                return self._with_messages(t)
            return None
        except Exception as ex:
            self.logger.error("Error querying for next queued task: %s" % str(ex), exc_info=True)
            return None

    def add_subtask(self, task_id, subtask_id):
        """Makes ``subtask_id`` (posted, not yet created) a subtask of ``task_id``: the service
        creates it under its parent. True also when it already is that task's subtask."""
        try:
            parent = _uuid_str(task_id)
            created = self._flush(subtask_id, parent_task_id=parent)
            if created is not None:
                return True
            t = self.client.get_task(_uuid_str(subtask_id))
            if t.parent_task_id == parent:
                return True
            raise ValueError("task %s exists with parent %r: the service cannot re-parent a task" % (t.task_id, t.parent_task_id))
        except Exception as ex:
            self.logger.error("Error appending subtask %s to task %s: %s" % (str(subtask_id), str(task_id), str(ex)))
            return False

    def post_result_message(self, task_id, msg):
        """Appends a result message (message ≤ 1024 characters, context_type ≤ 64, context ≤ 256:
        longer ones are cut). True, or False on error."""
        try:
            self._flush(task_id)
            extra = getattr(msg, "extra", None)
            m: Dict[str, Any] = {
                "message": str(msg.message or "")[:_MESSAGE_MAX],
                "error": bool(msg.error),
                "context_type": str(msg.ctx_type or "")[:_CONTEXT_TYPE_MAX],
                "context": str(msg.ctx or "")[:_CONTEXT_MAX],
            }
            ts = _to_datetime(getattr(msg, "ts", None))
            if ts is not None:
                m["ts"] = ts
            if extra:
                m["extra"] = json.loads(json.dumps(extra, default=str))
            self.client.append_result_messages(_uuid_str(task_id), [m])
            return True
        except Exception as ex:
            self.logger.error("Error inserting result message for task %s: %s" % (str(task_id), str(ex)))
            return False

    def task_retention(self, retain_days):
        """PurgeTasks: deletes finished task trees unchanged for ``retain_days`` days."""
        try:
            self.client.purge_tasks(int(retain_days))
            return True
        except Exception as ex:
            self.logger.error("Error deleting tasks: %s" % str(ex))
            return False

    # -- leadership ------------------------------------------------------------------------------

    def _term(self, leader_id: str) -> Optional[int]:
        with self._lock:
            term = self._terms.get(leader_id)
        if term is not None:
            return term
        leader = self.client.get_leader(self.election)  # held by another DrydockState of this id
        if leader is not None and leader.instance_id == leader_id:
            return leader.term
        return None

    def claim_leadership(self, leader_id):
        """True when ``leader_id`` now leads: nobody led, it already led (renewed), or the
        leader did not check in for ``leader_grace_period`` seconds."""
        lid = str(leader_id)
        try:
            resp = self.client.claim_leadership(self.election, lid, self.leader_grace_period)
        except Exception as ex:
            self.logger.error("Error executing leadership claim: %s" % str(ex))
            return False
        with self._lock:
            if resp.is_leader:
                self._terms[lid] = resp.leader.term
            else:
                self._terms.pop(lid, None)
        return resp.is_leader

    def maintain_leadership(self, leader_id):
        """The leader checks in (renews its term); False when it no longer leads."""
        lid = str(leader_id)
        try:
            term = self._term(lid)
            if term is None:
                return False
            self.client.renew_leadership(self.election, lid, term)
            with self._lock:
                self._terms[lid] = term
            return True
        except se.LeadershipLost:
            with self._lock:
                self._terms.pop(lid, None)
            return False
        except Exception as ex:
            self.logger.error("Error maintaining leadership: %s" % str(ex))
            return False

    def abdicate_leadership(self, leader_id):
        """Resigns; True when ``leader_id`` led until now."""
        lid = str(leader_id)
        try:
            term = self._term(lid)
            with self._lock:
                self._terms.pop(lid, None)
            if term is None:
                return False
            return self.client.resign_leadership(self.election, lid, term)
        except Exception as ex:
            self.logger.error("Error abidcating leadership: %s" % str(ex))
            return False

    # -- boot actions ----------------------------------------------------------------------------

    def _verify_key(self, node_name: str, key: bytes) -> bool:
        try:
            ctx = self.client.verify_boot_action_key(node_name, key)
        except (se.IdentityKeyMismatch, se.Unauthenticated, se.NotFound, se.InvalidArgument):
            return False
        with self._lock:
            self._keys[node_name] = (ctx.task_id, key)
        return True

    def _known_key(self, node_name: str, task_id: str) -> Optional[bytes]:
        with self._lock:
            known = self._keys.get(node_name)
        return known[1] if known is not None and known[0] == task_id else None

    def _action_dict(self, a: ba_pb.BootAction) -> Dict[str, Any]:
        return {
            "node_name": a.node_name,
            "action_id": ulid_bytes(a.action_id),
            "action_name": a.action_name,
            "task_id": uuid.UUID(a.task_id),
            "identity_key": IdentityKey(self._known_key(a.node_name, a.task_id), self, a.node_name),
            "action_status": _BA_STATUS_NAME.get(a.status),
        }

    def post_boot_action_context(self, nodename, task_id, identity):
        """Sets the node's context: the deploying task and its 32-byte identity key."""
        try:
            self._flush(task_id)
            tid = _uuid_str(task_id)
            self.client.set_boot_action_context(nodename, tid, identity_key=bytes(identity))
            with self._lock:
                self._keys[nodename] = (tid, bytes(identity))
            return True
        except Exception as ex:
            self.logger.error("Error posting boot action context for node %s" % nodename, exc_info=ex)
            return False

    def get_boot_action_context(self, nodename):
        """{node_name, task_id (uuid.UUID), identity_key (an IdentityKey)}, or None."""
        try:
            ctx = self.client.get_boot_action_context(nodename)
            return {
                "node_name": ctx.node_name,
                "task_id": uuid.UUID(ctx.task_id),
                "identity_key": IdentityKey(self._known_key(ctx.node_name, ctx.task_id), self, ctx.node_name),
            }
        except se.NotFound:
            return None
        except Exception as ex:
            self.logger.error("Error retrieving boot action context for node %s" % nodename, exc_info=ex)
            return None

    def post_boot_action(self, nodename, task_id, identity_key, action_id, action_name, action_status="incomplete"):
        """Creates one boot action under Drydock's id (binary or base32 ULID): "incomplete"
        (the node reports) or "unreported". The service takes the key from the node's context,
        so ``identity_key`` must be the one post_boot_action_context set."""
        try:
            if action_status not in ("incomplete", "unreported"):
                raise ValueError("a new boot action is incomplete or unreported, not %r" % (action_status,))
            self._flush(task_id)
            aid = ulid_str(action_id)
            self.client.create_boot_actions(nodename, _uuid_str(task_id), [(action_name, action_status == "incomplete", aid)])
            return True
        except Exception as ex:
            self.logger.error("Error saving boot action %s." % str(action_id), exc_info=ex)
            return False

    def put_bootaction_status(self, action_id, action_status="incomplete"):
        """Sets a boot action's final status, "success" or "failure" (ReportBootActionStatus,
        with the node's identity key this process has seen: posted, or verified through an
        IdentityKey comparison). Setting the status it already has is True; anything else
        the service does not allow (leaving a final status, no key known) is False."""
        try:
            aid = ulid_str(action_id)
            a = self.client.get_boot_action(aid)
            status = str(action_status).lower()
            if _BA_STATUS_NAME.get(a.status) == status:
                return True
            if status not in ("success", "failure"):
                raise ValueError("boot action %s is %s; it can only become success or failure" % (aid, _BA_STATUS_NAME.get(a.status)))
            key = self._known_key(a.node_name, a.task_id)
            if key is None:
                raise ValueError("the node's identity key is not known to this process (the service keeps only its hash)")
            self.client.report_boot_action(aid, key, status)
            return True
        except Exception as ex:
            self.logger.error("Error updating boot action %s status." % str(action_id), exc_info=ex)
            return False

    def get_boot_actions_for_node(self, nodename):
        """Drydock's dict of the node's boot actions keyed by action name (of several
        deployments, the latest's); None on error."""
        try:
            actions: Dict[str, Any] = {}
            for a in self.client.list_boot_actions(node_name=nodename, page_size=1000):
                d = self._action_dict(a)
                actions[d.get("action_name", "undefined")] = d
            return actions
        except Exception as ex:
            self.logger.error("Error selecting boot actions for node %s" % nodename, exc_info=ex)
            return None

    def get_boot_action(self, action_id):
        """One boot action's dict, or None (unknown id, error)."""
        try:
            return self._action_dict(self.client.get_boot_action(ulid_str(action_id)))
        except se.NotFound:
            return None
        except Exception as ex:
            self.logger.error("Error querying boot action %s" % str(action_id), exc_info=ex)
            return None

    # -- build data ------------------------------------------------------------------------------

    def post_build_data(self, build_data):
        try:
            self._flush(build_data.task_id)
            element = build_data.data_element
            self.client.create_build_data(
                build_data.node_name, _uuid_str(build_data.task_id), build_data.generator,
                element if isinstance(element, bytes) else str(element).encode("utf-8"),
                data_format=build_data.data_format, collected_at=_to_datetime(build_data.collected_date),
            )
            return True
        except Exception as ex:
            self.logger.error("Error saving build data.", exc_info=ex)
            return False

    def get_build_data(self, node_name=None, task_id=None, latest=False, verbosity=2):
        """Build data (objects.BuildData), newest first, filtered by ``node_name`` and/or
        ``task_id``; without ``task_id``, ``latest`` keeps the newest per generator.
        ``verbosity`` does not change what is fetched (as in Drydock). Raises Drydock's
        BuildDataError on error."""
        ty = self._types()
        try:
            found = self.client.list_build_data(
                node_name=node_name or "", task_id=_uuid_str(task_id) if task_id else "",
                latest=bool(latest) and not task_id, page_size=100,
            )
            out = []
            for b in found:
                out.append(ty["BuildData"].from_db({
                    "node_name": b.node_name,
                    "task_id": uuid.UUID(b.task_id).bytes,
                    "collected_date": _pb_datetime(b, "collected_at"),
                    "generator": b.generator,
                    "data_format": b.data_format,
                    "data_element": b.data_element.decode("utf-8", errors="replace"),
                }))
            return out
        except Exception as ex:
            self.logger.error("Error selecting build data.", exc_info=ex)
            raise ty["BuildDataError"]("Error selecting build data.")

    # -- designs and time ------------------------------------------------------------------------

    def get_design_documents(self, design_ref):
        """The design document's bytes, fetched by the server. Raises Drydock's
        InvalidDesignReference for a reference the server refuses as malformed; None when the
        fetch fails (not found, refused, unreachable), as Drydock's resolver after its retries."""
        try:
            return self.client.get_design_documents(design_ref).content
        except se.InvalidArgument as ex:
            raise self._types()["InvalidDesignReference"]("Cannot resolve design reference %s: %s" % (design_ref, ex.message))
        except Exception as ex:
            self.logger.error("Error resolving design reference %s: %s" % (design_ref, str(ex)))
            return None

    def get_now(self):
        """This host's time (UTC) once the server has answered a call that reads its database
        (GetLeader); None when it cannot. The service does not expose the database's clock."""
        try:
            self.client.get_leader(self.election)
            return _dt.datetime.now(UTC)
        except Exception as ex:
            self.logger.error("Error querying for now(): %s" % str(ex))
            return None
