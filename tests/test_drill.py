"""`vaultdr drill` end to end: a real stack, a real scenario, evidence an auditor can check."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import LOCAL_STACK, CliRunner
from vaultdr.errors import EXIT_DRILL_FAILED
from vaultdr.evidence.schema import load_evidence

TOKEN = re.compile(r"\b(?:hvs|s)\.[A-Za-z0-9]{20,}")


def run_dirs(reports: Path) -> list[Path]:
    return sorted(p for p in reports.iterdir() if p.is_dir())


def test_a_bad_stack_file_stops_the_drill_before_anything_starts(
    cli: CliRunner, tmp_path: Path
) -> None:
    bad = tmp_path / "stack.yaml"
    bad.write_text("nodes: many\n")
    reports = tmp_path / "reports"
    result = cli("drill", "--config", str(bad), "--report-dir", str(reports), state_dir=tmp_path)
    assert result.returncode == 2
    assert "nodes" in result.stderr
    assert not reports.exists()


@pytest.mark.stack
def test_the_leader_loss_drill_leaves_sealed_evidence(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = tmp_path / "reports"
    canary = "canary-" + secrets.token_hex(12)
    monkeypatch.setenv("VAULTDR_DRILL_CANARY", canary)  # the app secret's value in the drill
    result = cli(
        "drill",
        "--tags",
        "leader-loss",
        "--junit",
        "--report-dir",
        str(reports),
        state_dir=tmp_path,
        timeout=600,
    )
    assert canary not in result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Leader loss: the leader is killed under write load" in result.stdout
    assert "When the leader is killed" in result.stdout
    assert "PASSED: 1 of 1 scenarios passed" in result.stdout
    [run_dir] = run_dirs(reports)
    evidence = load_evidence(run_dir)
    schema = json.loads(
        (Path(__file__).resolve().parent.parent / "docs/evidence.schema.json").read_text()
    )
    jsonschema.validate(evidence, schema)
    assert evidence["verdict"] == "passed"
    assert evidence["engine"] == {"kind": "openbao", "version": "2.6.2"}
    assert evidence["stack"]["nodes"] == 3 and evidence["stack"]["seal"] == "awskms"
    [scenario] = evidence["scenarios"]
    assert scenario["id"] == "leader-loss"
    assert [s["status"] for s in scenario["steps"]] == ["passed"] * 6
    rto = scenario["measurements"]["rto_seconds"]
    assert rto is not None and rto <= scenario["objectives"]["rto_seconds"]
    assert scenario["comparisons"][0]["met"] is True
    assert scenario["measurements"]["lost_writes"] == []
    assert scenario["measurements"]["phases"]["writing"] is not None  # the write load's
    assert rto >= scenario["measurements"]["phases"]["writing"]
    assert isinstance(scenario["measurements"]["flaps"], list)
    assert any(e["kind"] == "fault:kill-leader" for e in scenario["timeline"])
    for name in ("report.html", "junit.xml", "MANIFEST.sha256"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "allure-results").iterdir())
    assert (reports / "index.html").is_file()
    verified = cli("evidence", "verify", str(run_dir), state_dir=tmp_path)
    assert verified.returncode == 0, verified.stderr
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not TOKEN.search(text), f"a token in {path}"
            assert canary not in text, f"the planted secret value is in {path}"


@pytest.mark.stack
def test_a_missed_objective_fails_the_drill_and_says_by_how_much(
    cli: CliRunner, tmp_path: Path
) -> None:
    data = yaml.safe_load(LOCAL_STACK.read_text())
    data["objectives"]["rto"]["leader-loss"] = "10ms"
    stack = tmp_path / "stack.yaml"
    stack.write_text(yaml.safe_dump(data))
    reports = tmp_path / "reports"
    result = cli(
        "drill",
        "--config",
        str(stack),
        "--tags",
        "leader-loss",
        "--report-dir",
        str(reports),
        state_dir=tmp_path,
        timeout=600,
    )
    assert result.returncode == EXIT_DRILL_FAILED, result.stdout + result.stderr
    assert "FAILED: 0 of 1 scenarios passed" in result.stdout
    [run_dir] = run_dirs(reports)
    evidence = json.loads((run_dir / "evidence.json").read_text())
    [scenario] = evidence["scenarios"]
    assert scenario["verdict"] == "failed"
    assert scenario["comparisons"][0]["met"] is False
    assert scenario["comparisons"][0]["objective"] == pytest.approx(0.01)
    assert "objective" in scenario["error"]
    skipped = [s for s in scenario["steps"] if s["status"] == "skipped"]
    assert skipped, "the steps after the failed one are recorded as skipped"
    assert "✗ missed" in (run_dir / "report.html").read_text()
