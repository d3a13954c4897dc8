"""LeaderElector: holds an election's lease from a background thread.

While not leading it claims every ttl/3; once leading it renews every ttl/3. It
stops leading, and says so at once (``is_leader`` turns false and ``on_change``
is called), when a renewal answers LEADERSHIP_LOST (another instance took the
lapsed lease, or someone resigned this term), or when renewals have failed for
so long that the lease may lapse before the next try (it steps down ttl/6
before the lease, counted from the last renewal sent that succeeded, could
expire). The server checks every fenced call itself, so a leader that has not
yet noticed its loss still cannot claim or change work: pass :meth:`fence` to
claim_next_task and update_task.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional

import grpc

from . import errors
from ._proto.drydock.statemgmt.v1 import state_service_pb2 as pb


class LeaderElector:
    def __init__(
        self,
        client,
        election: str = "orchestrator",
        instance_id: Optional[str] = None,
        ttl: float = 30.0,
        on_change: Optional[Callable[[bool, int], None]] = None,
    ):
        if not 1.0 <= ttl <= 3600.0:
            raise ValueError("ttl must be between 1 and 3600 seconds")
        self.client = client
        self.election = election
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.ttl = ttl
        #: Called from the elector's thread as on_change(is_leader, term) on every change.
        self.on_change = on_change
        self.term = 0
        self._leading = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def is_leader(self) -> bool:
        return self._leading

    def start(self) -> "LeaderElector":
        self._thread = threading.Thread(target=self._run, name=f"leader-elector-{self.election}", daemon=True)
        self._thread.start()
        return self

    def stop(self, resign: bool = True) -> None:
        """Stops the thread; with ``resign`` frees the lease at once for a successor."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._leading:
            term = self.term
            self._set(False)
            if resign:
                try:
                    self.client.resign_leadership(self.election, self.instance_id, term)
                except errors.StateError:
                    pass  # the lease lapses by itself after ttl

    def __enter__(self) -> "LeaderElector":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for(self, leading: bool = True, timeout: Optional[float] = None) -> bool:
        """Waits until ``is_leader == leading``; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._leading == leading, timeout)

    def fence(self) -> pb.LeaderFence:
        """The (election, term) proof for fenced calls; NotLeader when not leading."""
        if not self._leading:
            raise errors.NotLeader(
                grpc.StatusCode.FAILED_PRECONDITION, f"{self.instance_id} does not lead {self.election}", "NOT_LEADER"
            )
        return pb.LeaderFence(election=self.election, term=self.term)

    def _set(self, leading: bool, term: Optional[int] = None) -> None:
        with self._cond:
            if term is not None:
                self.term = term
            changed = leading != self._leading
            self._leading = leading
            self._cond.notify_all()
        if changed and self.on_change is not None:
            self.on_change(leading, self.term)

    def _run(self) -> None:
        interval = self.ttl / 3
        last_ok = 0.0  # monotonic time the last successful claim or renewal was sent
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                if not self._leading:
                    resp = self.client.claim_leadership(self.election, self.instance_id, self.ttl)
                    if resp.is_leader:
                        last_ok = sent
                        self._set(True, resp.leader.term)
                else:
                    self.client.renew_leadership(self.election, self.instance_id, self.term)
                    last_ok = sent
                wait = interval
            except errors.LeadershipLost:
                self._set(False)
                wait = interval
            except errors.StateError:
                wait = interval / 4
            if self._leading and time.monotonic() + wait >= last_ok + self.ttl - self.ttl / 6:
                self._set(False)  # the lease may lapse before the next renewal could land
                wait = 0
            self._stop.wait(wait)
