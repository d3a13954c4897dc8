"""drydock_statemgmt.drydock.DrydockState against a real server: Drydock's statemgmt scenarios
(tests/integration/postgres/test_postgres_*.py) through stand-ins with Drydock's attribute names,
two threads sharing one DrydockState, and a server restart in the middle."""

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import grpc
import pytest

from drydock_statemgmt import StateClient
from drydock_statemgmt import drydock as dd
from drydock_statemgmt.drydock import DrydockState

from conftest import REPO

UTC = dt.timezone.utc


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def state(address):
    s = DrydockState(address=address, timeout=10, retries=3, election=unique("dd"), leader_grace_period=1)
    s.connect_db()
    yield s
    s.close()


def new_task(state, action="deploy_nodes", **kw):
    t = dd.Task(action=action, statemgr=state, **kw)
    assert state.post_task(t) is True
    return t


def saved(state, task, status=None):
    if status is not None:
        task.status = status
    assert state.put_task(task) is True
    return task


def test_stand_ins_are_used_without_drydock():
    assert dd.drydock_types()["drydock"] is False and dd.drydock_types()["Task"] is dd.Task


def test_a_task_with_request_context_and_node_filter_round_trips(state):
    ctx = dd.RequestContext(user="alice", user_id="u-1", roles=["admin"], request_id=str(uuid.uuid4()), external_marker="m-1",
                            end_user="bob", log_level="ERROR", authenticated=True)
    nf = {"filter_set_type": "intersection",
          "filter_set": [{"filter_type": "union", "node_names": ["n1", "n2"], "node_tags": ["compute"],
                          "node_labels": {"zone": "a"}, "rack_names": ["r1"], "rack_labels": {"power": "pdu1"}}]}
    task = new_task(state, design_ref="http://design.example/site.yaml", node_filter=nf, context=ctx)
    assert task.created_by == "alice"
    got = state.get_task(task.task_id)  # the first call naming it creates it
    assert got.task_id == task.task_id and isinstance(got.task_id, uuid.UUID)
    assert got.statemgr is state
    assert got.action == "deploy_nodes" and got.status == "requested" and got.parent_task_id is None
    assert got.design_ref == "http://design.example/site.yaml"
    assert got.node_filter == nf
    assert got.request_context.to_dict() == ctx.to_dict()
    assert got.created_by == "alice" and got.terminate is False and got.retry == 0
    assert got.result.status == "incomplete" and got.result.error_count == 0 and got.result.message_list == []
    assert got.created.tzinfo is not None and abs((got.created - dt.datetime.now(UTC)).total_seconds()) < 60
    assert got.subtask_id_list == []

    assert state.get_task(uuid.uuid4()) is None

    task.status = "queued"
    task.result.status = "partial_success"
    task.result.message = "half"
    task.result.reason = "one node failed"
    task.result.successes = ["n1"]
    task.result.failures = ["n2"]
    task.result.links = {"detail": ["http://a/1", "http://a/2"]}
    task.retry = 1
    assert state.put_task(task) is True
    got = state.get_task(task.task_id)
    assert (got.status, got.result.status, got.result.message, got.result.reason) == ("queued", "partial_success", "half", "one node failed")
    assert (got.result.successes, got.result.failures, got.result.links, got.retry) == (["n1"], ["n2"], {"detail": ["http://a/1", "http://a/2"]}, 1)
    assert got.updated is not None


def test_put_task_of_an_unknown_task_is_false(state, caplog):
    ghost = dd.Task(action="noop")
    ghost.parent_task_id = uuid.uuid4()  # never posted, and its parent does not exist
    with caplog.at_level(logging.ERROR, logger="drydock"):
        assert state.put_task(ghost) is False
    assert f"Error updating task {ghost.task_id}" in caplog.text and "TASK_NOT_FOUND" in caplog.text


def test_termination_follows_drydock(state):
    # Drydock's Task.terminate_task: terminate, terminated_by, then save() with the status unchanged.
    action = unique("term")
    queued = saved(state, new_task(state, action=action), "queued")
    queued.terminate = True
    queued.terminated_by = "alice"
    assert state.put_task(queued) is True
    assert queued.status == "terminated"  # nobody runs a queued task: it ends at once
    got = state.get_task(queued.task_id)
    assert (got.status, got.terminate, got.terminated_by) == ("terminated", True, "alice")
    assert got.terminated is not None
    assert state.get_next_queued_task(allowed_actions=[action]) is None

    running = saved(state, new_task(state, action="noop"), "running")
    running.terminate = True
    assert state.put_task(running) is True
    assert state.get_task(running.task_id).status == "terminating"  # its runner finishes it
    assert state.put_task(running) is True  # saving again changes nothing
    running.status = "terminated"
    assert state.put_task(running) is True
    assert state.get_task(running.task_id).status == "terminated"
    done = saved(state, new_task(state, action="noop"), "complete")
    done.status = "running"
    assert state.put_task(done) is False  # finished: the service refuses (TASK_FINISHED)


