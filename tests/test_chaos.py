"""The Chaos Toolkit drills in drills/, run for real against local stacks.

Each shipped drill passes with ``vaultdr chaos run`` and with plain ``chaos
run``; the negative controls fail where they must; a killed drill's KMS revoke
is undone by ``vaultdr rollback``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import REPO, CliRunner, start_stack, stop_stack
from tests.test_evidence import json_schema
from vaultdr import faults
from vaultdr.chaos.actions import FAULT_ACTIONS
from vaultdr.drill.chaos_drills import journal_scenario
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.processes import wait_for
from vaultdr.errors import EXIT_BAD_INPUT
from vaultdr.evidence.record import run_record

DRILLS = REPO / "drills"
CHAOS = Path(sys.executable).with_name("chaos")


def test_chaos_discover_finds_the_extension(tmp_path: Path) -> None:
    out = tmp_path / "discovery.json"
    result = subprocess.run(
        [
            *(str(CHAOS), "--no-version-check", "--no-log-file", "discover", "--no-system-info"),
            *("--no-install", "--discovery-path", str(out), "vaultdr"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    activities = json.loads(out.read_text())["activities"]
    found = {(a["type"], a["name"]) for a in activities}
    assert ("action", "inject_fault") in found
    # One action per fault of the catalogue, with the fault's own arguments.
    arguments = {a["name"]: [x["name"] for x in a.get("arguments", [])] for a in activities}
    for name, fault in faults.REGISTRY.items():
        action = FAULT_ACTIONS[name]
        assert ("action", action) in found, name
        assert arguments[action] == [p.name for p in fault.params] + ["configuration"], name
    assert ("action", "wait_for_recovery") in found
    assert ("probe", "no_acknowledged_write_lost") in found
    assert ("probe", "kubernetes_login_works") in found


@pytest.mark.parametrize("drill", sorted(p.name for p in DRILLS.glob("*.json")))
def test_each_drill_is_a_valid_experiment(drill: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CHAOS), "--no-version-check", "--no-log-file", "validate", str(DRILLS / drill)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    experiment = json.loads((DRILLS / drill).read_text())
    assert experiment["rollbacks"], "every drill rolls back its faults"
    assert experiment["steady-state-hypothesis"]["probes"]


def test_a_drill_without_a_stack_fails_clearly(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("chaos", "run", str(DRILLS / "kill-leader.json"), state_dir=tmp_path / "none")
    assert result.returncode == 7
    assert "steady state was not met before the method" in result.stderr
    assert "no stack in" in result.stderr or "vaultdr up" in result.stderr


def test_a_malformed_experiment_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    result = cli("chaos", "run", str(bad), state_dir=tmp_path)
    assert result.returncode == 2
    assert "is not valid JSON" in result.stderr


# --- on real stacks ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvironment]:
    env = start_stack(tmp_path_factory.mktemp("drills"))
    try:
        yield env
    finally:
        try:
            faults.rollback(env)
        finally:
            stop_stack(env)


def journal_path_of(result: subprocess.CompletedProcess[str]) -> Path:
    line = next(x for x in result.stdout.splitlines() if x.startswith("journal: "))
    return Path(line.removeprefix("journal: "))


def journal_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(journal_path_of(result).read_text())
    return data


def wait_healthy(env: LocalEnvironment) -> None:
    assert wait_for(lambda: env.status().healthy, timeout=120, interval=0.5), env.status()


def plain_chaos_run(env: LocalEnvironment, experiment: Path, journal: Path) -> int:
    result = subprocess.run(
        [
            *(str(CHAOS), "--no-version-check", "--no-log-file", "run"),
            *("--journal-path", str(journal), "--rollback-strategy", "always", str(experiment)),
        ],
        capture_output=True,
        text=True,
        cwd=journal.parent,
        env={**os.environ, "VAULTDR_STATE_DIR": str(env.state_dir)},
        timeout=600,
        check=False,
    )
    return result.returncode


def assert_completed(journal: dict[str, Any]) -> None:
    assert journal["status"] == "completed"
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["deviated"] is False
    assert all(run["status"] == "succeeded" for run in journal["run"]), journal["run"]


@pytest.mark.stack
def test_kill_leader_drill_passes_and_loses_no_acknowledged_write(
    stack: LocalEnvironment, cli: CliRunner
) -> None:
    wait_healthy(stack)
    result = cli("chaos", "run", str(DRILLS / "kill-leader.json"), state_dir=stack.state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    journal = journal_of(result)
    assert_completed(journal)
    measured = journal["vaultdr"]
    assert measured["ledger"]["acknowledged"] > 0
    assert measured["ledger"]["lost"] == []
    assert measured["recovery"]["rto"] is not None
    assert measured["recovery"]["leader"] is not None
    assert measured["faults"][0]["fault"] == "kill-leader"
    assert (Path(measured["results_dir"]) / "timeline.json").exists()
    assert stack.root_token() not in json.dumps(journal)
    # The drill as `vaultdr drill --chaos` records it: evidence the published schema accepts.
    record = journal_scenario(DRILLS / "kill-leader.json", journal_path_of(result))
    evidence = run_record(
        run_id="20261123T040000Z-abcdef",
        started=dt.datetime.now(dt.UTC),
        scenarios=[record],
        environment="local",
        engine={"kind": "openbao", "version": "2.6.2"},
        stack={"nodes": 3, "seal": "awskms", "storage": "raft"},
        artifacts={"junit": None, "allure_results": None, "journals": []},
    )
    jsonschema.validate(evidence, json_schema())
    [scenario] = evidence["scenarios"]
    assert scenario["verdict"] == "passed"
    assert scenario["measurements"]["rto_seconds"] == measured["recovery"]["rto"]
    assert scenario["measurements"]["phases"]["writing"] is not None  # the ledger fed it
    assert isinstance(scenario["measurements"]["flaps"], list)
    assert scenario["comparisons"] and scenario["comparisons"][0]["met"] is True


@pytest.mark.stack
def test_lose_one_volume_drill_passes_under_plain_chaos_run(
    stack: LocalEnvironment, tmp_path: Path
) -> None:
    wait_healthy(stack)
    journal_path = tmp_path / "journal.json"
    code = plain_chaos_run(stack, DRILLS / "lose-one-volume.json", journal_path)
    journal = json.loads(journal_path.read_text())
    assert code == 0
    assert_completed(journal)
    assert journal["vaultdr"]["ledger"]["lost"] == []
    assert journal["vaultdr"]["faults"][0]["fault"] == "delete-volume"


@pytest.mark.stack
def test_revoke_kms_drill_passes_and_leaves_kms_allowed(
    stack: LocalEnvironment, cli: CliRunner
) -> None:
    wait_healthy(stack)
    result = cli("chaos", "run", str(DRILLS / "revoke-kms.json"), state_dir=stack.state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    journal = journal_of(result)
    assert_completed(journal)
    sealed = next(
        r for r in journal["run"] if r["activity"]["name"] == "restarted-node-stays-sealed"
    )
    assert sealed["output"]["ok"] is True
    assert "stayed sealed" in sealed["output"]["detail"]
    assert journal["vaultdr"]["ledger"]["lost"] == []
    assert stack.status().extras["kms_access"] == "allowed"


@pytest.mark.stack
def test_total_loss_drill_restores_and_reports_its_rpo(
    stack: LocalEnvironment, cli: CliRunner
) -> None:
    wait_healthy(stack)
    result = cli("chaos", "run", str(DRILLS / "total-loss.json"), state_dir=stack.state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    journal = journal_of(result)
    assert_completed(journal)
    ledger = journal["vaultdr"]["ledger"]
    assert ledger["lost"] == []
    assert ledger["rpo_writes"] == len(ledger["expected_losses"])
    assert ledger["rpo_writes"] > 0, "writes after the snapshot are the measured RPO"
    assert ledger["rpo_seconds"] > 0
    assert journal["vaultdr"]["recovery"]["restored"] is not None
    assert "RPO" in result.stdout


@pytest.mark.stack
def test_plain_chaos_run_misses_a_failed_action_that_vaultdr_catches(
    stack: LocalEnvironment, cli: CliRunner, tmp_path: Path
) -> None:
    wait_healthy(stack)
    experiment = json.loads((DRILLS / "kill-leader.json").read_text())
    for activity in experiment["method"]:
        if activity["name"] == "kill-leader":
            activity["provider"]["func"] = "kill_node"
            activity["provider"]["arguments"] = {"node": "node-9"}
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(experiment))
    assert plain_chaos_run(stack, broken, tmp_path / "plain.json") == 0
    result = cli("chaos", "run", str(broken), state_dir=stack.state_dir)
    assert result.returncode == 7
    assert "activity kill-leader failed" in result.stderr
    assert "no node 'node-9'" in result.stderr


@pytest.mark.stack
def test_revoke_kms_never_restored_fails_and_the_control_rolls_back(
    stack: LocalEnvironment, cli: CliRunner, tmp_path: Path
) -> None:
    wait_healthy(stack)
    experiment = json.loads((DRILLS / "revoke-kms.json").read_text())
    experiment["method"] = [a for a in experiment["method"] if a["name"] != "restore-kms"]
    experiment["rollbacks"] = []  # only the control's safety net is left
    never = tmp_path / "never-restored.json"
    never.write_text(json.dumps(experiment))
    result = cli(
        "chaos", "run", str(never), "--var", "recovery_timeout:int=15", state_dir=stack.state_dir
    )
    assert result.returncode == 7, result.stdout + result.stderr
    assert "wait-for-recovery failed" in result.stderr
    journal = journal_of(result)
    assert journal["vaultdr"]["rolled_back_by_control"] == ["revoke-kms"]
    assert stack.status().extras["kms_access"] == "allowed"
    wait_healthy(stack)


@pytest.mark.stack
def test_killing_a_revoke_kms_drill_then_rollback_restores_kms(
    stack: LocalEnvironment, cli: CliRunner, tmp_path: Path
) -> None:
    wait_healthy(stack)
    argv = [sys.executable, "-m", "vaultdr.cli", "chaos", "run", str(DRILLS / "revoke-kms.json")]
    argv += ["--state-dir", str(stack.state_dir), "--journal", str(tmp_path / "journal.json")]
    proc = subprocess.Popen(
        argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        journal = faults.RollbackJournal(stack.state_dir)
        assert wait_for(
            lambda: any(
                e.fault == "revoke-kms" and e.status == "injected" for e in journal.entries()
            ),
            timeout=120,
        ), "the drill never revoked KMS"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert stack.status().extras["kms_access"] == "revoked"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    result = cli("rollback", state_dir=stack.state_dir)
    assert result.returncode == 0, result.stderr
    assert "KMS access restored" in result.stdout
    assert stack.status().extras["kms_access"] == "allowed"
    wait_healthy(stack)


@pytest.mark.stack
def test_total_loss_without_auto_restore_fails_with_a_clear_deviation(
    tmp_path: Path, cli: CliRunner
) -> None:
    env = start_stack(tmp_path, restore={"auto": False, "max_age": "24h"})
    try:
        result = cli(
            "chaos",
            "run",
            str(DRILLS / "total-loss.json"),
            "--var",
            "recovery_timeout:int=20",
            state_dir=env.state_dir,
        )
        assert result.returncode == 7, result.stdout + result.stderr
        assert "the steady state deviated after the method" in result.stderr
        assert "cluster-healthy" in result.stderr
        assert "wait-for-recovery failed" in result.stderr
    finally:
        stop_stack(env)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('"kill the leader"', "an experiment is a JSON object, not str"),
        ('{"title": "no description"}', "experiment requires a description"),
        (
            '{"title": "t", "description": "d", "method": [{"type": "action", "name": "a", '
            '"provider": {"type": "python", "module": "vaultdr.chaos.actions", "func": "nope"}}]}',
            "does not expose a function called 'nope'",
        ),
    ],
)
def test_an_invalid_experiment_is_bad_input_not_a_failed_drill(
    cli: CliRunner, tmp_path: Path, text: str, words: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    result = cli("chaos", "run", str(bad), state_dir=tmp_path / "none")
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert words in result.stderr
    assert "Traceback" not in result.stderr
