"""``vaultdr upgrade-check --env kind|eks`` against the fake Kubernetes API, a fake ``helm``
and small HTTP servers answering the engine's API; S3, KMS and SSM on the real moto.

The edges only are faked: the Kubernetes API (tests/fake_kube.py, whose StatefulSet
controller recreates a deleted pod with a new uid), the ``helm`` CLI (a script on PATH
recording its argv and keeping the release's revisions: which server image tag the
chart renders), and the engine (one listener per node; a node's pod recreated after
``helm upgrade`` reports the chart's tag, as the new container would).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests import test_kube_env
from tests.fake_kube import FakeCluster, FakeKubeApi
from tests.test_evidence import json_schema
from vaultdr.config import Kube, Snapshots, Stack
from vaultdr.envs.base import ssm_path
from vaultdr.envs.kube.chartkeys import flatten, key_paths, missing_in_chart
from vaultdr.envs.kube.clusters import KindEnvironment
from vaultdr.envs.local import awsemu
from vaultdr.errors import EXIT_BAD_INPUT, ConfigError
from vaultdr.evidence.schema import load_evidence
from vaultdr.upgrade.kube import (
    KubeUpgradeOptions,
    plan_upgrade,
    rolling_replace,
    run_kube_upgrade_check,
)
from vaultdr.upgrade.rolling import UpgradeFailed

REPO = Path(__file__).resolve().parent.parent
NS = "vaultdr"
CLUSTER = "vaultdr-kind"
BUCKET = "snaps"  # the moto fixture's bucket
TODAY, TARGET = "2.6.2", "2.6.3"
NAMES = [f"openbao-{i}" for i in range(3)]


# --- helm, as far as the check runs it ---------------------------------------------------------
FAKE_HELM = """#!{python}
import json, pathlib, sys
state = pathlib.Path({state!r})
args = sys.argv[1:]
with open(state / "argv.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
history = json.loads((state / "history.json").read_text())
if args[:2] == ["show", "values"]:
    sys.stdout.write((state / "chart-values.yaml").read_text())
elif args[:1] == ["status"]:
    print(json.dumps({{"name": args[1], "version": len(history)}}))
elif args[:2] == ["upgrade", "openbao"]:
    tag = history[-1]
    for i, arg in enumerate(args):
        if arg == "--set" and args[i + 1].startswith("server.image.tag="):
            tag = args[i + 1].split("=", 1)[1]
    history.append(tag)
elif args[:1] == ["rollback"]:
    history.append(history[int(args[2]) - 1])
(state / "history.json").write_text(json.dumps(history))
"""


class FakeHelm:
    """A ``helm`` on PATH: argv recorded; the official release's revisions are the server
    image tags it rendered (``rollback N`` renders revision N's again)."""

    def __init__(self, directory: Path, *, chart_values: str = "{}\n") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "history.json").write_text(json.dumps([TODAY]))
        (directory / "chart-values.yaml").write_text(chart_values)
        script = directory / "helm"
        script.write_text(FAKE_HELM.format(python=sys.executable, state=str(directory)))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[list[str]]:
        path = self.dir / "argv.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def rendered_tag(self) -> str:
        return str(json.loads((self.dir / "history.json").read_text())[-1])


# --- the engine's API, as far as the check asks it -------------------------------------------------
def raft_snapshot_bytes() -> bytes:
    """A gzipped tar in the raft snapshot format, with a matching SHA256SUMS."""
    members = {"meta.json": json.dumps({"Index": 42, "Term": 3}).encode(), "state.bin": b"raft"}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in members.items())
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in [*members.items(), ("SHA256SUMS", sums.encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


class UpgradingNodes:
    """One listener per node. A node whose pod has a new uid (the StatefulSet recreated it)
    runs the tag the chart renders now; a node in ``broken_on`` never unseals on that
    version. ``events`` records (what, node, version, how many Kubernetes requests were
    made by then), so tests can order engine answers against pod deletions."""

    def __init__(self, cluster: FakeCluster, helm: FakeHelm, *, leader: str = "openbao-0") -> None:
        self.cluster = cluster
        self.helm = helm
        self.leader = leader
        self.versions = dict.fromkeys(NAMES, TODAY)
        self.uids = {name: cluster.uid("pods", name) for name in NAMES}
        self.broken_on: dict[str, str] = {}
        self.events: list[tuple[str, str, str, int]] = []
        self.kv: dict[str, list[dict[str, Any]]] = {}
        self.lock = threading.Lock()
        self.servers = {name: self._serve(name) for name in NAMES}

    def refresh(self, name: str) -> None:
        with self.cluster.lock:
            uid = self.cluster.uid("pods", name)
            requests = len(self.cluster.requests)
        with self.lock:
            if uid and uid != self.uids[name]:
                self.uids[name] = uid
                self.versions[name] = self.helm.rendered_tag()
                self.events.append(("started", name, self.versions[name], requests))

    def sealed(self, name: str) -> bool:
        return self.broken_on.get(name) == self.versions[name]

    def note(self, what: str, name: str) -> None:
        with self.cluster.lock:
            requests = len(self.cluster.requests)
        with self.lock:
            self.events.append((what, name, self.versions[name], requests))

    def step_down(self, name: str) -> None:
        with self.lock:
            if name == self.leader:
                others = [n for n in NAMES if n != name and not self.sealed(n)]
                self.leader = others[0]
        self.note("step-down", name)

    def _serve(self, name: str) -> ThreadingHTTPServer:
        nodes = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def answer(self, code: int, data: dict[str, Any] | None = None) -> None:
                body = json.dumps(data).encode() if data is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                nodes.refresh(name)
                path, _, query = self.path.partition("?")
                sealed, version = nodes.sealed(name), nodes.versions[name]
                if path == "/v1/sys/health":
                    if not sealed:
                        nodes.note("health", name)
                    return self.answer(
                        200,
                        {
                            "initialized": True,
                            "sealed": sealed,
                            "standby": name != nodes.leader,
                            "version": version,
                            "cluster_id": "c0ffee00-0000-4000-8000-000000000000",
                            "cluster_name": CLUSTER,
                        },
                    )
                if path == "/v1/sys/seal-status":
                    return self.answer(
                        200,
                        {
                            "type": "awskms",
                            "initialized": True,
                            "sealed": sealed,
                            "version": version,
                        },
                    )
                if path == "/v1/sys/leader":
                    is_self = name == nodes.leader and not sealed
                    return self.answer(
                        200, {"ha_enabled": True, "is_self": is_self, "leader_address": ""}
                    )
                if path == "/v1/sys/storage/raft/configuration":
                    servers = [
                        {"node_id": n, "voter": not nodes.sealed(n), "leader": n == nodes.leader}
                        for n in NAMES
                    ]
                    return self.answer(200, {"data": {"config": {"servers": servers}}})
                if path == "/v1/sys/storage/raft/snapshot":
                    body = raft_snapshot_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                if path.startswith("/v1/secret/data/"):
                    key = path.removeprefix("/v1/secret/data/")
                    with nodes.lock:
                        versions = list(nodes.kv.get(key, []))
                    wanted = int(query.removeprefix("version=") or len(versions))
                    if not 0 < wanted <= len(versions):
                        return self.answer(404, {"errors": []})
                    data = {"data": versions[wanted - 1], "metadata": {"version": wanted}}
                    return self.answer(200, {"data": data})
                return self.answer(404, {"errors": [f"no handler for {path}"]})

            def do_POST(self) -> None:
                nodes.refresh(name)
                path = self.path.partition("?")[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if path == "/v1/sys/step-down":
                    nodes.step_down(name)
                    return self.answer(204)
                if path == "/v1/auth/kubernetes/login":
                    token = "fake-login-" + uuid.uuid4().hex
                    return self.answer(200, {"auth": {"client_token": token}})
                if path == "/v1/auth/token/revoke-self":
                    return self.answer(204)
                if path.startswith("/v1/secret/metadata/"):  # the ledger's max_versions
                    return self.answer(204)
                if path.startswith("/v1/secret/data/"):
                    if name != nodes.leader or nodes.sealed(name):
                        return self.answer(503, {"errors": ["not active"]})
                    key = path.removeprefix("/v1/secret/data/")
                    with nodes.lock:
                        nodes.kv.setdefault(key, []).append(body.get("data", {}))
                        version = len(nodes.kv[key])
                    return self.answer(200, {"data": {"version": version}})
                return self.answer(404, {"errors": [f"no handler for {path}"]})

            do_PUT = do_POST

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def address(self, name: str) -> str:
        return f"http://127.0.0.1:{self.servers[name].server_address[1]}"

    def stop(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


class KindOnFake(KindEnvironment):
    """Node addresses are the fake engine's listeners instead of port-forwards."""

    nodes: UpgradingNodes

    def node_address(self, node: str) -> str:
        return self.nodes.address(node)


# --- fixtures --------------------------------------------------------------------------------------
#: The fake cluster and moto, as the kube environment's own tests have them (its API:
#: ``kube_api`` in conftest.py).
cluster = test_kube_env.cluster
moto = test_kube_env.moto


@pytest.fixture
def helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHelm:
    fake = FakeHelm(tmp_path / "helm")
    monkeypatch.setenv("PATH", f"{fake.dir}{os.pathsep}{os.environ['PATH']}")
    return fake


@pytest.fixture
def nodes(cluster: FakeCluster, helm: FakeHelm) -> Iterator[UpgradingNodes]:
    fake = UpgradingNodes(cluster, helm)
    yield fake
    fake.stop()


def make_env(
    tmp_path: Path, kube_api: FakeKubeApi, nodes: UpgradingNodes, **kube: Any
) -> KindOnFake:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    stack = Stack(
        cluster=CLUSTER,
        snapshots=Snapshots(
            bucket=BUCKET, service_account={"namespace": NS, "name": "vaultdr-snapshot"}
        ),
        kube=Kube(**kube),
    )
    env = KindOnFake(tmp_path / "state", stack, kubeconfig=str(kubeconfig))
    env.nodes = nodes
    return env


def pod_deletions(cluster: FakeCluster) -> list[tuple[int, str]]:
    """(request index, pod) of every pod DELETE, in order."""
    return [
        (i, r.path.rsplit("/", 1)[-1])
        for i, r in enumerate(cluster.requests)
        if r.method == "DELETE" and "/pods/" in r.path
    ]


# --- the chart's key paths -----------------------------------------------------------------------
def test_values_flatten_to_dotted_leaf_paths_with_lists_and_empty_maps_as_leaves() -> None:
    values = {
        "server": {"image": {"tag": "2.6.2"}, "extraVolumes": [{"name": "tls"}], "annotations": {}},
        "a.b": {"c": None},
    }

    assert flatten(values) == {
        "server.image.tag": "2.6.2",
        "server.extraVolumes": [{"name": "tls"}],
        "server.annotations": {},
        "a\\.b.c": None,
    }
    assert key_paths(values) == [
        "a\\.b.c",
        "server.annotations",
        "server.extraVolumes",
        "server.image.tag",
    ]


def test_a_value_the_new_chart_lacks_is_missing_but_keys_under_its_open_maps_are_not() -> None:
    chart = {
        "server": {
            "image": {"repository": "hashicorp/vault", "tag": "1.20.1"},
            "resources": {},
            "extraEnvironmentVars": {},
            "updateStrategyType": "OnDelete",
            "ha": {"raft": {"enabled": False, "config": "ui = true"}},
        }
    }
    ours = {
        "server": {
            "image": {"tag": "1.20.1"},
            "resources": {"requests": {"cpu": "100m"}},
            "extraEnvironmentVars": {"VAULT_CACERT": "/ca.crt"},
            "podManagementPolicy": "Parallel",
            "ha": {"raft": {"enabled": True, "setNodeId": True}},
        }
    }

    assert missing_in_chart(ours, chart) == [
        "server.ha.raft.setNodeId",
        "server.podManagementPolicy",
    ]


# --- the dry run -----------------------------------------------------------------------------------
def test_the_dry_run_lists_the_helm_upgrade_then_followers_then_step_down_then_the_leader(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster, nodes: UpgradingNodes
) -> None:
    env = make_env(tmp_path, kube_api, nodes)
    env.dry_run = True

    lines = plan_upgrade(env, version=TARGET, chart_version=None, drills=True)

    upgrade = next(i for i, line in enumerate(lines) if line.startswith("helm upgrade openbao "))
    assert lines[upgrade].endswith(
        "--version 0.27.0 --namespace vaultdr --reuse-values --set server.image.tag=2.6.3 "
        "--kube-context kind-vaultdr"
    )
    deletes = [i for i, line in enumerate(lines) if line.startswith(f"delete pod {NS}/")]
    deleted = [lines[i].split()[2] for i in deletes]
    step_down = next(i for i, line in enumerate(lines) if line.startswith("step down openbao-0"))
    assert deleted == [f"{NS}/openbao-1", f"{NS}/openbao-2", f"{NS}/openbao-0"]
    assert upgrade < deletes[0] < deletes[1] < step_down < deletes[2]
    assert all("graceful: no gracePeriodSeconds" in lines[i] for i in deletes)
    assert any("snapshot.enabled=false" in line for line in lines[:upgrade])
    assert any(line.startswith("total loss: delete pvc") for line in lines[deletes[2] :])
    assert any(
        line.startswith("helm upgrade --install vaultdr-ops") for line in lines[deletes[2] :]
    )
    assert "helm rollback openbao '<revision before the upgrade>'" in lines[-1]
    assert cluster.mutations() == []
    assert nodes.helm.calls() == []


def test_upgrade_check_dry_run_on_the_cli_runs_no_tool_and_changes_nothing(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    # The nodes through the chart's service (no port-forward): unreachable from here, so the
    # plan names the leader as found at run time.
    stack = yaml.safe_load((REPO / "environments/kind/stack.yaml").read_text())
    stack["kube"]["access"] = "service"
    config = tmp_path / "stack.yaml"
    config.write_text(yaml.safe_dump(stack))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaultdr.cli",
            "upgrade-check",
            "--env",
            "kind",
            "--config",
            str(config),
            "--to",
            TARGET,
            "--chart-version",
            "0.29.2",
            "--dry-run",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PATH": str(empty), "KUBECONFIG": str(kubeconfig)},
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "helm show values openbao/openbao --version 0.29.2" in out
    values = str(tmp_path / "openbao-values.yaml")
    assert (
        f"helm upgrade openbao openbao/openbao --version 0.29.2 --namespace vaultdr --values "
        f"{values} --set server.image.tag=2.6.3"
    ) in out
    assert out.index("helm show values") < out.index("helm upgrade openbao")
    rolling = out[out.index("helm upgrade openbao") : out.index("total loss")]
    assert rolling.index(f"delete pod {NS}/<each follower, in name order>") < rolling.index(
        "step down <the leader at run time>"
    )
    assert rolling.index("step down") < rolling.index(f"delete pod {NS}/<the leader at run time>")
    assert out.count("total loss: delete pvc") == 3
    assert cluster.mutations() == []


def test_a_chart_version_on_the_local_check_is_refused_as_bad_input(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vaultdr.cli", "upgrade-check", "--to", TARGET, "--dry-run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_BAD_INPUT
    assert "--dry-run is for a cluster" in result.stderr
    assert "Traceback" not in result.stderr


# --- the chart upgrade's values check ---------------------------------------------------------------
def values_the_new_chart_drops(tmp_path: Path, helm: FakeHelm) -> Path:
    """Our values setting ``server.podManagementPolicy``; the new chart (what ``helm show
    values`` prints) without it, as vault-helm v0.30.1's values.yaml is."""
    ours = tmp_path / "values.yaml"
    ours.write_text(
        yaml.safe_dump({"server": {"image": {"tag": TODAY}, "podManagementPolicy": "Parallel"}})
    )
    (helm.dir / "chart-values.yaml").write_text(
        yaml.safe_dump({"server": {"image": {"repository": "openbao/openbao", "tag": ""}}})
    )
    return ours


def test_a_chart_upgrade_dropping_a_value_we_set_stops_before_the_cluster_with_strict_values(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    nodes: UpgradingNodes,
    helm: FakeHelm,
) -> None:
    ours = values_the_new_chart_drops(tmp_path, helm)
    env = make_env(tmp_path, kube_api, nodes, values=str(ours))
    options = KubeUpgradeOptions(
        config=tmp_path / "stack.yaml",
        to_version=TARGET,
        report_dir=tmp_path / "reports",
        chart_version="0.29.2",
        strict_values=True,
    )

    with pytest.raises(ConfigError) as refused:
        run_kube_upgrade_check(options, env, say=lambda _: None)

    assert refused.value.exit_code == EXIT_BAD_INPUT
    assert "server.podManagementPolicy" in refused.value.message
    assert "nothing was changed" in refused.value.message
    assert [c[:2] for c in helm.calls()] == [["repo", "add"], ["show", "values"]]
    assert helm.calls()[1] == ["show", "values", "openbao/openbao", "--version", "0.29.2"]
    assert cluster.mutations() == []
    assert not (tmp_path / "reports").exists()


# --- the rolling replacement -----------------------------------------------------------------------
def render_target() -> None:
    """What the check's ``helm upgrade`` does before the pods are replaced."""
    subprocess.run(
        ["helm", "upgrade", "openbao", "--set", f"server.image.tag={TARGET}"], check=True
    )


def test_each_pod_is_deleted_only_after_the_one_before_is_back_on_the_target(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    nodes: UpgradingNodes,
    helm: FakeHelm,
) -> None:
    env = make_env(tmp_path, kube_api, nodes)
    render_target()

    done = rolling_replace(
        env, "root", target=TARGET, previous=TODAY, revision=1, timeout=20, say=lambda _: None
    )

    assert [(u.node, u.role, u.ok) for u in done] == [
        ("openbao-1", "follower", True),
        ("openbao-2", "follower", True),
        ("openbao-0", "leader", True),
    ]
    assert nodes.versions == dict.fromkeys(NAMES, TARGET)
    deletions = pod_deletions(cluster)
    assert [pod for _, pod in deletions] == ["openbao-1", "openbao-2", "openbao-0"]
    for (_, before), (at, _) in itertools.pairwise(deletions):
        back = [e[3] for e in nodes.events if e[:3] == ("health", before, TARGET)]
        assert back and back[0] < at, f"{before} was not back on {TARGET} before the next delete"
    step_down = [e[3] for e in nodes.events if e[:2] == ("step-down", "openbao-0")]
    assert deletions[1][0] < step_down[0] < deletions[2][0]
    for i, _ in deletions:
        assert "gracePeriodSeconds" not in cluster.requests[i].query
        assert (cluster.requests[i].body or {}).get("gracePeriodSeconds") is None
    assert [c[0] for c in helm.calls()] == ["upgrade"]  # no rollback


def test_a_node_that_does_not_come_back_is_rolled_back_and_replaced_again(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    nodes: UpgradingNodes,
    helm: FakeHelm,
) -> None:
    env = make_env(tmp_path, kube_api, nodes)
    nodes.broken_on["openbao-1"] = TARGET
    render_target()

    with pytest.raises(UpgradeFailed) as failed:
        rolling_replace(
            env, "root", target=TARGET, previous=TODAY, revision=1, timeout=3, say=lambda _: None
        )

    assert "openbao-1 was not back on 2.6.3" in failed.value.message
    assert "sealed True" in failed.value.message
    assert [(u.node, u.ok) for u in failed.value.upgrades] == [("openbao-1", False)]
    assert helm.calls()[-1][:3] == ["rollback", "openbao", "1"]
    assert [pod for _, pod in pod_deletions(cluster)] == ["openbao-1", "openbao-1"]
    assert nodes.versions == dict.fromkeys(NAMES, TODAY)


# --- the whole check, failing on one node -------------------------------------------------------------
def env_on_moto(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    nodes: UpgradingNodes,
    moto: awsemu.AwsStack,
    **kube: Any,
) -> KindOnFake:
    """The kind environment with its AWS on moto: the admin's and the snapshot principal's
    keys in their Secrets, the break-glass root token in SSM."""
    for principal, creds in (("admin", moto.admin), ("snapshot", moto.snapshot)):
        cluster.add_secret(
            f"vaultdr-aws-{principal}",
            {
                "AWS_ACCESS_KEY_ID": creds.access_key_id,
                "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
            },
        )
    moto.admin_aws().put_secure_parameter(ssm_path(CLUSTER, "root-token"), "fake-root-token")
    return make_env(
        tmp_path,
        kube_api,
        nodes,
        aws_endpoint=moto.endpoint_url,
        kms_key_id=moto.kms_key_id,
        **kube,
    )


def test_a_node_that_does_not_come_back_fails_the_check_with_what_was_undone(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    nodes: UpgradingNodes,
    helm: FakeHelm,
    moto: awsemu.AwsStack,
) -> None:
    env = env_on_moto(tmp_path, kube_api, cluster, nodes, moto)
    nodes.broken_on["openbao-2"] = TARGET
    said: list[str] = []
    options = KubeUpgradeOptions(
        config=tmp_path / "stack.yaml",
        to_version=TARGET,
        report_dir=tmp_path / "reports",
        drills=False,
        node_timeout=3,
    )

    result = run_kube_upgrade_check(options, env, say=said.append)

    assert result.verdict == "failed", result.explanation
    assert result.exit_code != 0
    assert "openbao-2 was not back on 2.6.3" in result.explanation
    assert "helm rollback openbao to revision 1" in result.explanation
    assert "kubectl -n vaultdr describe pod openbao-2" in result.explanation
    assert result.original_serving is True
    assert nodes.versions == dict.fromkeys(NAMES, TODAY)
    # the followers in order: openbao-1 upgraded, openbao-2 failed; both put back, newest first
    assert [pod for _, pod in pod_deletions(cluster)] == [
        "openbao-1",
        "openbao-2",
        "openbao-2",
        "openbao-1",
    ]
    commands = [" ".join(c[:3]) for c in helm.calls()]
    assert commands == [
        "upgrade --install vaultdr-ops",  # snapshots paused
        "status openbao --namespace",
        "upgrade openbao openbao/openbao",
        "rollback openbao 1",
        "upgrade --install vaultdr-ops",  # snapshots resumed
    ]
    assert "snapshot.enabled=false" in helm.calls()[0]
    assert "snapshot.enabled=false" not in helm.calls()[-1]

    evidence = load_evidence(result.run_dir)
    jsonschema.validate(evidence, json_schema())
    assert evidence["environment"]["name"] == "kind"
    upgrade = evidence["upgrade"]
    assert upgrade["from"]["binary"] == "quay.io/openbao/openbao:2.6.2"
    assert upgrade["to"]["binary"] == "quay.io/openbao/openbao:2.6.3"
    assert upgrade["to"]["chart_version"] == "0.27.0"
    assert upgrade["verdict"] == "failed"
    rolling = next(s for s in evidence["scenarios"] if s["id"] == "rolling-upgrade")
    assert [n["node"] for n in rolling["measurements"]["nodes"]] == ["openbao-1", "openbao-2"]
    assert [n["ok"] for n in rolling["measurements"]["nodes"]] == [True, False]
    text = (result.run_dir / "evidence.json").read_text() + "\n".join(said)
    assert "fake-root-token" not in text
    assert "fake-login-" not in text


def test_a_chart_upgrade_warns_of_each_value_the_new_chart_lacks_and_installs_our_values(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    nodes: UpgradingNodes,
    helm: FakeHelm,
    moto: awsemu.AwsStack,
) -> None:
    ours = values_the_new_chart_drops(tmp_path, helm)
    env = env_on_moto(tmp_path, kube_api, cluster, nodes, moto, values=str(ours))
    nodes.broken_on["openbao-1"] = TARGET  # fail fast: this test is about the values
    options = KubeUpgradeOptions(
        config=tmp_path / "stack.yaml",
        to_version=TARGET,
        report_dir=tmp_path / "reports",
        drills=False,
        node_timeout=2,
        chart_version="0.29.2",
    )

    result = run_kube_upgrade_check(options, env, say=lambda _: None)

    assert "Warning: the new chart has no server.podManagementPolicy" in result.explanation
    upgrade = next(c for c in helm.calls() if c[:2] == ["upgrade", "openbao"])
    assert upgrade[upgrade.index("--version") + 1] == "0.29.2"
    assert upgrade[upgrade.index("--values") + 1] == str(ours)
    assert "--reuse-values" not in upgrade
    evidence = load_evidence(result.run_dir)
    jsonschema.validate(evidence, json_schema())
    assert evidence["upgrade"]["removed_values"] == ["server.podManagementPolicy"]
    assert evidence["upgrade"]["from"]["chart_version"] == "0.27.0"
    assert evidence["upgrade"]["to"]["chart_version"] == "0.29.2"
