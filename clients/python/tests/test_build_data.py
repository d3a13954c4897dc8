"""Drydock's build data tests (tests/integration/postgres/test_postgres_builddata.py) over gRPC."""

import datetime as dt
import uuid


def test_build_data_insert_and_select(client):
    task = client.create_task("deploy_nodes")
    node = f"node-{uuid.uuid4().hex[:8]}"
    collected = dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc)
    a = client.create_build_data(node, task.task_id, "lshw", b"<xml>inventory</xml>", "text/xml", collected_at=collected)
    b = client.create_build_data(node, task.task_id, "lldp", b"neighbours")  # collected_at from the server
    assert a.build_data_id and b.build_data_id and a.collected_at.ToDatetime() == collected.replace(tzinfo=None)
    by_node = list(client.list_build_data(node_name=node))
    assert [r.generator for r in by_node] == ["lldp", "lshw"]  # newest first
    assert by_node[1].data_element == b"<xml>inventory</xml>" and by_node[1].data_format == "text/xml"
    by_task = list(client.list_build_data(task_id=task.task_id))
    assert {r.build_data_id for r in by_task} == {a.build_data_id, b.build_data_id}
    basic = list(client.list_build_data(node_name=node, with_data=False))
    assert all(r.data_element == b"" for r in basic)


def test_build_data_latest_per_generator(client):
    task = client.create_task("deploy_nodes")
    node = f"node-{uuid.uuid4().hex[:8]}"
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for i in range(3):
        client.create_build_data(node, task.task_id, "lshw", f"lshw {i}".encode(), collected_at=base + dt.timedelta(hours=i))
    client.create_build_data(node, task.task_id, "lldp", b"lldp 0", collected_at=base)
    latest = {r.generator: r.data_element for r in client.list_build_data(node_name=node, latest=True)}
    assert latest == {"lshw": b"lshw 2", "lldp": b"lldp 0"}
    assert len(list(client.list_build_data(node_name=node))) == 4
