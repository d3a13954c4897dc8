"""The library against a server with TLS and bearer tokens, as production runs it: a
token per role, a CA the client trusts, and a node reporting with its identity key only."""

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile

import pytest

import drydock_statemgmt as ds
from conftest import start_server


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki():
    """A CA and a server certificate for localhost and 127.0.0.1 it signed (openssl)."""
    d = tempfile.mkdtemp(prefix="statemgmt-pki-")
    os.chmod(d, 0o755)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", "san.ext", "-out", "server.pem", cwd=d)
    for name in ("server.key", "server.pem"):
        os.chmod(os.path.join(d, name), 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def tokens():
    return {role: secrets.token_hex(32) for role in ("reader", "orchestrator")}


@pytest.fixture(scope="module")
def secure_address(pki, tokens):
    path = os.path.join(pki, "tokens.json")
    identities = [{"subject": f"py-{r}", "roles": [r], "sha256": hashlib.sha256(t.encode()).hexdigest()} for r, t in tokens.items()]
    with open(path, "w") as f:
        json.dump({"identities": identities}, f)
    yield from start_server("--tls-cert", os.path.join(pki, "server.pem"), "--tls-key", os.path.join(pki, "server.key"),
                            "--auth-tokens", path)


def _ca(pki):
    with open(os.path.join(pki, "ca.pem"), "rb") as f:
        return f.read()


def test_tls_and_a_token_work_together(secure_address, pki, tokens):
    with ds.StateClient(secure_address, token=tokens["orchestrator"], root_certificates=_ca(pki), timeout=10) as c:
        task = c.create_task("deploy_nodes", request_context={"user": "alice"})
        assert task.created_by == "py-orchestrator"
        assert c.get_task(task.task_id).request_context["user"] == "alice"


def test_without_a_token_or_with_too_low_a_role_the_errors_are_typed(secure_address, pki, tokens):
    with ds.StateClient(secure_address, root_certificates=_ca(pki), timeout=10, retries=0) as anonymous:
        with pytest.raises(ds.Unauthenticated) as e:
            anonymous.create_task("deploy_nodes")
        assert e.value.reason == "UNAUTHENTICATED"
    with ds.StateClient(secure_address, token="not-a-token", root_certificates=_ca(pki), timeout=10, retries=0) as bad:
        with pytest.raises(ds.Unauthenticated) as e:
            list(bad.list_tasks())
        assert e.value.reason == "TOKEN_INVALID"
    with ds.StateClient(secure_address, token=tokens["reader"], root_certificates=_ca(pki), timeout=10, retries=0) as reader:
        assert isinstance(list(reader.list_tasks()), list)
        with pytest.raises(ds.PermissionDenied) as e:
            reader.create_task("deploy_nodes")
        assert (e.value.reason, e.value.metadata["required_role"]) == ("ROLE_REQUIRED", "operator")


def test_a_client_that_does_not_trust_the_server_gets_unavailable(secure_address, tokens):
    with ds.StateClient(secure_address, token=tokens["reader"], timeout=5, retries=0) as plaintext:
        with pytest.raises(ds.Unavailable):
            list(plaintext.list_tasks())


def test_a_node_reports_with_its_identity_key_and_no_token(secure_address, pki, tokens):
    ca = _ca(pki)
    with ds.StateClient(secure_address, token=tokens["orchestrator"], root_certificates=ca, timeout=10) as orchestrator:
        task = orchestrator.create_task("deploy_nodes")
        _, key = orchestrator.set_boot_action_context("secure-node", task.task_id)
        (action,) = orchestrator.create_boot_actions("secure-node", task.task_id, ["promjoin"])
        with ds.StateClient(secure_address, root_certificates=ca, timeout=10) as node:
            with pytest.raises(ds.IdentityKeyMismatch):
                node.report_boot_action(action.action_id, os.urandom(32), "success")
            done = node.report_boot_action(action.action_id, key, "success", details=["joined"])
            assert done.status == ds.BootActionStatus.BOOT_ACTION_STATUS_SUCCESS
            with pytest.raises(ds.Unauthenticated):
                node.get_boot_action(action.action_id)  # reads still need a token
        assert [m.message for m in orchestrator.list_result_messages(task.task_id)] == ["joined"]
