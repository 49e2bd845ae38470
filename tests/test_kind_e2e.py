"""The whole kind path against the strict fake API, with real servers behind its pods.

``vaultdr up --env kind`` runs as a subprocess with fake ``kind``/``docker``/``helm`` first
on PATH (tests/fake_tools), against tests/fake_kube.py (RBAC, admission, TokenRequest,
TokenReview, graceful deletes) whose pods the fake kubelet (tests/fake_kubelet.py) runs as
real processes: three ``bao server`` with the chart's raft config and awskms on the
in-cluster emulator, the emulator and its bootstrap Job, and the ops chart's agents with
their service accounts. Then one drill, then ``down``. And the same ``up`` without the
step that creates stack.yaml's namespaces and service accounts fails with the 404 a
real cluster gives.

Everything listens on loopback (127.0.0.1 and 127.0.100.x); every process the kubelet
starts is stopped at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fake_kube import API_AUDIENCE, FakeCluster, FakeKubeApi
from tests.fake_kubelet import FakeKubelet, can_isolate
from vaultdr.config import load_stack
from vaultdr.envs.local.kubeapi.tokens import TokenAuthority
from vaultdr.envs.local.nodes import find_binary
from vaultdr.envs.tls import LocalCA
from vaultdr.errors import EXIT_DRILL_FAILED

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(
        not can_isolate(),
        reason="the fake kubelet needs mount namespaces (unshare --mount) for the pods' "
        "service-account files at their fixed in-cluster path",
    ),
]

REPO = Path(__file__).resolve().parent.parent
KIND_DIR = REPO / "environments" / "kind"
TOOLS = Path(__file__).resolve().parent / "fake_tools" / "bin"
#: Generous: three servers, the emulator and the agents start on a shared 2-core machine.
UP_TIMEOUT = 900.0


@dataclass
class FakeKind:
    root: Path
    cluster: FakeCluster
    api: FakeKubeApi
    kubelet: FakeKubelet
    tools_dir: Path
    stack_file: Path
    state_dir: Path

    def environ(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k.lower() not in ("https_proxy", "http_proxy", "all_proxy", "no_proxy")
        }
        env.update(
            PATH=f"{TOOLS}:{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
            KUBECONFIG=str(self.root / "kubeconfig"),
            VAULTDR_FAKE_TOOLS_DIR=str(self.tools_dir),
            VAULTDR_FAKE_TOOLS_PYTHON=sys.executable,
            VAULTDR_STATE_DIR=str(self.state_dir),
            PYTHONPATH=str(REPO),
        )
        return env

    def vaultdr(self, *args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "vaultdr.cli", *args, "--state-dir", str(self.state_dir)]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=self.environ(),
            check=False,
        )

    def tool_calls(self) -> list[dict[str, object]]:
        path = self.tools_dir / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kind_stack(root: Path, aws_endpoint: str) -> Path:
    """environments/kind/stack.yaml with its paths absolute and the emulator's address."""
    data = yaml.safe_load((KIND_DIR / "stack.yaml").read_text())
    kube = data["kube"]
    for key in ("values", "ops_chart", "ops_values", "kind_config", "aws_manifest"):
        kube[key] = str((KIND_DIR / kube[key]).resolve())
    # The moto-host NodePort (127.0.0.1:31566 on a kind host) is the emulator pod's address here.
    kube["aws_endpoint"] = aws_endpoint
    path = root / "stack.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    load_stack(path)
    return path


@contextlib.contextmanager
def fake_kind(root: Path) -> Iterator[FakeKind]:
    """The fake API (HTTP for the kubeconfig, HTTPS as kubernetes.default.svc), its kubelet,
    the tools' control directory; everything stopped on the way out."""
    ca = LocalCA(root / "kube-ca")
    tls_dir = root / "kube-tls"
    tls_dir.mkdir()
    pair = ca.issue_server_cert(
        "kube-apiserver",
        tls_dir,
        hosts=[
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
        ],
    )
    ca_pem = ca.cert_path.read_text()
    cluster = FakeCluster(namespace="vaultdr", release="openbao", service_accounts=())
    cluster.root_ca_pem = ca_pem
    cluster.use_token_authority(
        TokenAuthority(rsa.generate_private_key(public_exponent=65537, key_size=2048), API_AUDIENCE)
    )
    with cluster.lock:
        cluster.add_nodes()
        for ns in ("default", "kube-system", "kube-public"):
            cluster.add_namespace(ns)
    api = FakeKubeApi(cluster)
    kubelet: FakeKubelet | None = None
    try:
        tls_port = api.serve_tls(pair.cert, pair.key)
        kubelet = FakeKubelet(
            api,
            root / "node",
            api_tls_port=tls_port,
            ca_pem=ca_pem,
            bao=find_binary(load_stack(KIND_DIR / "stack.yaml")),
            venv_bin=Path(sys.executable).parent,
        )
        tools_dir = root / "tools"
        tools_dir.mkdir()
        (tools_dir / "api_url").write_text(api.url)
        kubelet.deleted_marker = tools_dir / "cluster-deleted"
        stack = kind_stack(root, f"http://{kubelet.workload_ip('moto')}:5000")
        yield FakeKind(root, cluster, api, kubelet, tools_dir, stack, root / "state")
    finally:
        if kubelet is not None:
            kubelet.stop()
        api.stop()


