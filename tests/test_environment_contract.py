"""The Environment contract is the only door: both backends offer all of it, and the
front ends need nothing else (no stack is started here)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.conftest import CliRunner, stack_with
from vaultdr.config import Kube, Stack
from vaultdr.envs.base import Environment, FaultPrimitives
from vaultdr.envs.factory import open_environment
from vaultdr.envs.kube.clusters import EksEnvironment, KindEnvironment
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.faults.base import FaultTarget
from vaultdr.files import write_json_atomic


def contract_members() -> set[str]:
    members: set[str] = set()
    for part in (FaultPrimitives, Environment):
        members |= set(getattr(part, "__annotations__", {}))
        members |= {name for name in vars(part) if not name.startswith("_")}
    return members


def test_both_backends_offer_every_member_of_the_contract(tmp_path: Path) -> None:
    kube_stack = Stack(cluster="vaultdr-kind", kube=Kube())
    backends = [
        LocalEnvironment(tmp_path / "local"),
        KindEnvironment(tmp_path / "kind", kube_stack),
        EksEnvironment(tmp_path / "eks", kube_stack),
    ]
    members = contract_members()
    assert {"plan_up", "claimed_for_up", "events_file", "agent_status", "kill_node"} <= members
    for env in backends:
        missing = sorted(name for name in members if not hasattr(env, name))
        assert missing == [], f"{type(env).__name__} lacks {missing}"


def test_the_fault_catalogue_acts_through_the_contracts_fault_part() -> None:
    assert FaultTarget is FaultPrimitives
    assert FaultPrimitives in Environment.__mro__


def test_the_local_stack_says_where_its_events_are_and_a_cluster_that_it_has_none(
    tmp_path: Path,
) -> None:
    local = open_environment("local", tmp_path / "state")
    kind = open_environment("kind", tmp_path / "kind", Stack(cluster="c", kube=Kube()))
    assert local.events_file() == tmp_path / "state" / "events.jsonl"
    assert kind.events_file() is None
    assert kind.agent_status() == {}


def test_up_dry_run_on_local_prints_every_step_and_creates_nothing(
    tmp_path: Path, cli: CliRunner
) -> None:
    _, path = stack_with(tmp_path)
    result = cli("up", "--dry-run", "--config", str(path), state_dir=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"claim and lock the state directory {tmp_path / 'state'}")
    assert any(line.startswith("start the AWS emulator (moto, IAM enforced)") for line in lines)
    assert lines[-1] == "wait until every node is unsealed and a voter, one active"
    assert not (tmp_path / "state").exists()


def test_local_down_plans_to_keep_or_remove_the_state_directory(tmp_path: Path) -> None:
    env = LocalEnvironment(tmp_path / "state")
    assert (
        env.plan_down(keep_data=True)[-1]
        == f"keep the state directory {tmp_path / 'state'} (phase stopped)"
    )
    assert env.plan_down()[-1] == f"remove the state directory {tmp_path / 'state'}"


def test_a_private_json_file_is_replaced_whole_and_only_its_owner_may_read_it(
    tmp_path: Path,
) -> None:
    target = tmp_path / "deep" / "state.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2]}, private=True)
    write_json_atomic(target, {"b": 2}, private=True)
    assert json.loads(target.read_text()) == {"b": 2}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temporary left
