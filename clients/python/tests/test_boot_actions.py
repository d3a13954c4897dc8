"""Drydock's boot action tests (tests/integration/postgres/test_postgres_bootaction*.py and
test_api_bootaction.py) over gRPC, with the errors of a node's report."""

import os
import uuid

import pytest

import drydock_statemgmt as ds


def _node():
    return f"node-{uuid.uuid4().hex[:8]}"


def _deploying(client, node):
    task = client.create_task("deploy_nodes")
    ctx, key = client.set_boot_action_context(node, task.task_id)
    return task, ctx, key


def test_boot_action_context_round_trips_with_the_identity_key(client):
    node = _node()
    task = client.create_task("deploy_nodes")
    key = os.urandom(32)  # Drydock's own key
    ctx, returned = client.set_boot_action_context(node, task.task_id, key)
    assert (ctx.node_name, ctx.task_id, returned) == (node, task.task_id, key)
    assert client.get_boot_action_context(node).task_id == task.task_id
    assert client.verify_boot_action_key(node, key).task_id == task.task_id
    with pytest.raises(ds.IdentityKeyMismatch):
        client.verify_boot_action_key(node, os.urandom(32))
    with pytest.raises(ds.BootActionContextNotFound):
        client.get_boot_action_context(_node())


def test_post_a_boot_action_and_read_it_back(client):
    node = _node()
    task, _, key = _deploying(client, node)
    (action,) = client.create_boot_actions(node, task.task_id, ["helloworld"])
    assert len(action.action_id) == 26 and action.status == ds.BootActionStatus.BOOT_ACTION_STATUS_INCOMPLETE
    got = client.get_boot_action(action.action_id)
    assert (got.node_name, got.action_name, got.task_id) == (node, "helloworld", task.task_id)
    # Read back with the node's key: the key authorises a report on it.
    done = client.report_boot_action(action.action_id, key, "success")
    assert done.status == ds.BootActionStatus.BOOT_ACTION_STATUS_SUCCESS and done.HasField("reported")


def test_update_a_boot_action_status(client):
    node = _node()
    task, _, key = _deploying(client, node)
    (action,) = client.create_boot_actions(node, task.task_id, ["update-me"])
    client.report_boot_action(action.action_id, key, details=[{"message": "half way", "error": False, "step": 2}])
    assert client.get_boot_action(action.action_id).status == ds.BootActionStatus.BOOT_ACTION_STATUS_INCOMPLETE
    client.report_boot_action(action.action_id, key, "failure", details=[{"message": "exit 1", "error": True}])
    assert client.get_boot_action(action.action_id).status == ds.BootActionStatus.BOOT_ACTION_STATUS_FAILURE
    messages = list(client.list_result_messages(task.task_id))
    assert [(m.message, m.error, m.context_type, m.context) for m in messages] == [
        ("half way", False, "bootaction", action.action_id),
        ("exit 1", True, "bootaction", action.action_id),
    ]
    assert dict(messages[0].extra) == {"step": 2}
    assert client.get_task(task.task_id).result.error_count == 1


def test_a_node_with_two_boot_actions_one_signalling(client):
    node = _node()
    task, _, _ = _deploying(client, node)
    client.create_boot_actions(node, task.task_id, [("signalled", True), ("silent", False)])
    statuses = {a.action_name: a.status for a in client.list_boot_actions(node_name=node)}
    assert statuses == {
        "signalled": ds.BootActionStatus.BOOT_ACTION_STATUS_INCOMPLETE,
        "silent": ds.BootActionStatus.BOOT_ACTION_STATUS_UNREPORTED,
    }


def test_every_error_of_a_report(client):
    node = _node()
    task, _, key = _deploying(client, node)
    (action,) = client.create_boot_actions(node, task.task_id, ["errors"])
    with pytest.raises(ds.IdentityKeyRequired):
        client.report_boot_action(action.action_id, b"", "success")
    with pytest.raises(ds.BootActionNotFound):
        client.report_boot_action("01ARZ3NDEKTSV4RRFFQ69G5FAV", key, "success")
    with pytest.raises(ds.IdentityKeyMismatch):
        client.report_boot_action(action.action_id, os.urandom(32), "success")
    client.report_boot_action(action.action_id, key, "success")
    with pytest.raises(ds.BootActionAlreadyReported) as second:
        client.report_boot_action(action.action_id, key, "failure")
    assert second.value.status == "SUCCESS"
    with pytest.raises(ds.BootActionAlreadyExists) as dup:
        client.create_boot_actions(node, task.task_id, ["errors"])
    assert dup.value.action_name == "errors"
    with pytest.raises(ds.InvalidArgument) as bad:
        client.get_boot_action("not-a-ulid")
    assert bad.value.field_violations[0][0] == "action_id"
