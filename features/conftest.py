"""Step definitions for the DR features: thin, each one call into vaultdr.drill.scenario."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, then, when

from vaultdr import checks
from vaultdr.config import Stack, load_stack
from vaultdr.drill.plugin import RUN_KEY
from vaultdr.drill.scenario import ScenarioRun
from vaultdr.envs.factory import AnyEnvironment, open_environment, open_kube_environment
from vaultdr.envs.kube.env import KubeEnvironment
from vaultdr.envs.local.state import STATE_ENV_VAR, resolve_state_dir
from vaultdr.errors import VaultdrError
from vaultdr.polling import wait_for

REPO = Path(__file__).resolve().parent.parent


def _stack_file() -> Path:
    return Path(os.environ.get("VAULTDR_DRILL_CONFIG") or REPO / "environments/local/stack.yaml")


@pytest.fixture(scope="module")
def stack_config() -> Stack:
    return load_stack(_stack_file())


def _kube_environment(name: str, stack_config: Stack) -> KubeEnvironment:
    """The kind/eks stack: brought up (idempotently) unless it is healthy; kept afterwards."""
    state = resolve_state_dir(os.environ.get(STATE_ENV_VAR) or f".vaultdr-{name}")
    environment = open_kube_environment(name, state, stack_config, stack_file=str(_stack_file()))
    try:
        healthy = environment.status(quick=True).healthy
    except VaultdrError:
        healthy = False
    if not healthy:
        environment.up()
    return environment


@pytest.fixture(scope="module")
def env(stack_config: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnyEnvironment]:
    """A fresh local stack per feature (the scenarios break it on purpose); on kind/eks the
    cluster's stack, which heals itself between features."""
    name = os.environ.get("VAULTDR_DRILL_ENV") or "local"
    if name in ("kind", "eks"):
        kube = _kube_environment(name, stack_config)
        try:
            yield kube
        finally:
            kube.close()
        return
    state = tmp_path_factory.mktemp("stack") / "state"
    environment = open_environment("local", state, stack_config, stack_file=str(_stack_file()))
    try:
        environment.up()
    except BaseException:
        if (state / "state.json").exists():
            environment.down()
        raise
    try:
        yield environment
    finally:
        environment.down()


@pytest.fixture
def run(
    request: pytest.FixtureRequest, env: AnyEnvironment, stack_config: Stack
) -> Iterator[ScenarioRun]:
    known = set(stack_config.objectives.rto)
    tags = [m.name for m in request.node.iter_markers() if m.name in known]
    scenario = ScenarioRun(env, stack_config, tags[0] if tags else request.node.name)
    request.node.stash[RUN_KEY] = scenario
    try:
        yield scenario
    finally:
        scenario.close()


# --- given -------------------------------------------------------------------------------------
@given("a healthy stack")
def healthy_stack(run: ScenarioRun) -> None:
    run.ensure_healthy()


@given("a steady write load")
def write_load(run: ScenarioRun) -> None:
    run.start_write_load()


@given("secrets written before the newest snapshot")
def seeded(run: ScenarioRun) -> None:
    run.seed_and_snapshot()


@given("a newer snapshot that is corrupt")
def corrupt_newer(run: ScenarioRun) -> None:
    run.corrupt_a_newer_snapshot()


# --- when ----------------------------------------------------------------------------------------
@when("every node is killed at once")
def kill_all(run: ScenarioRun) -> None:
    run.inject("restart-all")


@when("the leader is killed")
def kill_leader(run: ScenarioRun) -> None:
    run.inject("kill-leader")


@when("a follower's volume is deleted")
def delete_follower_volume(run: ScenarioRun) -> None:
    run.inject("delete-volume", "follower")


@when("every volume is deleted")
def delete_all_volumes(run: ScenarioRun) -> None:
    run.inject("delete-all-volumes")


@when("KMS access is revoked")
def revoke_kms(run: ScenarioRun) -> None:
    run.inject("revoke-kms")


@when("a follower restarts")
def restart_follower(run: ScenarioRun) -> None:
    run.inject("kill-node", "follower")


@when("KMS access is restored")
def restore_kms(run: ScenarioRun) -> None:
    run.inject("restore-kms")


# --- then ----------------------------------------------------------------------------------------
@then("every node is unsealed again within the objective")
def unsealed_in_time(run: ScenarioRun) -> None:
    run.within_objective("unsealed", "unsealed", "healthy", "auth_ready")
    run.wait_fully_healthy()


@then("a new leader serves within the objective")
def leader_in_time(run: ScenarioRun) -> None:
    run.within_objective("rto", "leader", "serving", "auth_ready")


@then(parsers.parse("a new leader serves within {seconds:g} seconds"))
def leader_in_seconds(run: ScenarioRun, seconds: float) -> None:
    run.within_objective("rto", "leader", "serving", "auth_ready", seconds=seconds)