def test_subtasks_all_active_complete(state):
    parent = saved(state, new_task(state), "running")
    subs = []
    for action in ("prepare_nodes", "deploy_node", "relabel_node"):
        st = dd.Task(action=action, statemgr=state)
        assert state.post_task(st) is True
        assert state.add_subtask(parent.task_id, st.task_id) is True  # Drydock's register_subtask
        st.parent_task_id = parent.task_id
        saved(state, st)
        subs.append(st)
    assert state.add_subtask(parent.task_id, subs[0].task_id) is True  # already its subtask
    saved(state, subs[0], "complete")
    subs[1].terminate = True
    saved(state, subs[1], "terminated")
    saved(state, subs[2], "running")

    got = state.get_task(parent.task_id)
    assert got.subtask_id_list == [s.task_id for s in subs]
    assert [t.task_id for t in state.get_all_subtasks(parent.task_id)] == [s.task_id for s in subs]
    assert [t.task_id for t in state.get_active_subtasks(parent.task_id)] == [subs[2].task_id]
    assert [t.task_id for t in state.get_complete_subtasks(parent.task_id)] == [subs[0].task_id, subs[1].task_id]
    assert all(t.statemgr is state and t.parent_task_id == parent.task_id for t in state.get_all_subtasks(parent.task_id))
    assert state.get_all_subtasks(uuid.uuid4()) == []

    orphan = dd.Task(action="noop", statemgr=state)
    assert state.post_task(orphan) is True
    assert state.add_subtask(uuid.uuid4(), orphan.task_id) is False  # the parent does not exist
    other = saved(state, new_task(state, action="noop"))
    assert state.add_subtask(parent.task_id, other.task_id) is False  # exists: cannot be re-parented


def test_select_next_queued_and_list(state):
    a1, a2 = unique("act"), unique("act")
    first = saved(state, new_task(state, action=a1), "queued")
    saved(state, new_task(state, action=a2), "queued")
    saved(state, new_task(state, action=a1), "queued")
    saved(state, new_task(state, action=a1), "running")
    got = state.get_next_queued_task(allowed_actions=[a1])
    assert got.task_id == first.task_id and got.status == "queued" and got.statemgr is state
    assert state.get_next_queued_task(allowed_actions=[]) is None
    assert state.get_next_queued_task(allowed_actions=[unique("none")]) is None
    assert state.get_next_queued_task() is not None
    ids = {t.task_id for t in state.get_tasks()}
    assert first.task_id in ids


def test_result_messages_in_order_with_the_error_count(state):
    task = saved(state, new_task(state))
    ts = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    msgs = [
        dd.TaskStatusMessage("first", False, "task", str(task.task_id), ts=ts),
        dd.TaskStatusMessage("second", True, "node", "n1", detail="disk", code=7),
        dd.TaskStatusMessage("x" * 2000, True, "node", "n2"),
    ]
    for m in msgs:
        assert state.post_result_message(task.task_id, m) is True
    got = state.get_task(task.task_id)
    ml = got.result.message_list
    assert [(m.message[:6], m.error, m.ctx_type, m.ctx) for m in ml] == [
        ("first", False, "task", str(task.task_id)), ("second", True, "node", "n1"), ("x" * 6, True, "node", "n2")]
    assert ml[0].ts == ts
    assert ml[1].extra == {"detail": "disk", "code": 7}
    assert len(ml[2].message) == 1024
    assert got.result.error_count == 2
    assert state.post_result_message(uuid.uuid4(), dd.TaskStatusMessage("lost", False, "task", "x")) is False


def wait_for_no_leader(client, election, timeout=10):
    """Returns once the server reports the election's lease lapsed (WatchLeader)."""
    stream = client.watch_leader(election)
    timer = threading.Timer(timeout, stream.cancel)
    timer.start()
    try:
        for ev in stream:
            if not ev.HasField("leader"):
                return
    finally:
        timer.cancel()
        stream.cancel()
    raise AssertionError("the lease did not lapse")


