"""Python client of drydock-statemgmt, the gRPC state service of Drydock's orchestrator.

    from drydock_statemgmt import StateClient, TaskStatus
    client = StateClient("127.0.0.1:50051")
    task = client.create_task("deploy_nodes", queued=True, request_context={"user": "alice"})

Needs only grpcio and protobuf (Debian: python3-grpcio, python3-protobuf). The
generated messages are re-exported here (Task, ResultMessage, BuildData, ...) and
as the modules ``task_pb2``, ``boot_action_pb2`` and ``state_service_pb2``.
"""

from ._proto.drydock.statemgmt.v1 import boot_action_pb2, state_service_pb2, state_service_pb2_grpc, task_pb2
from ._proto.drydock.statemgmt.v1.boot_action_pb2 import BootAction, BootActionContext, BootActionStatus
from ._proto.drydock.statemgmt.v1.state_service_pb2 import (
    BuildData,
    Leader,
    LeaderFence,
    NewResultMessage,
)
from ._proto.drydock.statemgmt.v1.task_pb2 import (
    ActionResult,
    FilterSetType,
    Link,
    NodeFilter,
    NodeFilterSet,
    ResultMessage,
    Task,
    TaskResult,
    TaskStatus,
)
from .client import ResultWriter, StateClient, TaskWatch
from .drydock import DrydockState
from .election import LeaderElector
from .errors import *  # noqa: F401,F403
from .errors import StateError, from_rpc_error

__version__ = "0.1.0"