def _explain(done: subprocess.CompletedProcess[str], kind: FakeKind) -> str:
    logs = "\n".join(
        f"--- {pod}/{container}\n{text[-3000:]}"
        for (pod, container), text in kind.cluster.logs.items()
    )
    return (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-8000:]}\n"
        f"kubelet: {kind.kubelet.events[-40:]}\n{logs}"
    )


def _requests_by(cluster: FakeCluster, user: str, method: str, path_part: str, code: int) -> int:
    """How many ``method`` requests to a path containing ``path_part`` ``user`` made that were
    answered ``code``."""
    with cluster.lock:
        return sum(
            1
            for r in cluster.requests
            if r.user == user and r.method == method and path_part in r.path and r.code == code
        )


@pytest.mark.timeout(2400)
def test_kind_up_drill_down(tmp_path: Path) -> None:
    with fake_kind(tmp_path) as kind:
        config = ("--env", "kind", "--config", str(kind.stack_file))
        up = kind.vaultdr("up", *config)
        assert up.returncode == 0, _explain(up, kind)
        status = kind.vaultdr("status", *config, "--json")
        assert status.returncode == 0, _explain(status, kind)
        nodes = json.loads(status.stdout)["nodes"]
        assert len(nodes) == 3 and json.loads(status.stdout)["healthy"] is True

        # OpenBao labels its own pod through the API with its service account's token
        # (service_registration "kubernetes" and the chart's discovery Role).
        server = "system:serviceaccount:vaultdr:openbao"
        assert _requests_by(kind.cluster, server, "PATCH", "/pods/openbao-", 200) >= 3
        with kind.cluster.lock:
            active = [
                p["metadata"]["name"]
                for p in kind.cluster.of_kind("pods", "vaultdr")
                if (p["metadata"].get("labels") or {}).get("openbao-active") == "true"
            ]
        assert len(active) == 1, active

        drill = kind.vaultdr(
            "drill", *config, "--tags", "leader-loss", "--report-dir", str(tmp_path / "reports")
        )
        assert drill.returncode == 0, _explain(drill, kind)
        assert "1 of 1 scenarios passed" in drill.stdout, _explain(drill, kind)
        evidence = list((tmp_path / "reports").rglob("evidence.json"))
        assert evidence, "the drill left no evidence"
        # Logins went through the kubernetes auth method: TokenReviews by the servers' account.
        assert _requests_by(kind.cluster, server, "POST", "/tokenreviews", 201) >= 1

        down = kind.vaultdr("down", *config)
        assert down.returncode == 0, _explain(down, kind)
        assert {
            "tool": "kind",
            "argv": ["delete", "cluster", "--name", "vaultdr"],
        } in kind.tool_calls()
        assert kind.kubelet.running_pids() == []
        # Loopback only: every pod address, every connection the service network made.
        assert all(ip.startswith("127.") for ip in kind.kubelet._ips.values())
        assert kind.kubelet.proxy.connections
        assert all(t.startswith("127.") for _, _, t in kind.kubelet.proxy.connections if t)


@pytest.mark.timeout(2400)
def test_without_the_service_account_step_the_drill_fails_with_the_404(tmp_path: Path) -> None:
    """The same ``up`` (tests/fake_tools/up_without_accounts.py drops that one step), then the
    same drill: the namespace ``apps`` and its accounts do not exist, so every TokenRequest
    for them is the API server's 404 and no scenario reaches a login."""
    with fake_kind(tmp_path) as kind:
        config = ("--env", "kind", "--config", str(kind.stack_file))
        argv = [sys.executable, "-m", "tests.fake_tools.up_without_accounts", *config]
        up = subprocess.run(
            [*argv, "--state-dir", str(kind.state_dir)],
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT,
            cwd=REPO,
            env=kind.environ(),
            check=False,
        )
        assert up.returncode == 0, _explain(up, kind)
        assert kind.cluster.get("namespaces", "", "apps") is None

        token = kind.vaultdr("sa-token", *config, "apps", "web")
        assert token.returncode != 0
        assert "404" in token.stderr and "eyJ" not in token.stdout + token.stderr

        drill = kind.vaultdr(
            "drill", *config, "--tags", "leader-loss", "--report-dir", str(tmp_path / "reports")
        )
        assert drill.returncode == EXIT_DRILL_FAILED, _explain(drill, kind)
        assert "0 of 1 scenarios passed" in drill.stdout, _explain(drill, kind)
        # What the issue saw coming: the logins never work again, because every token
        # request for the apps' accounts is the API server's 404.
        assert "never reached auth_ready" in drill.stdout, _explain(drill, kind)
        with kind.cluster.lock:
            refused = [
                (r.path, r.code)
                for r in kind.cluster.requests
                if r.method == "POST" and r.path.startswith("/api/v1/namespaces/apps/")
            ]
        assert refused, "the drill asked for no token of the apps' accounts"
        assert all(path.endswith("/token") and code == 404 for path, code in refused), refused

        down = kind.vaultdr("down", *config)
        assert down.returncode == 0, _explain(down, kind)
        assert kind.kubelet.running_pids() == []
