"""Evidence: schema validation, the HTML report, the manifest seal, the index, the CLI."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliRunner
from vaultdr.evidence.allure import AllureUnavailable, render_allure
from vaultdr.evidence.index import write_index
from vaultdr.evidence.manifest import seal_run, verify_manifest
from vaultdr.evidence.report import render_html
from vaultdr.evidence.schema import SCHEMA, EvidenceError, validate_evidence


def scenario(
    sid: str, rto: float | None, objective: float, verdict: str = "passed"
) -> dict[str, Any]:
    return {
        "id": sid,
        "feature": sid.replace("-", " ").title(),
        "name": f"the {sid} scenario",
        "tags": [sid],
        "verdict": verdict,
        "started_at": "2026-11-23T04:00:00.000+00:00",
        "duration_seconds": 20.5,
        "steps": [
            {
                "keyword": "Given",
                "text": "a healthy stack",
                "status": "passed",
                "started_at": "2026-11-23T04:00:00.000+00:00",
                "duration_seconds": 8.0,
                "error": None,
            },
            {
                "keyword": "Then",
                "text": "it recovers",
                "status": verdict,
                "started_at": "2026-11-23T04:00:08.000+00:00",
                "duration_seconds": 3.0,
                "error": None if verdict == "passed" else "ObjectiveMissed: RTO",
            },
        ],
        "objectives": {"rto_seconds": objective, "rpo_seconds": 300.0},
        "measurements": {
            "rto_seconds": rto,
            "phases": {
                "detected": 0.1,
                "leader": 1.5,
                "unsealed": 0.9,
                "restored": None,
                "serving": 0.0,
                "auth_ready": rto,
                "healthy": 1.6,
            },
            "rpo_seconds": None,
            "rpo_writes": None,
            "acknowledged_writes": 40,
            "lost_writes": [],
            "snapshot": None,
        },
        "comparisons": [
            {
                "name": "RTO",
                "measured": rto,
                "objective": objective,
                "unit": "s",
                "met": rto is not None and rto <= objective,
            }
        ],
        "timeline": [
            {"t": -0.2, "kind": "read-ok", "node": None},
            {"t": 0.0, "kind": "fault:kill-leader", "node": None},
            {"t": 0.1, "kind": "node-unreachable", "node": "n0"},
            {"t": 1.5, "kind": "leader-elected", "node": "n1"},
        ],
        "error": None,
    }


def evidence(run_id: str = "20261123T040000Z-aaaaaa", rto: float = 1.5) -> dict[str, Any]:
    restore = scenario("total-loss", 10.2, 60.0)
    restore["measurements"].update(
        rpo_seconds=2.8,
        rpo_writes=27,
        snapshot={
            "key": "snapshots/c/20261123T035959.000000Z.snap",
            "sha256": "ab" * 32,
            "age_seconds": 4.2,
            "skipped": [
                {"key": "snapshots/c/20261123T040001.000000Z.snap", "reason": "checksum mismatch"}
            ],
        },
    )
    failed = scenario("kms-revoked", 31.0, 20.0, verdict="failed")
    failed["error"] = "ObjectiveMissed: RTO (unsealed): measured 31.00 s, objective 20 s"
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "started_at": f"2026-11-23T{run_id[9:11]}:00:00.000+00:00",
        "finished_at": "2026-11-23T04:05:00.000+00:00",
        "duration_seconds": 300.0,
        "verdict": "failed",
        "environment": {"name": "local", "host": "ci-1", "platform": "Linux", "python": "3.11.7"},
        "vaultdr": {"version": "0.1.0", "git_commit": "a" * 40},
        "engine": {"kind": "openbao", "version": "2.6.2"},
        "stack": {
            "cluster": "vaultdr-local",
            "nodes": 3,
            "seal": "awskms",
            "storage": "raft",
            "config_file": "environments/local/stack.yaml",
            "config_sha256": "cd" * 32,
        },
        "scenarios": [scenario("leader-loss", rto, 15.0), restore, failed],
        "artifacts": {"junit": "junit.xml", "allure_results": None, "journals": []},
    }


def run_dir_with(tmp_path: Path, data: dict[str, Any]) -> Path:
    run_dir = tmp_path / data["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "evidence.json").write_text(json.dumps(data))
    (run_dir / "junit.xml").write_text("<testsuites/>")
    seal_run(run_dir)
    return run_dir


def test_valid_evidence_passes() -> None:
    validate_evidence(evidence())


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda e: e.pop("run_id"), "run_id: missing"),
        (lambda e: e.update(schema="vaultdr.evidence/v0"), "schema: expected"),
        (
            lambda e: e["scenarios"][1]["measurements"].update(rto_seconds="fast"),
            "scenarios[1].measurements.rto_seconds: expected a number or null",
        ),
        (
            lambda e: e["scenarios"][0]["steps"][1].update(status="meh"),
            "scenarios[0].steps[1].status: unknown status",
        ),
        (
            lambda e: e["scenarios"][2]["comparisons"][0].pop("met"),
            "scenarios[2].comparisons[0].met: missing",
        ),
    ],
)
def test_invalid_evidence_names_the_path(change: Any, path: str) -> None:
    data = copy.deepcopy(evidence())
    change(data)
    with pytest.raises(EvidenceError) as raised:
        validate_evidence(data)
    assert path in raised.value.message


def test_report_shows_measured_against_objective_and_escapes_text() -> None:
    data = evidence()
    data["scenarios"][0]["name"] = "<script>alert(1)</script>"
    page = render_html(data)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<svg") == 3  # one timeline per scenario
    assert "http://" not in page and "https://" not in page
    assert "FAILED" in page and "2 of 3 scenarios passed" in page
    assert "31.00 s" in page and "20 s" in page and "✗ missed" in page
    assert "checksum mismatch" in page and "20261123T040001.000000Z.snap" in page
    assert "openbao 2.6.2" in page and "a" * 40 in page


def test_manifest_detects_a_change_a_deletion_and_an_addition(tmp_path: Path) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    assert verify_manifest(run_dir) == []
    (run_dir / "junit.xml").write_text("<testsuites tampered='1'/>")
    (run_dir / "report.html").unlink()
    (run_dir / "extra.txt").write_text("added later")
    problems = verify_manifest(run_dir)
    assert "changed: junit.xml" in problems
    assert "missing: report.html" in problems
    assert "not in the manifest: extra.txt" in problems


def test_cli_verify_then_tamper(cli: CliRunner, tmp_path: Path) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    ok = cli("evidence", "verify", str(run_dir), state_dir=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "OK:" in ok.stdout
    data = json.loads((run_dir / "evidence.json").read_text())
    data["scenarios"][2]["verdict"] = "passed"  # someone makes a failure look like a pass
    (run_dir / "evidence.json").write_text(json.dumps(data))
    bad = cli("evidence", "verify", str(run_dir), state_dir=tmp_path)
    assert bad.returncode != 0
    assert "changed: evidence.json" in bad.stderr


def test_report_rebuilds_html_but_never_reseals_tampered_evidence(
    cli: CliRunner, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    (run_dir / "report.html").write_text("lost")
    rebuilt = cli("report", str(run_dir), state_dir=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "DR drill evidence" in (run_dir / "report.html").read_text()
    assert verify_manifest(run_dir) == []
    assert (tmp_path / "index.html").exists()
    (run_dir / "junit.xml").write_text("<changed/>")
    refused = cli("report", str(run_dir), state_dir=tmp_path)
    assert refused.returncode == 8
    assert "changed: junit.xml" in refused.stderr
    assert "not re-sealed" in refused.stderr


def test_index_lists_runs_newest_first_with_a_trend_and_survives_a_broken_run(
    tmp_path: Path,
) -> None:
    for hour, rto in (("02", 1.2), ("03", 2.5), ("04", 1.9)):
        run_dir_with(tmp_path, evidence(f"20261123T{hour}0000Z-aaaaaa", rto))
    broken = tmp_path / "20261123T050000Z-broken"
    broken.mkdir()
    (broken / "evidence.json").write_text("{ not json")
    page = write_index(tmp_path).read_text()
    order = [page.index(f"20261123T{h}0000Z") for h in ("05", "04", "03", "02")]
    assert order == sorted(order)
    assert "invalid" in page
    assert "<polyline" in page and "stroke-dasharray" in page  # trend and objective line
    assert "leader-loss" in page and "total-loss" in page


def test_allure_without_the_cli_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    results = run_dir / "allure-results"
    results.mkdir()
    (results / "x-result.json").write_text("{}")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("allure") is None
    with pytest.raises(AllureUnavailable) as raised:
        render_allure(run_dir)
    assert "npm install" in raised.value.hint


def json_schema() -> dict[str, Any]:
    path = Path(__file__).resolve().parent.parent / "docs/evidence.schema.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_sample_evidence_matches_the_published_json_schema() -> None:
    import jsonschema

    jsonschema.validate(evidence(), json_schema())
    broken = evidence()
    broken["scenarios"][0]["comparisons"][0]["met"] = "yes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json_schema())
