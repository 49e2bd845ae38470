"""The local stack, end to end with real processes: up, self-healing, auth, KMS, down."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import CliRunner, start_stack, stop_stack
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.processes import pid_alive, port_in_use, wait_for
from vaultdr.errors import VaultApiError
from vaultdr.vault import VaultClient

pytestmark = pytest.mark.stack


def node_seal(env: LocalEnvironment, name: str) -> dict[str, object]:
    return VaultClient(env.state.node(name).api_addr, ca_file=env.ca_file()).read_seal_status()


def serving(env: LocalEnvironment, name: str) -> bool:
    """The node answers and is unsealed (a crash-looping or sealed node is not serving)."""
    try:
        return node_seal(env, name)["sealed"] is False
    except VaultApiError:
        return False


def a_follower(env: LocalEnvironment) -> str:
    leader = env.leader()
    return next(n for n in env.node_names() if n != leader)


def wait_restarted(env: LocalEnvironment, name: str, old_pid: int) -> int:
    node = env.state.node(name)
    assert wait_for(
        lambda: (rec := node.process()) is not None and rec.pid != old_pid and rec.alive(),
        timeout=30,
    ), f"{name} was not restarted by the supervisor"
    record = node.process()
    assert record is not None
    return record.pid


def test_up_yields_three_unsealed_voters_with_one_active(awskms_stack: LocalEnvironment) -> None:
    status = awskms_stack.status()
    assert len(status.nodes) == 3
    assert all(n.initialized and n.sealed is False and n.voter for n in status.nodes)
    assert sum(1 for n in status.nodes if n.active) == 1
    assert status.kms_reachable is True
    assert status.extras["kms_access"] == "allowed"
    assert status.healthy


def test_status_json_from_another_process_shows_the_stack_and_no_secret(
    awskms_stack: LocalEnvironment, cli: CliRunner
) -> None:
    result = cli("status", "--json", state_dir=awskms_stack.state_dir)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["healthy"] is True
    assert {n["name"] for n in data["nodes"]} == set(awskms_stack.node_names())
    assert awskms_stack.root_token() not in result.stdout + result.stderr


def test_break_glass_material_is_in_ssm_and_the_root_token_works(
    awskms_stack: LocalEnvironment,
) -> None:
    token = awskms_stack.root_token()
    assert "root" in awskms_stack.client(token=token).lookup_self()["policies"]
    assert len(awskms_stack.recovery_keys()) == 3


def test_a_sigkilled_node_comes_back_and_unseals_by_itself(awskms_stack: LocalEnvironment) -> None:
    env = awskms_stack
    name = a_follower(env)
    record = env.state.node(name).process()
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    wait_restarted(env, name, record.pid)
    assert wait_for(lambda: node_seal(env, name)["sealed"] is False, timeout=60)
    assert wait_for(lambda: env.status(quick=True).healthy, timeout=60)


def test_a_node_whose_data_dir_is_deleted_rejoins_empty_and_catches_up(
    awskms_stack: LocalEnvironment,
) -> None:
    env = awskms_stack
    root = env.client(token=env.root_token())
    root.write_kv("secret", "drill/before-volume-loss", {"value": "kept"})
    name = a_follower(env)
    node = env.state.node(name)
    old = node.process()
    assert old is not None
    env.delete_volume(name)
    wait_restarted(env, name, old.pid)
    assert wait_for(lambda: node_seal(env, name)["sealed"] is False, timeout=60)
    assert wait_for(lambda: env.status(quick=True).healthy, timeout=60)

    def caught_up() -> bool:
        servers = env.client(token=env.root_token()).read_autopilot_state()["servers"]
        return bool(servers[name]["healthy"]) and servers[name]["status"] == "voter"

    assert wait_for(caught_up, timeout=60)
    through_node = VaultClient(node.api_addr, ca_file=env.ca_file(), token=env.root_token())
    assert through_node.read_kv("secret", "drill/before-volume-loss") == {"value": "kept"}


def test_kubernetes_login_for_a_bound_service_account_reads_its_secret(
    awskms_stack: LocalEnvironment,
) -> None:
    env = awskms_stack
    env.client(token=env.root_token()).write_kv("secret", "apps/web/config", {"db": "web-db"})
    jwt = env.service_account_token("apps", "web")
    token = env.client().login_kubernetes(role="web", jwt=jwt)
    assert env.client(token=token).read_kv("secret", "apps/web/config") == {"db": "web-db"}


def test_kubernetes_login_is_refused_for_an_unbound_service_account(
    awskms_stack: LocalEnvironment,
) -> None:
    jwt = awskms_stack.service_account_token("apps", "intruder")
    with pytest.raises(VaultApiError):
        awskms_stack.client().login_kubernetes(role="web", jwt=jwt)


def test_kubernetes_login_is_refused_after_the_service_account_is_deleted(
    awskms_stack: LocalEnvironment,
) -> None:
    env = awskms_stack
    jwt = env.service_account_token("apps", "batch")
    env.client().login_kubernetes(role="batch", jwt=jwt)
    kube = env.kube()
    kube.delete_service_account("apps", "batch")
    try:
        with pytest.raises(VaultApiError):
            env.client().login_kubernetes(role="batch", jwt=jwt)
    finally:
        kube.create_service_account("apps", "batch")


def test_up_refuses_when_a_stack_is_already_running(
    awskms_stack: LocalEnvironment, cli: CliRunner
) -> None:
    result = cli("up", "--config", awskms_stack.stack_file, state_dir=awskms_stack.state_dir)
    assert result.returncode != 0
    assert "already running" in result.stderr
    assert awskms_stack.status(quick=True).healthy


def assert_kms_revocation_keeps_a_restarted_node_sealed(env: LocalEnvironment) -> None:
    """Revoke KMS, restart a follower: it stays sealed; restore: it unseals without help."""
    name = a_follower(env)
    root = env.client(token=env.root_token())
    env.revoke_kms()
    try:
        root.write_kv("secret", "drill/during-revocation", {"value": "written"})
        record = env.state.node(name).process()
        assert record is not None
        os.kill(record.pid, signal.SIGKILL)
        # awskms: the node starts and stays sealed; transit: the seal refuses to
        # configure and the node crash-loops. Either way it must not serve, for
        # longer than the server's own 5 s unseal retry.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert not serving(env, name)
            time.sleep(0.5)
        assert env.status().extras["kms_access"] == "revoked"
    finally:
        env.restore_kms()
    assert wait_for(lambda: serving(env, name), timeout=60)
    assert wait_for(lambda: env.status(quick=True).healthy, timeout=60)
    assert root.read_kv("secret", "drill/during-revocation") == {"value": "written"}


def test_denying_kms_decrypt_keeps_a_restarted_node_sealed_until_lifted(
    awskms_stack: LocalEnvironment,
) -> None:
    assert_kms_revocation_keeps_a_restarted_node_sealed(awskms_stack)


def test_the_transit_seal_heals_the_same_way_and_down_leaves_nothing(
    tmp_path: Path, cli: CliRunner
) -> None:
    env = start_stack(tmp_path, seal={"type": "transit"})
    try:
        status = env.status()
        assert status.healthy
        assert status.seal == "transit"
        assert_kms_revocation_keeps_a_restarted_node_sealed(env)
        records = env.running_processes()
        names = {r.name for r in records}
        assert {"supervisor", "moto", "kubeapi", "transit"} <= names
        ports = [p for n in env.state.nodes for p in (n.api_port, n.cluster_port)]
    except BaseException:
        stop_stack(env)
        raise
    result = cli("down", state_dir=env.state_dir)
    assert result.returncode == 0, result.stderr
    assert not any(pid_alive(r.pid, r.start_time) for r in records)
    assert not any(port_in_use(p) for p in ports)
    assert not env.state_dir.exists()
    again = cli("down", state_dir=env.state_dir)
    assert again.returncode != 0
    assert "nothing to stop" in again.stderr


def test_no_root_token_recovery_key_or_secret_value_appears_in_any_log_or_output(
    awskms_stack: LocalEnvironment, cli: CliRunner
) -> None:
    env = awskms_stack
    root = env.client(token=env.root_token())
    root.write_kv("secret", "apps/web/canary", {"value": "canary-value-7f3a9c"})
    jwt = env.service_account_token("apps", "web")
    outputs = [
        cli(*args, state_dir=env.state_dir)
        for args in (("status",), ("status", "--json"), ("env",), ("configure", "--dry-run"))
    ]
    assert all(r.returncode == 0 for r in outputs), [r.stderr for r in outputs]
    secrets = [env.root_token(), *env.recovery_keys(), "canary-value-7f3a9c", jwt]
    texts = [r.stdout + r.stderr for r in outputs]
    texts += [p.read_text(errors="replace") for p in env.state_dir.rglob("*.log")]
    texts += [p.read_text(errors="replace") for p in env.state_dir.rglob("*.jsonl")]
    assert len(texts) >= 8
    for secret in secrets:
        assert not any(secret in text for text in texts)