def test_leadership_with_a_short_grace_period(state, client):
    a, b = uuid.uuid4(), uuid.uuid4()
    assert state.claim_leadership(a) is True
    assert state.claim_leadership(a) is True  # the leader claiming again keeps its term
    term = state._terms[str(a)]
    assert state.claim_leadership(b) is False
    assert state.maintain_leadership(a) is True and state._terms[str(a)] == term
    assert state.maintain_leadership(b) is False
    wait_for_no_leader(client, state.election)  # a stopped checking in for the grace period
    assert state.claim_leadership(b) is True
    assert state._terms[str(b)] == term + 1
    assert state.maintain_leadership(a) is False
    assert state.abdicate_leadership(b) is True
    assert client.get_leader(state.election) is None
    assert state.abdicate_leadership(b) is False
    assert state.claim_leadership(a) is True and state._terms[str(a)] == term + 2
    # Another DrydockState of the same instance (a restarted process) renews and resigns its term.
    other = DrydockState(address=state.address, election=state.election, leader_grace_period=1)
    assert other.maintain_leadership(a) is True
    assert other.abdicate_leadership(a) is True
    assert state.maintain_leadership(a) is False
    other.close()


def test_build_data_latest_per_generator_with_microseconds(state):
    node = unique("node")
    task = saved(state, new_task(state))
    other_task = saved(state, new_task(state))
    t0 = dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rows = [
        dd.BuildData(node_name=node, task_id=task.task_id, collected_date=t0, generator="lshw", data_format="text/plain", data_element="old"),
        dd.BuildData(node_name=node, task_id=task.task_id, collected_date=t0 + dt.timedelta(microseconds=1), generator="lshw", data_format="text/plain", data_element="new"),
        dd.BuildData(node_name=node, task_id=other_task.task_id, collected_date=t0 + dt.timedelta(seconds=1), generator="lldp", data_format="application/json", data_element=json.dumps({"a": 1})),
        dd.BuildData(node_name=unique("node"), task_id=task.task_id, collected_date=t0, generator="lshw", data_format="text/plain", data_element="elsewhere"),
    ]
    for r in rows:
        assert state.post_build_data(r) is True
    got = state.get_build_data(node_name=node)
    assert [(b.generator, b.data_element, b.collected_date) for b in got] == [
        ("lldp", '{"a": 1}', t0 + dt.timedelta(seconds=1)), ("lshw", "new", t0 + dt.timedelta(microseconds=1)), ("lshw", "old", t0)]
    assert all(isinstance(b.task_id, uuid.UUID) for b in got)
    latest = state.get_build_data(node_name=node, latest=True)
    assert sorted((b.generator, b.data_element) for b in latest) == [("lldp", '{"a": 1}'), ("lshw", "new")]
    by_task = state.get_build_data(task_id=task.task_id)
    assert sorted(b.data_element for b in by_task) == ["elsewhere", "new", "old"]
    both = state.get_build_data(node_name=node, task_id=task.task_id, latest=True)  # latest ignored with task_id
    assert [b.data_element for b in both] == ["new", "old"]
    assert state.post_build_data(dd.BuildData(node_name=node, task_id=uuid.uuid4(), generator="g", data_format="text/plain", data_element="x")) is False
    with pytest.raises(dd.BuildDataError):
        state.get_build_data(node_name="x" * 300)  # the server refuses the filter


def test_boot_action_context(state, address):
    node = unique("node")
    task = saved(state, new_task(state))
    key, wrong = os.urandom(32), os.urandom(32)
    assert state.post_boot_action_context(node, task.task_id, key) is True
    ctx = state.get_boot_action_context(node)
    assert ctx["node_name"] == node and ctx["task_id"] == task.task_id
    assert bytes(ctx["identity_key"]) == key  # posted here, so known here
    assert ctx["identity_key"] == key and not (ctx["identity_key"] != key)
    assert ctx["identity_key"] != wrong
    assert state.get_boot_action_context(unique("node")) is None
    # Another process (an API replica) never saw the key: it still checks it, as check_auth does.
    replica = DrydockState(address=address)
    rctx = replica.get_boot_action_context(node)
    assert bytes(rctx["identity_key"]) == b""
    assert rctx["identity_key"] != wrong
    assert not (rctx["identity_key"] != key)
    assert bytes(replica.get_boot_action_context(node)["identity_key"]) == key  # verified: now known
    replica.close()
    assert state.post_boot_action_context(node, uuid.uuid4(), key) is False  # unknown task


def binary_ulid(ms, tail):
    return (ms.to_bytes(6, "big") + tail)


