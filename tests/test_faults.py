"""The fault catalogue on a real local stack: each fault acts, is journaled, and rolls back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CliRunner, start_stack, stop_stack
from vaultdr import faults
from vaultdr.agents import snapshot as snap
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.processes import wait_for
from vaultdr.errors import VaultdrError
from vaultdr.vault import VaultClient


def test_fault_list_names_the_whole_catalogue(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("fault", "list", state_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line and line[0] != " "]
    assert names == [
        "kill-leader",
        "kill-node",
        "force-delete-pod",
        "kill-quorum",
        "delete-volume",
        "delete-all-volumes",
        "restart-all",
        "revoke-kms",
        "restore-kms",
        "freeze-node",
        "thaw-node",
        "corrupt-latest-snapshot",
    ]


def test_an_unknown_fault_is_refused_with_the_catalogue(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("fault", "inject", "kill-everything", state_dir=tmp_path)
    assert result.returncode == 2
    assert "unknown fault 'kill-everything'" in result.stderr
    assert "kill-leader" in result.stderr
    assert not (tmp_path / faults.JOURNAL_FILE).exists()


def test_a_fault_without_a_stack_says_so(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("fault", "inject", "kill-leader", state_dir=tmp_path / "none")
    assert result.returncode == 3
    assert "no local stack" in result.stderr


# --- on a real stack -------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvironment]:
    env = start_stack(tmp_path_factory.mktemp("faults"))
    try:
        yield env
    finally:
        try:
            faults.rollback(env)
        finally:
            stop_stack(env)


def healthy(env: LocalEnvironment) -> bool:
    return env.status().healthy


def wait_healthy(env: LocalEnvironment) -> None:
    assert wait_for(lambda: healthy(env), timeout=90, interval=0.5), env.status()


def seal_status(env: LocalEnvironment, node: str, timeout: float = 2.0) -> dict[str, object]:
    client = VaultClient(env.state.node(node).api_addr, ca_file=env.ca_file(), timeout=timeout)
    return client.read_seal_status()


def journal(env: LocalEnvironment) -> list[faults.JournalEntry]:
    return faults.RollbackJournal(env.state_dir).entries()


@pytest.mark.stack
def test_bad_node_argument_is_refused_and_nothing_is_journaled(
    stack: LocalEnvironment, cli: CliRunner
) -> None:
    before = len(journal(stack))
    result = cli("fault", "inject", "kill-node", "node-7", state_dir=stack.state_dir)
    assert result.returncode == 2
    assert "no node 'node-7'" in result.stderr
    assert "leader or follower" in result.stderr
    missing = cli("fault", "inject", "freeze-node", state_dir=stack.state_dir)
    assert missing.returncode == 2
    assert "freeze-node NODE" in missing.stderr
    assert len(journal(stack)) == before


@pytest.mark.stack
def test_kill_leader_elects_another_and_the_old_one_rejoins(stack: LocalEnvironment) -> None:
    wait_healthy(stack)
    old = stack.leader()
    entry = faults.inject(stack, "kill-leader")
    assert entry.detail["nodes"] == [old]
    assert entry.status == "done" and not entry.in_force
    assert wait_for(lambda: stack.leader() not in (None, old), timeout=60)
    wait_healthy(stack)


@pytest.mark.stack
def test_kill_quorum_takes_the_leader_and_a_majority_and_heals(stack: LocalEnvironment) -> None:
    wait_healthy(stack)
    leader = stack.leader()
    entry = faults.inject(stack, "kill-quorum")
    assert len(entry.detail["nodes"]) == 2
    assert entry.detail["nodes"][0] == leader
    wait_healthy(stack)


@pytest.mark.stack
def test_freeze_node_stops_it_answering_until_rollback_thaws_it(
    stack: LocalEnvironment, cli: CliRunner
) -> None:
    wait_healthy(stack)
    result = cli("fault", "inject", "freeze-node", "follower", state_dir=stack.state_dir)
    assert result.returncode == 0, result.stderr
    frozen = journal(stack)[-1]
    node = frozen.args[0]
    assert frozen.in_force and frozen.undo[0]["pid"] > 0
    with pytest.raises(VaultdrError):
        seal_status(stack, node, timeout=1.0)
    rolled = cli("rollback", state_dir=stack.state_dir)
    assert rolled.returncode == 0, rolled.stderr
    assert f"thawed {node}" in rolled.stdout
    assert seal_status(stack, node)["sealed"] is False
    assert not journal(stack)[-1].in_force
    again = cli("rollback", state_dir=stack.state_dir)
    assert "nothing to roll back" in again.stdout


@pytest.mark.stack
def test_revoke_kms_left_in_force_by_a_finished_process_is_rolled_back(
    stack: LocalEnvironment, cli: CliRunner
) -> None:
    """The CLI process that revoked KMS is gone: only the journal knows; rollback restores."""
    wait_healthy(stack)
    assert cli("fault", "inject", "revoke-kms", state_dir=stack.state_dir).returncode == 0
    killed = cli("fault", "inject", "kill-node", "follower", state_dir=stack.state_dir)
    assert killed.returncode == 0, killed.stderr
    node = journal(stack)[-1].args[0]

    def sealed() -> bool:
        return seal_status(stack, node).get("sealed") is True

    assert wait_for(sealed, timeout=30), "a restarted node unsealed without KMS access"
    assert stack.status().extras["kms_access"] == "revoked"
    rolled = cli("rollback", state_dir=stack.state_dir)
    assert rolled.returncode == 0, rolled.stderr
    assert "KMS access restored" in rolled.stdout
    assert wait_for(lambda: seal_status(stack, node).get("sealed") is False, timeout=60)
    wait_healthy(stack)


@pytest.mark.stack
def test_restore_kms_fault_settles_the_revoke_entry(stack: LocalEnvironment) -> None:
    faults.inject(stack, "revoke-kms")
    assert any(e.fault == "revoke-kms" and e.in_force for e in journal(stack))
    entry = faults.inject(stack, "restore-kms")
    assert entry.detail["settled"]
    assert not any(e.in_force for e in journal(stack))
    assert stack.status().extras["kms_access"] == "allowed"


@pytest.mark.stack
def test_corrupt_latest_snapshot_fails_verification_until_rolled_back(
    stack: LocalEnvironment, tmp_path: Path
) -> None:
    from vaultdr.envs.local.snapshots import snapshot_agent_for

    taken = snapshot_agent_for(stack).take()
    entry = faults.inject(stack, "corrupt-latest-snapshot")
    bucket, _prefix = stack.snapshot_location()
    key = entry.detail["key"]
    assert key == taken.key or key > taken.key  # the newest one (the agent may have run)
    aws = stack.aws()
    assert not snap.verify_snapshot(aws, bucket, key, tmp_path).ok
    faults.rollback(stack)
    result = snap.verify_snapshot(aws, bucket, key, tmp_path)
    assert result.ok, result.reason


@pytest.mark.stack
def test_rollback_releases_a_node_a_crashed_volume_deletion_left_held(
    stack: LocalEnvironment,
) -> None:
    """A crash between holding the node and releasing it: the journal entry is 'acting'."""
    wait_healthy(stack)
    node = stack.node_names()[2]
    entry = faults.JournalEntry(
        id="crashed00001",
        fault="delete-volume",
        args=[node],
        started_at="2026-01-01T00:00:00.000+00:00",
        mono=0.0,
        status="acting",
        undo=[{"kind": "release-nodes", "nodes": [node]}],
    )
    faults.RollbackJournal(stack.state_dir).add(entry)
    stack.state.node(node).hold_file.touch()
    stack.kill_node(node)
    assert wait_for(lambda: stack.state.node(node).process() is None, timeout=15)
    results = faults.rollback(stack)
    assert [r.entry_id for r in results] == ["crashed00001"]
    assert not stack.state.node(node).hold_file.exists()
    wait_healthy(stack)


@pytest.mark.stack
def test_journal_holds_no_secret(stack: LocalEnvironment) -> None:
    text = (stack.state_dir / faults.JOURNAL_FILE).read_text()
    json.loads(text)
    assert stack.root_token() not in text
    for key in stack.recovery_keys():
        assert key not in text
