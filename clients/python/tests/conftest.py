"""Fixtures: a real server (STATEMGMT_ADDRESS, or one started here from the
repository's dist/), clients of it, and a TCP proxy that can cut connections."""

import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import drydock_statemgmt  # installed (pip install ./clients/python), as CI does
except ImportError:
    sys.path.insert(0, os.path.dirname(HERE))  # else the checkout's copy
    import drydock_statemgmt

from drydock_statemgmt import StateClient  # noqa: E402


def pytest_report_header(config):
    return f"drydock_statemgmt from {os.path.dirname(drydock_statemgmt.__file__)}"

REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def start_server(*args):
    """Starts the repository's server (dist/) on an embedded PostgreSQL of its own with
    extra command-line ``args``; yields its address, then stops it."""
    main = os.path.join(REPO, "dist", "src", "main.js")
    if not os.path.exists(main):
        pytest.fail(f"{main} is missing: run make build, or set STATEMGMT_ADDRESS to a running server")
    data = tempfile.mkdtemp(prefix="statemgmt-pytest-")
    os.chmod(data, 0o755)  # as root, the embedded PostgreSQL runs as user postgres
    proc = subprocess.Popen(
        ["node", main, "--listen", "127.0.0.1:0", "--data-dir", os.path.join(data, "data"), "--log-level", "info", *args],
        stdout=subprocess.PIPE, text=True,
    )
    addr = None
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "ready":
            addr = rec["address"]
            break
        if time.monotonic() > deadline:
            break
    if addr is None:
        proc.kill()
        pytest.fail("the server did not log ready")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining its log
    try:
        yield addr
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def address():
    given = os.environ.get("STATEMGMT_ADDRESS")
    if given:
        yield given
        return
    yield from start_server()


@pytest.fixture
def client(address):
    with StateClient(address, timeout=10) as c:
        yield c


@pytest.fixture
def election():
    """A fresh election name per test."""
    return f"test-{uuid.uuid4().hex[:12]}"


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the server; cut() drops every open connection."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                a, _ = self.listener.accept()
            except OSError:
                return
            if self.closed:
                a.close()
                return
            b = socket.create_connection(self.target)
            with self.lock:
                self.conns += [a, b]
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        socks = [a, b]
        try:
            while True:
                ready, _, _ = select.select(socks, [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: select() on a socket cut() closed
            return
        finally:
            for s in socks:
                s.close()

    def cut(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone leaves it listening
        except OSError:
            pass
        self.listener.close()
        self.cut()


@pytest.fixture
def proxy(address):
    p = CuttingProxy(address)
    yield p
    p.close()