def test_boot_actions_with_drydock_ids_and_status(state, address):
    node = unique("node")
    task = saved(state, new_task(state))
    key = os.urandom(32)
    assert state.post_boot_action_context(node, task.task_id, key) is True
    now_ms = int(time.time() * 1000)
    id1 = binary_ulid(now_ms, os.urandom(10))  # ulid2.generate_binary_ulid()
    id2 = dd.ulid_str(binary_ulid(now_ms + 1, os.urandom(10))).lower()  # base32, either case
    assert state.post_boot_action(node, task.task_id, key, id1, "signalled") is True
    assert state.post_boot_action(node, task.task_id, key, id2, "silent", action_status="unreported") is True
    assert state.post_boot_action(node, task.task_id, key, id1, "again") is False  # the id is taken
    assert state.post_boot_action(node, task.task_id, key, binary_ulid(now_ms, os.urandom(10)), "signalled") is False  # name taken

    ba = state.get_boot_action(dd.ulid_str(id1))
    assert ba["action_id"] == id1 and ba["action_name"] == "signalled" and ba["node_name"] == node
    assert ba["task_id"] == task.task_id and ba["action_status"] == "incomplete" and ba["identity_key"] == key
    assert dd.ulid_bytes(dd.ulid_str(id1)) == id1
    assert state.get_boot_action(dd.ulid_str(binary_ulid(now_ms, os.urandom(10)))) is None
    assert state.get_boot_action("not-a-ulid") is None

    actions = state.get_boot_actions_for_node(node)
    assert sorted(actions) == ["signalled", "silent"]
    assert actions["silent"]["action_status"] == "unreported" and actions["silent"]["action_id"] == dd.ulid_bytes(id2)
    assert bytes(actions["signalled"]["identity_key"]) == key
    assert state.get_boot_actions_for_node(unique("node")) == {}

    # Drydock's POST /bootaction/{id} on a replica that never saw the key: check_auth, then status.
    replica = DrydockState(address=address)
    entry = replica.get_boot_action(dd.ulid_str(id1))
    assert replica.put_bootaction_status(dd.ulid_str(id1), action_status="success") is False  # key unknown yet
    assert not (entry["identity_key"] != key)  # check_auth passes, and the key is now known
    assert replica.put_bootaction_status(dd.ulid_str(id1), action_status="success") is True
    assert state.get_boot_action(dd.ulid_str(id1))["action_status"] == "success"
    assert replica.put_bootaction_status(dd.ulid_str(id1), action_status="success") is True  # unchanged
    assert replica.put_bootaction_status(dd.ulid_str(id1), action_status="failure") is False  # final
    assert state.put_bootaction_status(id2, action_status="success") is False  # unreported: nobody reports
    replica.close()


def test_design_documents_on_the_ci_server(state):
    # The shared server has no --design-root: file references are refused (PERMISSION_DENIED),
    # which Drydock's resolver answers with None; a malformed reference raises.
    assert state.get_design_documents("file:///etc/hostname") is None
    with pytest.raises(dd.InvalidDesignReference):
        state.get_design_documents("nope://x")


def test_get_now_and_task_retention(state):
    now = state.get_now()
    assert now.tzinfo is not None and abs((now - dt.datetime.now(UTC)).total_seconds()) < 5
    assert state.task_retention("36500") is True
    assert state.task_retention("-1") is False


def test_two_threads_share_one_state(state):
    parent = saved(state, new_task(state), "running")
    errors, per_thread = [], 15

    def work(n):
        try:
            for i in range(per_thread):
                st = dd.Task(action="deploy_node", statemgr=state)
                assert state.post_task(st) is True
                assert state.add_subtask(parent.task_id, st.task_id) is True
                st.parent_task_id = parent.task_id
                saved(state, st, "running")
                assert state.post_result_message(parent.task_id, dd.TaskStatusMessage(f"t{n}-{i}", i % 3 == 0, "task", str(st.task_id))) is True
                assert state.get_task(st.task_id).status == "running"
                saved(state, st, "complete")
        except Exception as ex:  # noqa: BLE001
            errors.append(ex)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = state.get_task(parent.task_id)
    assert len(got.subtask_id_list) == 2 * per_thread
    assert len(state.get_complete_subtasks(parent.task_id)) == 2 * per_thread
    assert state.get_active_subtasks(parent.task_id) == []
    assert len(got.result.message_list) == 2 * per_thread
    assert got.result.error_count == 2 * 5
    for n in range(2):
        assert [m.message for m in got.result.message_list if m.message.startswith(f"t{n}-")] == [f"t{n}-{i}" for i in range(per_thread)]