@then("the cluster is healthy again within the objective")
def healthy_in_time(run: ScenarioRun) -> None:
    run.within_objective("healthy", "healthy", "serving", "auth_ready")
    run.wait_fully_healthy()


@then("the cluster restores itself within the objective")
def restored_in_time(run: ScenarioRun) -> None:
    run.within_objective("rto", "restored", "serving", "auth_ready", "healthy")
    assert run.read_restore() is not None, "no auto-restore was recorded after the loss"
    run.wait_fully_healthy()


@then(parsers.parse("the cluster restores itself within {seconds:g} seconds"))
def restored_in_seconds(run: ScenarioRun, seconds: float) -> None:
    run.within_objective("rto", "restored", "serving", "auth_ready", "healthy", seconds=seconds)
    assert run.read_restore() is not None, "no auto-restore was recorded after the loss"
    run.wait_fully_healthy()


@then("an app can log in with kubernetes auth and read its secret")
def app_logs_in(run: ScenarioRun) -> None:
    result = checks.kubernetes_login(
        run.env, namespace="apps", service_account="web", role="web", read="secret/apps/web/config"
    )
    assert result.ok, result.detail


@then("a service account that is not bound is refused")
def intruder_refused(run: ScenarioRun) -> None:
    result = checks.kubernetes_login(
        run.env, namespace="apps", service_account="intruder", role="web"
    )
    assert not result.ok, "apps/intruder logged in with role web"
    refusals = ("not authorized", "denied", "permission")
    assert any(word in result.detail for word in refusals), result.detail


@then("no acknowledged write is lost")
def nothing_lost(run: ScenarioRun) -> None:
    run.verify_ledger()


@then("no acknowledged write before the snapshot is lost")
def nothing_lost_before_snapshot(run: ScenarioRun) -> None:
    if run.ledger_report is None:
        run.verify_ledger(after_restore=True)
    assert run.ledger_report is not None and run.ledger_report.ok


@then("the measured RPO is within the objective")
def rpo_in_objective(run: ScenarioRun) -> None:
    report = run.verify_ledger(after_restore=True)
    run.compare("RPO", report.rpo_seconds, run.objectives.get("rpo_seconds"))


@then("the old leader rejoins as a voter")
def old_leader_back(run: ScenarioRun) -> None:
    run.wait_fully_healthy()
    killed = run.injected[-1].detail["nodes"][0]
    voters = checks.raft_voters(run.env, run.token)
    assert killed in voters.detail, voters.detail


@then("the node that lost its volume serves the data written before")
def node_caught_up(run: ScenarioRun) -> None:
    node = run.injected[-1].detail["nodes"][0]
    client = run.env.client(node, token=run.token)
    assert wait_for(lambda: client.read_kv("secret", "apps/web/config") is not None, timeout=60)
    first = run.ledger.acked[0] if run.ledger and run.ledger.acked else None
    if first is not None:
        assert wait_for(
            lambda: client.read_kv("secret", first.key, version=first.version) is not None,
            timeout=60,
        ), f"{node} never caught up with {first.key} v{first.version}"


@then("the running nodes keep serving")
def running_nodes_serve(run: ScenarioRun) -> None:
    time.sleep(1.0)
    assert run.env.client(token=run.token).read_kv("secret", "apps/web/config") is not None
    result = checks.kubernetes_login(
        run.env, namespace="apps", service_account="web", role="web", read="secret/apps/web/config"
    )
    assert result.ok, result.detail


@then("the restarted node stays sealed")
def restarted_stays_sealed(run: ScenarioRun) -> None:
    node = run.injected[-1].detail["nodes"][0]
    deadline = time.monotonic() + 8.0
    seen_sealed = False
    while time.monotonic() < deadline:
        try:
            status = run.env.client(node).with_timeout(2.0).read_seal_status()
        except Exception:  # noqa: BLE001 - not answering yet is not unsealed
            time.sleep(0.2)
            continue
        assert status.get("sealed") is not False, f"{node} unsealed without KMS access"
        seen_sealed = True
        time.sleep(0.2)
    assert seen_sealed, f"{node} never answered while KMS access was revoked"


@then("the secrets written before the snapshot read back")
def seeded_back(run: ScenarioRun) -> None:
    wrong = run.read_seeded()
    assert not wrong, f"{len(wrong)} secrets did not read back: {wrong[:5]}"


@then("the restore used the snapshot before the corrupt one")
def used_previous(run: ScenarioRun) -> None:
    restore = run.restore or run.read_restore()
    assert restore is not None
    assert restore["snapshot_key"] != run.corrupt_key
    assert restore["snapshot_key"] == run.snapshot_key, restore["snapshot_key"]


@then("the evidence names the skipped snapshot")
def skipped_named(run: ScenarioRun) -> None:
    snapshot = run.measurements().snapshot
    skipped = [s.key for s in snapshot.skipped] if snapshot else []
    assert run.corrupt_key in skipped, skipped
