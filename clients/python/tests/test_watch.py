"""A live watch: resumed after a cut with no gap and no duplicate, and reconnecting by itself."""

import threading

import drydock_statemgmt as ds


def _append(client, task_id, first, last):
    for i in range(first, last + 1):
        client.append_result_messages(task_id, [f"message {i}"], first_sequence=i)


def _take(watch, n):
    """The next n result messages (snapshots skipped)."""
    out = []
    for ev in watch:
        if isinstance(ev, ds.ResultMessage):
            out.append((ev.sequence, ev.message))
            if len(out) == n:
                return out
    raise AssertionError(f"the watch ended after {out}")


def test_a_watch_cut_midway_resumes_from_the_last_sequence(client):
    task = client.create_task("deploy_nodes")
    _append(client, task.task_id, 1, 3)
    watch = client.watch_task(task.task_id)
    first = next(watch)
    assert isinstance(first, ds.Task) and first.task_id == task.task_id
    seen = _take(watch, 3)
    _append(client, task.task_id, 4, 6)
    seen += _take(watch, 3)
    watch.close()  # cancels the call
    assert list(watch) == []
    _append(client, task.task_id, 7, 10)
    with client.watch_task(task.task_id, after_sequence=watch.last_sequence) as resumed:
        seen += _take(resumed, 4)
    assert seen == [(i, f"message {i}") for i in range(1, 11)]


def test_a_watch_reconnects_by_itself_after_dropped_connections(address, client, proxy):
    task = client.create_task("deploy_nodes")
    with ds.StateClient(proxy.address) as through_proxy:
        watch = through_proxy.watch_task(task.task_id)
        _append(client, task.task_id, 1, 5)
        seen = _take(watch, 5)
        proxy.cut()  # the connection drops: UNAVAILABLE
        _append(client, task.task_id, 6, 10)
        seen += _take(watch, 5)
        watch.cut()  # the stream alone is cancelled, as a reset stream would be
        _append(client, task.task_id, 11, 12)
        seen += _take(watch, 2)
        assert watch.reconnects >= 2
        watch.close()
    assert seen == [(i, f"message {i}") for i in range(1, 13)]


def test_a_watch_ends_once_the_task_completes(client):
    task = client.create_task("deploy_nodes", queued=True)
    watch = client.watch_task(task.task_id)

    def finish():
        _append(client, task.task_id, 1, 3)
        client.update_task(ds.Task(task_id=task.task_id, status=ds.TaskStatus.Value("TASK_STATUS_COMPLETE")), ["status"])

    threading.Thread(target=finish).start()
    events = list(watch)  # ends with OK after the server's finish linger (3 s)
    msgs = [e.sequence for e in events if isinstance(e, ds.ResultMessage)]
    snaps = [e for e in events if isinstance(e, ds.Task)]
    assert msgs == [1, 2, 3]
    assert snaps[-1].status == ds.TaskStatus.Value("TASK_STATUS_COMPLETE")
    versions = [s.version for s in snaps]
    assert versions == sorted(set(versions))  # no snapshot twice
