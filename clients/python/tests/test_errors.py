"""Error details (google.rpc.Status in grpc-status-details-bin) decoded into typed exceptions."""

import socket
import uuid

import grpc
import pytest

import drydock_statemgmt as ds
from drydock_statemgmt import errors
from drydock_statemgmt._proto.google.rpc import error_details_pb2, status_pb2


def test_an_unknown_task_is_task_not_found(client):
    tid = str(uuid.uuid4())
    with pytest.raises(errors.TaskNotFound) as e:
        client.get_task(tid)
    err = e.value
    assert isinstance(err, errors.NotFound) and isinstance(err, errors.StateError)
    assert err.code == grpc.StatusCode.NOT_FOUND and err.reason == "TASK_NOT_FOUND"
    assert err.task_id == tid and err.metadata["task_id"] == tid
    assert isinstance(err.__cause__, grpc.RpcError)


def test_a_malformed_request_names_its_fields(client):
    with pytest.raises(errors.InvalidArgument) as e:
        client.create_task("Not An Action!", task_id="not-a-uuid")
    fields = {f for f, _ in e.value.field_violations}
    assert {"task_id", "action"} <= fields, e.value.field_violations
    assert e.value.reason == "INVALID_ARGUMENT"


def test_a_stale_expected_version_is_version_mismatch(client):
    task = client.create_task("deploy_nodes")
    client.append_result_messages(task.task_id, ["moves the version"])
    with pytest.raises(errors.VersionMismatch) as e:
        client.update_task(ds.Task(task_id=task.task_id, retry=1), ["retry"], expected_version=task.version)
    assert e.value.current_version == client.get_task(task.task_id).version > task.version


def test_a_wrong_first_sequence_is_sequence_mismatch(client):
    task = client.create_task("deploy_nodes")
    client.append_result_messages(task.task_id, ["one"])
    with pytest.raises(errors.SequenceMismatch) as e:
        client.append_result_messages(task.task_id, ["again"], first_sequence=1)
    assert e.value.next_sequence == 2 and e.value.code == grpc.StatusCode.ABORTED


def test_a_finished_task_refuses_subtasks(client):
    task = client.create_task("deploy_nodes")
    client.update_task(ds.Task(task_id=task.task_id, status=ds.TaskStatus.Value("TASK_STATUS_COMPLETE")), ["status"])
    with pytest.raises(errors.TaskFinished):
        client.create_task("prepare_nodes", parent_task_id=task.task_id)


def test_no_server_is_unavailable():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with ds.StateClient(f"127.0.0.1:{port}", timeout=2, retries=1) as c:
        with pytest.raises(errors.Unavailable) as e:
            c.get_task(str(uuid.uuid4()))
    assert e.value.reason == ""


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, reason, metadata):
        info = error_details_pb2.ErrorInfo(reason=reason, domain=errors.ERROR_DOMAIN, metadata=metadata)
        st = status_pb2.Status(code=code.value[0], message="m")
        st.details.add().Pack(info)
        self._code, self._trailers = code, (("grpc-status-details-bin", st.SerializeToString()),)

    def code(self):
        return self._code

    def details(self):
        return "m"

    def trailing_metadata(self):
        return self._trailers


@pytest.mark.parametrize(
    "code,reason,metadata,cls,attrs",
    [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCH_BUFFER_FULL", {}, errors.WatchBufferFull, {}),
        (grpc.StatusCode.UNAVAILABLE, "CONNECTION_MAX_AGE", {}, errors.ConnectionMaxAge, {}),
        (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE", {}, errors.DatabaseUnavailable, {}),
        (grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER", {"leader": "orch-2", "leader_term": "7"}, errors.NotLeader,
         {"leader": "orch-2", "leader_term": 7}),
        (grpc.StatusCode.ABORTED, "VERSION_MISMATCH", {"current_version": "12"}, errors.VersionMismatch, {"current_version": 12}),
        (grpc.StatusCode.ABORTED, "LOCK_TIMEOUT", {}, errors.LockTimeout, {}),
        (grpc.StatusCode.ABORTED, "SOMETHING_NEW", {}, errors.Aborted, {}),
        # A reason under an unexpected code falls back to the code's class.
        (grpc.StatusCode.INTERNAL, "TASK_NOT_FOUND", {}, errors.Internal, {}),
    ],
)
def test_every_reason_has_its_class(code, reason, metadata, cls, attrs):
    err = errors.from_rpc_error(FakeRpcError(code, reason, metadata))
    assert type(err) is cls and err.reason == reason and err.code == code
    for k, v in attrs.items():
        assert getattr(err, k) == v
