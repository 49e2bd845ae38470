"""The smaller kube fixes of issue 14: the chart's fullname, the agents' health, the AWS
emulator's image, the kind guard, and freeze-node by exec.

The Kubernetes API is faked at the network edge only (tests/fake_kube.py); the agents'
heartbeat is the real file a real (hung) agent loop writes, read by the real
``vaultdr agent health`` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fake_kube import FakeCluster, FakeKubeApi
from vaultdr import faults
from vaultdr.config import Kube, Stack
from vaultdr.envs.kube import agents, deploy
from vaultdr.envs.kube.api import image_repository, replace_images
from vaultdr.envs.kube.clusters import EksEnvironment, KindEnvironment
from vaultdr.envs.kube.env import FROZEN_FILE, DestructiveFaultRefused
from vaultdr.errors import EXIT_FAULT, EXIT_NOT_GOOD, EXIT_OK, FaultError, KubeApiError
from vaultdr.polling import wait_for

REPO = Path(__file__).resolve().parent.parent
NS = "vaultdr"


# --- the official chart's fullname ----------------------------------------------------------------
def stack_with_values(
    tmp_path: Path, *, release: str, values: dict[str, Any] | None = None, **kube: Any
) -> tuple[Stack, str]:
    """A stack whose kube.values file (beside the stack file) holds ``values``."""
    (tmp_path / "openbao-values.yaml").write_text(yaml.safe_dump(values or {"server": {}}))
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text("cluster: vaultdr-kind\n")
    stack = Stack(
        cluster="vaultdr-kind", kube=Kube(release=release, values="openbao-values.yaml", **kube)
    )
    return stack, str(stack_file)


@pytest.mark.parametrize(
    ("release", "values", "fullname"),
    [
        ("openbao", None, "openbao"),
        ("prod", None, "prod-openbao"),
        ("my-openbao", None, "my-openbao"),
        ("prod", {"fullnameOverride": "bao"}, "bao"),
        ("prod", {"nameOverride": "secrets"}, "prod-secrets"),
        ("x" * 60, None, "x" * 60 + "-op"),
        ("a" * 55 + "-", {"fullnameOverride": "b" * 62 + "-c"}, "b" * 62),
    ],
)
def test_node_names_follow_the_official_charts_fullname(
    tmp_path: Path, release: str, values: dict[str, Any] | None, fullname: str
) -> None:
    stack, stack_file = stack_with_values(tmp_path, release=release, values=values)
    env = KindEnvironment(tmp_path / "state", stack, stack_file=stack_file)

    assert env.statefulset() == fullname
    assert env.node_names() == [f"{fullname}-{i}" for i in range(3)]
    assert env.pvc_name(env.node_names()[1]) == f"data-{fullname}-1"
    # The chart labels pods with the release name, not the fullname.
    assert env.pod_selector() == f"app.kubernetes.io/instance={release},component=server"


def test_the_fullname_is_the_vault_charts_for_hashicorp_vault(tmp_path: Path) -> None:
    stack, stack_file = stack_with_values(tmp_path, release="prod", chart="hashicorp/vault")
    env = KindEnvironment(tmp_path / "state", stack, stack_file=stack_file)

    assert env.statefulset() == "prod-vault"
    assert deploy.official_fullname("vault", "vault") == "vault"
    assert deploy.official_fullname("my-vault-1", "vault") == "my-vault-1"


def test_the_service_address_and_tls_hosts_use_the_fullname(tmp_path: Path) -> None:
    stack, stack_file = stack_with_values(tmp_path, release="prod", access="service")
    env = KindEnvironment(tmp_path / "state", stack, stack_file=stack_file)

    assert env.node_address("prod-openbao-2") == (
        "https://prod-openbao-2.prod-openbao-internal.vaultdr.svc:8200"
    )
    hosts = deploy.node_hosts(env)
    assert "*.prod-openbao-internal" in hosts and "*.prod-openbao-internal.vaultdr.svc" in hosts
    assert "prod-openbao-active.vaultdr.svc" in hosts
    assert not [h for h in hosts if h.startswith(("prod.", "prod-active", "*.prod-internal"))]


def test_the_kind_values_name_the_statefulset_the_stack_expects() -> None:
    """environments/kind: release openbao, no override -> pods openbao-N, as the values'
    retry_join addresses and the ops chart's vault.release say."""
    stack_file = REPO / "environments/kind/stack.yaml"
    from vaultdr.config import load_stack

    env = KindEnvironment(Path("/nonexistent"), load_stack(stack_file), stack_file=str(stack_file))
    ops = yaml.safe_load((REPO / "environments/kind/ops-values.yaml").read_text())
    assert env.statefulset() == ops["vault"]["release"] == "openbao"


