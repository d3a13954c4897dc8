"""Drydock's task and result message tests (tests/integration/postgres/test_postgres_tasks.py
and test_postgres_results.py), replayed over gRPC."""

import uuid

import grpc

import drydock_statemgmt as ds
from drydock_statemgmt import errors


def test_a_task_with_a_request_context_round_trips(client):
    ctx = {"user": "alice", "request_id": str(uuid.uuid4()), "external_marker": "m-1", "nested": {"n": [1, "two", True]}}
    task = client.create_task("deploy_nodes", design_ref="http://design.example/site.yaml", request_context=ctx, created_by="pytest")
    got = client.get_task(task.task_id)
    assert dict(got.request_context)["user"] == "alice"
    assert got.request_context["nested"]["n"][1] == "two"
    assert got.request_context == task.request_context
    assert got.created_by == "pytest"
    assert got.status == ds.TaskStatus.Value("TASK_STATUS_REQUESTED")


def test_a_node_filter_round_trips(client):
    nf = ds.NodeFilter(
        filter_set_type=ds.FilterSetType.Value("FILTER_SET_TYPE_INTERSECTION"),
        filter_set=[
            ds.NodeFilterSet(
                filter_type=ds.FilterSetType.Value("FILTER_SET_TYPE_UNION"),
                node_names=["n1", "n2"], node_tags=["compute"], node_labels={"zone": "a"},
                rack_names=["r1"], rack_labels={"power": "pdu1"},
            )
        ],
    )
    task = client.create_task("prepare_nodes", node_filter=nf)
    assert client.get_task(task.task_id).node_filter == nf


def test_a_subtask_joins_its_parents_list(client):
    parent = client.create_task("deploy_nodes")
    subs = [client.create_task("prepare_nodes", parent_task_id=parent.task_id) for _ in range(2)]
    assert list(client.get_task(parent.task_id).subtask_ids) == [s.task_id for s in subs]
    assert [t.task_id for t in client.list_subtasks(parent.task_id)] == [s.task_id for s in subs]
    assert all(s.parent_task_id == parent.task_id for s in subs)


def test_select_by_id_keeps_design_ref(client):
    ref = "deckhand+https://deckhand.example:9000/api/v1.0/revisions/7/rendered-documents"
    task = client.create_task("verify_site", design_ref=ref)
    got = client.get_task(task.task_id)
    assert got.task_id == task.task_id and got.design_ref == ref


def test_list_counts(client):
    action = f"count_{uuid.uuid4().hex[:8]}"
    made = [client.create_task(action) for _ in range(3)]
    assert [t.task_id for t in client.list_tasks(actions=[action])] == [t.task_id for t in made]
    # Pages are followed: page_size 2 still yields all three.
    assert len(list(client.list_tasks(actions=[action], page_size=2))) == 3


def test_two_result_messages_one_error_give_error_count_1_in_order(client):
    task = client.create_task("deploy_nodes")
    client.append_result_messages(task.task_id, [{"message": "Deploying node n1", "context_type": "node", "context": "n1"}])
    resp = client.append_result_messages(task.task_id, [{"message": "Error 1 on node n1", "error": True, "context_type": "node", "context": "n1"}])
    assert list(resp.sequences) == [2] and resp.error_count == 1
    got, msgs = client.get_task_full(task.task_id)
    assert got.result.error_count == 1
    assert [(m.sequence, m.message, m.error) for m in msgs] == [(1, "Deploying node n1", False), (2, "Error 1 on node n1", True)]
    assert [m.sequence for m in client.list_result_messages(task.task_id, errors_only=True)] == [2]


def test_claim_next_task_takes_the_oldest_queued_one(client):
    action = f"claim_{uuid.uuid4().hex[:8]}"
    first = client.create_task(action, queued=True)
    client.create_task(action, queued=True)
    claimed = client.claim_next_task("orch-1", actions=[action])
    assert claimed.task_id == first.task_id and claimed.status == ds.TaskStatus.Value("TASK_STATUS_RUNNING")
    assert claimed.claimed_by == "orch-1"
    client.claim_next_task("orch-1", actions=[action])
    assert client.claim_next_task("orch-1", actions=[action]) is None


def test_update_task_changes_the_masked_fields(client):
    task = client.create_task("deploy_nodes", queued=True)
    upd = ds.Task(task_id=task.task_id, status=ds.TaskStatus.Value("TASK_STATUS_RUNNING"), design_ref="file:///ignored")
    got = client.update_task(upd, ["status"], expected_version=task.version)
    assert got.status == ds.TaskStatus.Value("TASK_STATUS_RUNNING") and got.design_ref == ""


def _unavailable_after(client, method):
    """Makes the first `method` attempt really run and then fail as a lost answer would."""
    real, done = client.call, []

    def call(name, request, timeout=None):
        resp = real(name, request, timeout)
        if name == method and not done:
            done.append(name)
            raise errors.Unavailable(grpc.StatusCode.UNAVAILABLE, "connection lost after the request was sent")
        return resp

    client.call = call
    return done


def test_create_task_retried_after_a_lost_answer_returns_the_task_once(client):
    lost = _unavailable_after(client, "CreateTask")
    task = client.create_task("deploy_nodes", request_context={"user": "retry"})
    assert lost and client.get_task(task.task_id).request_context["user"] == "retry"


def test_create_task_with_an_existing_id_raises(client):
    task = client.create_task("deploy_nodes")
    try:
        client.create_task("deploy_nodes", task_id=task.task_id)
    except errors.TaskAlreadyExists as e:
        assert e.task_id == task.task_id and e.code == grpc.StatusCode.ALREADY_EXISTS
    else:
        raise AssertionError("no TaskAlreadyExists")


def test_append_with_first_sequence_retried_after_a_lost_answer_stores_once(client):
    task = client.create_task("deploy_nodes")
    writer = client.result_writer(task.task_id)
    writer.append("one", "two")
    lost = _unavailable_after(client, "AppendResultMessages")
    resp = writer.append({"message": "three", "error": True})
    assert lost and list(resp.sequences) == [3] and resp.error_count == 1
    assert [m.message for m in client.list_result_messages(task.task_id)] == ["one", "two", "three"]
    assert writer.next_sequence == 4
    # A writer created later starts after the last message.
    assert client.result_writer(task.task_id).next_sequence == 4


def test_a_bearer_token_is_sent_harmlessly(address):
    with ds.StateClient(address, token="s3cret") as c:
        assert c.metadata == (("authorization", "Bearer s3cret"),)
        assert c.create_task("deploy_nodes").task_id