def test_configuration_from_the_environment_and_arguments(address, monkeypatch):
    monkeypatch.setenv("STATEMGMT_ADDRESS", address)
    monkeypatch.setenv("STATEMGMT_ELECTION", "from-env")
    monkeypatch.setenv("STATEMGMT_LEADER_GRACE_PERIOD", "7")
    s = DrydockState()
    assert (s.address, s.election, s.leader_grace_period) == (address, "from-env", 7.0)
    assert s.get_now() is not None
    s.close()
    s = DrydockState(address="127.0.0.1:1", election="arg", leader_grace_period=2)
    assert (s.address, s.election, s.leader_grace_period) == ("127.0.0.1:1", "arg", 2.0)


def test_configuration_with_oslo_config(address, monkeypatch):
    from oslo_config import cfg

    monkeypatch.setenv("STATEMGMT_ADDRESS", "127.0.0.1:1")  # the option wins over the environment
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.IntOpt("leader_grace_period", default=300))  # Drydock's own option
    dd.register_opts(conf)
    conf([], project="drydock-test")
    conf.set_override("address", address, group="statemgmt")
    conf.set_override("election", "from-oslo", group="statemgmt")
    conf.set_override("leader_grace_period", 5)
    s = DrydockState(conf=conf)
    assert (s.address, s.election, s.leader_grace_period) == (address, "from-oslo", 5.0)
    assert s.get_now() is not None
    s.close()


# -- a server of our own, restarted in the middle ----------------------------------------------------


class OwnServer:
    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="statemgmt-dd-")
        os.chmod(self.dir, 0o755)  # as root, the embedded PostgreSQL runs as user postgres
        self.args = args
        self.proc = None
        self.address = "127.0.0.1:0"

    def start(self):
        main = os.path.join(REPO, "dist", "src", "main.js")
        self.proc = subprocess.Popen(
            ["node", main, "--listen", self.address, "--data-dir", os.path.join(self.dir, "data"), "--log-level", "info", *self.args],
            stdout=subprocess.PIPE, text=True,
        )
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("msg") == "ready":
                self.address = rec["address"]
                threading.Thread(target=lambda p=self.proc: [None for _ in p.stdout], daemon=True).start()
                return self.address
        raise AssertionError("the server did not log ready")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_a_server_restart_in_the_middle_and_design_documents():
    design_root = tempfile.mkdtemp(prefix="statemgmt-design-")
    os.chmod(design_root, 0o755)
    with open(os.path.join(design_root, "site.yaml"), "wb") as f:
        f.write(b"---\nschema: drydock/Region/v1\n")
    server = OwnServer("--design-root", design_root)
    try:
        addr = server.start()
        client = StateClient(addr, timeout=5, retries=0, options=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)])
        state = DrydockState(client=client, election="restart", leader_grace_period=60)
        leader = uuid.uuid4()
        assert state.get_design_documents(f"file://{design_root}/site.yaml") == b"---\nschema: drydock/Region/v1\n"
        assert state.get_design_documents(f"file://{design_root}/missing.yaml") is None
        task = saved(state, new_task(state), "running")
        assert state.post_result_message(task.task_id, dd.TaskStatusMessage("before", False, "task", "x")) is True
        assert state.claim_leadership(leader) is True

        server.stop()
        # Down: every call fails the way Drydock's does when its database is gone.
        assert state.get_task(task.task_id) is None
        assert state.get_tasks() == []
        assert state.put_task(task) is False
        assert state.post_result_message(task.task_id, dd.TaskStatusMessage("lost", False, "task", "x")) is False
        assert state.maintain_leadership(leader) is False
        assert state.claim_leadership(leader) is False
        assert state.get_now() is None
        assert state.get_boot_action_context("n") is None
        with pytest.raises(dd.BuildDataError):
            state.get_build_data(node_name="n")
        child = dd.Task(action="noop", statemgr=state)
        child.parent_task_id = task.task_id
        assert state.post_task(child) is False
        later = dd.Task(action="noop", statemgr=state)
        assert state.post_task(later) is True  # deferred: created when first named
        later.status = "queued"
        assert state.put_task(later) is False  # cannot be created now: stays pending

        server.start()  # same port, same data
        grpc.channel_ready_future(client.channel).result(timeout=30)
        got = state.get_task(task.task_id)
        assert got.status == "running" and [m.message for m in got.result.message_list] == ["before"]
        assert state.post_result_message(task.task_id, dd.TaskStatusMessage("after", False, "task", "x")) is True
        assert state.maintain_leadership(leader) is True  # the lease outlived the restart
        saved(state, task, "complete")
        assert [m.message for m in state.get_task(task.task_id).result.message_list] == ["before", "after"]
        assert state.get_now() is not None
        assert state.put_task(later) is True  # created now
        assert state.get_task(later.task_id).status == "queued"
        state.close()
    finally:
        server.close()
        shutil.rmtree(design_root, ignore_errors=True)
