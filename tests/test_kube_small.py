"""The smaller kube fixes of issue 14: the chart's fullname, the agents' health, the AWS
emulator's image, the kind guard, and freeze-node by exec.

The Kubernetes API is faked at the network edge only (tests/fake_kube.py); the agents'
heartbeat is the real file a real (hung) agent loop writes, read by the real
``vaultdr agent health`` command.
"""

from __future__ import annotations

import json
import os
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

from vaultdr.config import Kube, Stack
from vaultdr.envs.kube import agents, deploy
from vaultdr.envs.kube.clusters import EksEnvironment, KindEnvironment
from vaultdr.errors import EXIT_NOT_GOOD, EXIT_OK

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
