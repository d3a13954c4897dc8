"""Drydock's leadership test (tests/integration/postgres/test_postgres_leadership.py) over gRPC,
with a 1 s lease (the minimum) instead of Drydock's 20 s sleep, and the LeaderElector."""

import threading
import time

import pytest

import drydock_statemgmt as ds
from drydock_statemgmt import errors

TTL = 1.0  # seconds: the shortest lease the server grants


def test_claim_then_a_second_claimer_fails_until_the_lease_expires(client, election):
    first = client.claim_leadership(election, "orch-1", TTL)
    assert first.is_leader and first.leader.instance_id == "orch-1"
    second = client.claim_leadership(election, "orch-2", TTL)
    assert not second.is_leader and second.leader.instance_id == "orch-1"
    time.sleep(TTL + 0.2)  # let orch-1's lease lapse: the server's clock decides
    third = client.claim_leadership(election, "orch-2", TTL)
    assert third.is_leader and third.leader.instance_id == "orch-2" and third.leader.term == first.leader.term + 1
    with pytest.raises(errors.LeadershipLost) as lost:
        client.renew_leadership(election, "orch-1", first.leader.term)
    assert lost.value.leader == "orch-2" and lost.value.leader_term == third.leader.term


def test_the_elector_leads_renews_and_fences(client, election):
    with ds.LeaderElector(client, election, "orch-1", ttl=TTL) as elector:
        assert elector.wait_for(True, timeout=5)
        term = elector.term
        time.sleep(TTL * 2)  # several renewals: the lease must not lapse meanwhile
        assert elector.is_leader and elector.term == term
        assert client.get_leader(election).instance_id == "orch-1"
        task = client.create_task("deploy_nodes", queued=True)
        claimed = client.claim_next_task("orch-1", actions=["deploy_nodes"], fence=elector.fence())
        assert claimed is not None and claimed.claimed_term == term
    assert not elector.is_leader
    assert client.get_leader(election) is None  # stop() resigned


def test_the_elector_reports_a_resignation_from_outside_and_a_successor(client, election):
    changes = []
    lost = threading.Event()

    def on_change(leading, term):
        changes.append((leading, term))
        if not leading:
            lost.set()

    elector = ds.LeaderElector(client, election, "orch-1", ttl=TTL, on_change=on_change).start()
    try:
        assert elector.wait_for(True, timeout=5)
        term = elector.term
        fence = elector.fence()
        # Someone frees the lease (an operator) and another instance takes it at once.
        assert client.resign_leadership(election, "orch-1", term)
        taken = client.claim_leadership(election, "orch-2", 30)
        assert taken.is_leader
        assert lost.wait(TTL), "the loss was not reported within a renewal interval or so"
        assert changes[0] == (True, term) and changes[1] == (False, term)
        assert not elector.is_leader
        with pytest.raises(errors.NotLeader):
            elector.fence()
        with pytest.raises(errors.NotLeader) as refused:
            client.claim_next_task("orch-1", fence=fence)
        assert refused.value.leader == "orch-2" and refused.value.leader_term == taken.leader.term
        time.sleep(TTL)  # orch-2 holds a 30 s lease: orch-1 must stay a follower
        assert not elector.is_leader
    finally:
        elector.stop()


def test_the_elector_loses_its_lease_to_another_instance_after_expiry(address, client, election, proxy):
    # The elector's connection goes through a proxy that is then shut, so its
    # renewals fail: it must step down before its lease can lapse, and the other
    # instance then takes the lease.
    lost = threading.Event()
    cut_client = ds.StateClient(proxy.address, timeout=0.3, retries=0)
    elector = ds.LeaderElector(cut_client, election, "orch-1", ttl=TTL, on_change=lambda leading, _: leading or lost.set()).start()
    try:
        assert elector.wait_for(True, timeout=5)
        stepped_at = None
        proxy.close()
        cut = time.monotonic()
        assert lost.wait(TTL * 2)
        stepped_at = time.monotonic()
        assert stepped_at - cut < TTL, "stepped down only after the lease could have lapsed"
        deadline = time.monotonic() + TTL * 3
        while not client.claim_leadership(election, "orch-2", TTL).is_leader:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        elector.stop(resign=False)
        cut_client.close()