def test_an_unreadable_values_file_is_a_clear_config_error(tmp_path: Path) -> None:
    stack, stack_file = stack_with_values(tmp_path, release="prod")
    (tmp_path / "openbao-values.yaml").write_text("server: [unclosed\n")
    env = EksEnvironment(tmp_path / "state", stack, stack_file=stack_file)

    with pytest.raises(Exception, match="cannot read the chart values") as caught:
        env.node_names()
    assert getattr(caught.value, "exit_code", None) == 2


# --- the agents' heartbeat and `vaultdr agent health` ------------------------------------------------
def health_cli(state_dir: Path, max_age: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAULTDR_STATE_DIR": str(state_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "vaultdr.cli", "agent", "health", "--max-age", str(max_age)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_agent_health_fails_without_a_heartbeat_and_passes_with_a_fresh_one(
    tmp_path: Path,
) -> None:
    missing = health_cli(tmp_path, 30)
    assert missing.returncode == EXIT_NOT_GOOD
    assert "no heartbeat" in missing.stdout

    agents.Heartbeat(tmp_path / agents.HEARTBEAT_FILE).beat("waiting")
    fresh = health_cli(tmp_path, 30)
    assert fresh.returncode == EXIT_OK, fresh.stdout + fresh.stderr
    assert fresh.stdout.startswith("healthy")


def test_agent_health_fails_when_the_last_progress_is_older_than_max_age(tmp_path: Path) -> None:
    path = tmp_path / agents.HEARTBEAT_FILE
    agents.Heartbeat(path).beat("snapshot")
    record = json.loads(path.read_text())
    record["monotonic"] -= 700  # the last beat was 700 s ago
    path.write_text(json.dumps(record))

    stale = health_cli(tmp_path, 600)
    assert stale.returncode == EXIT_NOT_GOOD
    assert "no progress for 70" in stale.stdout and "snapshot" in stale.stdout


def test_a_heartbeat_from_another_boot_or_broken_is_unhealthy(tmp_path: Path) -> None:
    """The heartbeat file outlived a node reboot: its monotonic time is ahead of this
    boot's clock, which used to read as a negative age, healthy. NaN likewise."""
    path = tmp_path / agents.HEARTBEAT_FILE
    agents.Heartbeat(path).beat("waiting")
    record = json.loads(path.read_text())
    for monotonic in (record["monotonic"] + 10_000, float("nan")):
        path.write_text(json.dumps({**record, "monotonic": monotonic}))
        code, line = agents.check_health(path, max_age=600)
        assert code == EXIT_NOT_GOOD, line
        assert "not from this boot" in line


def test_a_restore_in_progress_is_allowed_its_budget(tmp_path: Path) -> None:
    path = tmp_path / agents.HEARTBEAT_FILE
    agents.Heartbeat(path).beat("restore", budget=agents.RESTORE_BUDGET)
    record = json.loads(path.read_text())
    record["monotonic"] -= 900
    path.write_text(json.dumps(record))

    assert agents.check_health(path, max_age=300)[0] == EXIT_OK
    record["monotonic"] -= agents.RESTORE_BUDGET
    path.write_text(json.dumps(record))
    assert agents.check_health(path, max_age=300)[0] == EXIT_NOT_GOOD


def test_agent_health_refuses_a_non_positive_max_age(tmp_path: Path) -> None:
    done = health_cli(tmp_path, 0)
    assert done.returncode == 2
    assert "--max-age must be positive" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_idle_agent_waiting_longer_than_max_age_stays_healthy(tmp_path: Path) -> None:
    """The scaled-down case of a 60 s snapshot interval under a shorter max-age: the wait
    for the next tick beats, so the probe never sees a stale heartbeat."""
    path = tmp_path / agents.HEARTBEAT_FILE
    stop = agents.BeatingStop(agents.Heartbeat(path), every=0.05)
    waiter = threading.Thread(target=stop.wait, args=(1.0,))
    waiter.start()
    answers = []
    deadline = time.monotonic() + 0.9
    time.sleep(0.1)
    while time.monotonic() < deadline:
        answers.append(agents.check_health(path, max_age=0.3)[0])
        time.sleep(0.05)
    waiter.join()
    assert answers and set(answers) == {EXIT_OK}


