"""The README's raw-stubs quick start: only the generated modules (clients/gen-python.sh DIR)
on PYTHONPATH, grpcio and protobuf. CI runs it: PYTHONPATH=DIR python3 raw_stubs.py ADDRESS."""
import sys
import uuid

import grpc
from drydock.statemgmt.v1 import state_service_pb2 as pb, state_service_pb2_grpc, task_pb2
from google.rpc import error_details_pb2, status_pb2

channel = grpc.insecure_channel(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
stub = state_service_pb2_grpc.StateServiceStub(channel)

task = stub.CreateTask(pb.CreateTaskRequest(task_id=str(uuid.uuid4()), action="deploy_nodes",
                                            initial_status=task_pb2.TASK_STATUS_QUEUED)).task
stub.AppendResultMessages(pb.AppendResultMessagesRequest(
    task_id=task.task_id, first_sequence=1, messages=[pb.NewResultMessage(message="Error 1 on node n1", error=True)]))
print(task.task_id, task_pb2.TaskStatus.Name(stub.GetTask(pb.GetTaskRequest(task_id=task.task_id)).task.status))

# Error details: a google.rpc.Status in the grpc-status-details-bin trailer.
try:
    stub.GetTask(pb.GetTaskRequest(task_id=str(uuid.uuid4())))
    sys.exit("expected NOT_FOUND")
except grpc.RpcError as e:
    raw = dict(e.trailing_metadata())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    print(e.code().name, info.reason, dict(info.metadata))
    assert e.code() == grpc.StatusCode.NOT_FOUND and info.reason == "TASK_NOT_FOUND"