def test_a_set_stop_ends_a_beating_wait_at_once(tmp_path: Path) -> None:
    stop = agents.BeatingStop(agents.Heartbeat(tmp_path / agents.HEARTBEAT_FILE), every=5.0)
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    assert stop.wait(30.0) is True
    assert time.monotonic() - started < 2.0


@pytest.fixture
def hung_vault() -> Iterator[str]:
    """A node that accepts connections and never answers: a hung dependency."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for conn in accepted:
        conn.close()


def test_a_snapshot_agent_stuck_in_a_snapshot_goes_stale(tmp_path: Path, hung_vault: str) -> None:
    pod = agents.PodSettings.from_environ(
        {
            "VAULTDR_VAULT_ADDR": hung_vault,
            "VAULTDR_NODE_ADDRS": hung_vault,
            "VAULTDR_STATEFULSET": "openbao",
            "VAULTDR_STATE_DIR": str(tmp_path),
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        }
    )
    agent = agents.snapshot_agent(pod, Stack(cluster="vaultdr-kind", kube=Kube()))
    path = tmp_path / agents.HEARTBEAT_FILE
    runner = threading.Thread(target=agent.run_once, daemon=True)
    runner.start()
    time.sleep(0.6)

    assert runner.is_alive()  # still waiting for the node's answer
    assert json.loads(path.read_text())["activity"] == "snapshot"
    code, line = agents.check_health(path, max_age=0.5)
    assert code == EXIT_NOT_GOOD and "no progress" in line


# --- the fake cluster ---------------------------------------------------------------------------------


def kind_env(tmp_path: Path, kube_api: FakeKubeApi, stack: Stack | None = None) -> KindEnvironment:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    return KindEnvironment(
        tmp_path / "state",
        stack or Stack(cluster="vaultdr-kind", kube=Kube()),
        kubeconfig=str(kubeconfig),
    )


POD = f"/api/v1/namespaces/{NS}/pods"


# --- the AWS emulator's image -------------------------------------------------------------------------
def test_the_aws_emulator_runs_the_same_agent_image_as_the_ops_chart(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    image = "registry.example:5000/team/vaultdr-agent:9.9.9"
    env = kind_env(tmp_path, kube_api, Stack(cluster="vaultdr-kind", kube=Kube(image=image)))
    for secret in env.kube.aws_secrets.values():  # what the bootstrap Job writes
        cluster.add_secret(secret, {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})

    deploy.apply_aws_emulator(env, str(REPO / "environments/kind/aws-emulator.yaml"))

    moto = cluster.get("deployments", NS, "moto")
    job = cluster.get("jobs", NS, "vaultdr-aws-bootstrap")
    assert moto is not None and job is not None
    for workload in (moto, job):
        images = [c["image"] for c in workload["spec"]["template"]["spec"]["containers"]]
        assert images == [image] == [deploy.agent_image(env)]
    # Everything else of the manifest is created as written.
    assert {k for (k, ns, _) in cluster.objects if ns == NS} >= {
        "serviceaccounts",
        "roles",
        "rolebindings",
        "services",
    }


def test_image_replacement_touches_only_the_named_repository() -> None:
    objects = [
        {
            "kind": "Deployment",
            "spec": {
                "template": {
                    "spec": {
                        "initContainers": [{"name": "i", "image": "vaultdr-agent"}],
                        "containers": [
                            {"name": "a", "image": "vaultdr-agent:0.1.0"},
                            {"name": "b", "image": "busybox:1.36"},
                            {"name": "c", "image": "localhost:5000/vaultdr-agent:1"},
                        ],
                    }
                }
            },
        }
    ]
    replaced = replace_images(objects, {"vaultdr-agent": "vaultdr-agent:2.0.0"})
    spec = replaced[0]["spec"]["template"]["spec"]
    assert [c["image"] for c in spec["initContainers"]] == ["vaultdr-agent:2.0.0"]
    assert [c["image"] for c in spec["containers"]] == [
        "vaultdr-agent:2.0.0",
        "busybox:1.36",
        "localhost:5000/vaultdr-agent:1",
    ]
    assert objects[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "vaultdr-agent:0.1.0"
    assert image_repository("localhost:5000/a/b@sha256:00") == "localhost:5000/a/b"


# --- the kind guard ---------------------------------------------------------------------------------
def test_a_kind_named_context_of_another_cluster_is_refused(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    for key in [k for k in cluster.objects if k[0] == "nodes"]:
        del cluster.objects[key]
    cluster.kind_cluster = None
    cluster.add_nodes()  # an EKS cluster's nodes behind a context called kind-vaultdr
    env = kind_env(tmp_path, kube_api)

    with pytest.raises(
        DestructiveFaultRefused, match="is not the kind cluster 'vaultdr'"
    ) as caught:
        faults.inject(env, "kill-node", ["openbao-1"])
    assert "kind export kubeconfig --name vaultdr" in caught.value.hint
    assert cluster.mutations() == []
    assert ("GET", "/api/v1/nodes/vaultdr-control-plane") in [
        (r.method, r.path) for r in cluster.requests
    ]


def test_another_kind_clusters_api_is_refused(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    for key in [k for k in cluster.objects if k[0] == "nodes"]:
        del cluster.objects[key]
    cluster.kind_cluster = "scratch"
    cluster.add_nodes()
    env = kind_env(tmp_path, kube_api)

    with pytest.raises(DestructiveFaultRefused, match="no such node"):
        env.check_destructive("delete-volume")
    assert cluster.mutations() == []


def test_the_kind_clusters_own_api_is_allowed(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kind_env(tmp_path, kube_api)
    env.check_destructive("kill-node")  # kind's control-plane node, kind's providerID
    node = env.api.read_node("vaultdr-control-plane")
    assert node is not None and node.provider_id == "kind://docker/vaultdr/vaultdr-control-plane"


# --- freeze-node / thaw-node by exec ----------------------------------------------------------------
@pytest.fixture
def engine_process(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real process standing for the engine in the pod (it is what gets stopped)."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    with contextlib.suppress(OSError):
        os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def container_bin(tmp_path: Path, *, pidof: dict[str, int] | None) -> str:
    """The pod container's PATH: its shell and, unless None, a pidof that knows the
    container's own processes (the host's pidof would see every process of this machine)."""
    directory = tmp_path / f"bin-{len(list(tmp_path.glob('bin-*')))}"
    directory.mkdir()
    (directory / "sh").symlink_to(shutil.which("sh") or "/bin/sh")
    if pidof is not None:
        cases = "".join(f"  {name}) echo {pid} ;;\n" for name, pid in pidof.items())
        script = directory / "pidof"
        script.write_text(f'#!/bin/sh\ncase "$1" in\n{cases}  *) exit 1 ;;\nesac\n')
        script.chmod(0o755)
    return str(directory)


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_state(pid: int, wanted: str) -> str:
    deadline = time.monotonic() + 5
    while process_state(pid) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    return process_state(pid)


def test_freeze_node_stops_the_engine_in_its_pod_and_thaw_continues_it(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    engine_process: subprocess.Popen[bytes],
) -> None:
    cluster.exec_path["openbao-1"] = container_bin(tmp_path, pidof={"bao": engine_process.pid})
    env = kind_env(tmp_path, kube_api)

    entry = faults.inject(env, "freeze-node", ["openbao-1"])

    assert wait_state(engine_process.pid, "T") == "T"
    assert entry.detail["pid"] == engine_process.pid
    (stop,) = cluster.execs
    assert stop["pod"] == "openbao-1" and stop["container"] == "openbao"
    assert stop["command"][:2] == ["sh", "-c"] and "kill -STOP" in stop["command"][2]
    assert "pidof bao" in stop["command"][2]
    journal = json.loads((env.state_dir / FROZEN_FILE).read_text())
    assert journal == {"openbao-1": cluster.uid("pods", "openbao-1")}
    assert cluster.mutations() == []  # an exec is a GET upgrade: nothing is deleted

    faults.inject(env, "thaw-node", ["openbao-1"])

    assert wait_state(engine_process.pid, "S") == "S"
    assert "kill -CONT" in cluster.execs[-1]["command"][2]
    assert json.loads((env.state_dir / FROZEN_FILE).read_text()) == {}


def test_thaw_acts_only_on_the_pod_that_was_frozen(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    engine_process: subprocess.Popen[bytes],
) -> None:
    cluster.exec_path["openbao-2"] = container_bin(tmp_path, pidof={"bao": engine_process.pid})
    env = kind_env(tmp_path, kube_api)
    frozen_uid = cluster.uid("pods", "openbao-2")
    pid, _ = env.freeze_node("openbao-2")
    assert pid == engine_process.pid
    # Force-deleted: the object goes at once and the StatefulSet makes a new pod (a
    # graceful delete would keep the frozen pod, same uid, for its grace period).
    env.api.delete_pod(NS, "openbao-2", grace_seconds=0)
    assert wait_for(lambda: cluster.uid("pods", "openbao-2") not in ("", frozen_uid), timeout=30)

    assert env.thaw_node("openbao-2", pid, 0) is False

    assert len(cluster.execs) == 1  # no CONT was sent into the replacement pod
    assert json.loads((env.state_dir / FROZEN_FILE).read_text()) == {}


def test_thaw_without_a_freeze_sends_nothing(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kind_env(tmp_path, kube_api)
    assert env.thaw_node("openbao-0") is False
    assert cluster.execs == []


@pytest.mark.parametrize(
    ("pidof", "message"),
    [
        (None, "pidof is not in the container"),
        ({"vault": 4242}, "no bao process runs in the container"),
        ({"bao": 1}, "bao is PID 1 of the container"),
    ],
)
def test_freeze_node_says_clearly_why_it_cannot_signal(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    pidof: dict[str, int] | None,
    message: str,
) -> None:
    cluster.exec_path["openbao-1"] = container_bin(tmp_path, pidof=pidof)
    env = kind_env(tmp_path, kube_api)

    with pytest.raises(FaultError, match=message) as caught:
        env.freeze_node("openbao-1")
    assert caught.value.exit_code == EXIT_FAULT
    assert json.loads((env.state_dir / FROZEN_FILE).read_text()) == {}  # nothing to thaw


def test_freeze_node_in_a_pod_without_a_shell_is_a_fault_error(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kind_env(tmp_path, kube_api)
    with pytest.raises(FaultError, match="could not run"):
        env.freeze_node("openbao-0")


def test_hashicorp_vault_is_frozen_by_its_own_process_and_container(
    tmp_path: Path,
    kube_api: FakeKubeApi,
    cluster: FakeCluster,
    engine_process: subprocess.Popen[bytes],
) -> None:
    pod = cluster.get("pods", NS, "openbao-0")
    assert pod is not None
    pod["spec"]["containers"][0]["name"] = "vault"
    cluster.exec_path["openbao-0"] = container_bin(tmp_path, pidof={"vault": engine_process.pid})
    stack = Stack(cluster="vaultdr-kind", engine={"kind": "vault"}, kube=Kube())  # type: ignore[arg-type]
    env = kind_env(tmp_path, kube_api, stack)

    env.freeze_node("openbao-0")

    assert wait_state(engine_process.pid, "T") == "T"
    assert cluster.execs[0]["container"] == "vault"
    assert "pidof vault" in cluster.execs[0]["command"][2]
    assert env.thaw_node("openbao-0") is True


def test_exec_into_a_missing_container_or_pod_is_a_clear_api_error(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kind_env(tmp_path, kube_api)
    with pytest.raises(KubeApiError, match="failed: 400") as bad:
        env.api.exec_in_pod(NS, "openbao-0", ["true"], container="vault")
    assert "not in the pod" in bad.value.hint
    with pytest.raises(KubeApiError, match="failed: 404"):
        env.api.exec_in_pod(NS, "openbao-9", ["true"])


def test_a_dry_run_freeze_sends_no_exec(
    tmp_path: Path, kube_api: FakeKubeApi, cluster: FakeCluster
) -> None:
    env = kind_env(tmp_path, kube_api)
    with env.recording() as planned:
        env.freeze_node("openbao-1")
    assert cluster.execs == []
    assert planned == [
        "exec in pod vaultdr/openbao-1: kill -STOP $(pidof bao) (thaw-node or rollback sends SIGCONT)"
    ]
