"""Scenario records built once (vaultdr.evidence.record): from real recoveries, ledger reports
and restore records to evidence the published JSON Schema accepts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jsonschema
import pytest

from tests.test_evidence import json_schema
from vaultdr.errors import VaultdrError
from vaultdr.evidence.models import Phases
from vaultdr.evidence.record import ScenarioDraft, measurements_from, run_record
from vaultdr.evidence.report import render_html
from vaultdr.ledger import LedgerReport
from vaultdr.timeline import PHASES, Recovery

STARTED = dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC)


def recovery_with_a_flap() -> Recovery:
    """What a total loss's timeline measures: reads back, dropped by the reseal, back again."""
    recovery = Recovery(
        fault="fault:delete-all-volumes",
        fault_wall="2026-11-23T04:00:10.000+00:00",
        detected=0.1,
        leader=9.5,
        unsealed=10.2,
        restored=9.8,
        serving=11.4,
        auth_ready=11.6,
        writing=11.9,
        healthy=12.0,
        interrupted=True,
        required=("restored", "serving", "auth_ready", "writing", "healthy"),
    )
    recovery.flaps.append({"check": "read", "failed_at": 10.4, "back_at": 11.4, "seconds": 1.0})
    recovery.flaps.append({"check": "write", "failed_at": 11.7, "back_at": None, "seconds": None})
    return recovery


def ledger_after_a_restore() -> LedgerReport:
    return LedgerReport(
        acknowledged=120,
        unacknowledged=95,
        verified=100,
        expected_losses=[{"seq": i, "key": "k", "version": i, "wall": "x"} for i in range(20)],
        rpo_writes=20,
        rpo_seconds=2.1,
        snapshot_taken_at="2026-11-23T04:00:07.900+00:00",
    )


def restore_record() -> dict[str, Any]:
    return {
        "snapshot_key": "snapshots/c/20261123T040007Z.snap",
        "snapshot_sha256": "ab" * 32,
        "snapshot_age_seconds": 2.3,
        "skipped": [{"key": "snapshots/c/20261123T040008Z.snap", "reason": "checksum mismatch"}],
        "started_at": "2026-11-23T04:00:10.500+00:00",
        "phases": {"init": 2.0},
        "total_seconds": 9.8,
    }


def evidence_of(*drafts: ScenarioDraft) -> dict[str, Any]:
    return run_record(
        run_id="20261123T040000Z-abcdef",
        started=STARTED,
        scenarios=[d.record() for d in drafts],
        environment="local",
        engine={"kind": "openbao", "version": "2.6.2"},
        stack={"cluster": "drill", "nodes": 3, "seal": "awskms", "storage": "raft"},
        artifacts={"junit": None, "allure_results": None, "journals": []},
    )


def test_the_evidence_phases_are_the_timeline_phases_in_order() -> None:
    assert tuple(Phases.model_fields) == PHASES
    assert "writing" in PHASES


def test_a_recovery_with_the_writing_phase_and_its_flaps_reaches_the_measurements() -> None:
    measured = measurements_from(
        recovery=recovery_with_a_flap().to_dict(),
        ledger=ledger_after_a_restore().to_dict(),
        restore=restore_record(),
    )
    data = measured.to_dict()
    assert data["rto_seconds"] == 11.9  # the later of reads, logins and writes back
    assert list(data["phases"]) == list(PHASES)
    assert data["phases"]["writing"] == 11.9
    assert [f["check"] for f in data["flaps"]] == ["read", "write"]
    assert data["flaps"][1]["back_at"] is None
    assert (data["rpo_writes"], data["rpo_seconds"]) == (20, 2.1)
    assert data["snapshot"]["skipped"][0]["reason"] == "checksum mismatch"
    assert data["lost_writes"] == []


def test_an_rto_objective_about_one_phase_reports_that_phase_beside_the_rto() -> None:
    measured = measurements_from(recovery=recovery_with_a_flap().to_dict(), rto_phase="unsealed")
    assert measured.judged_seconds() == 10.2
    assert measured.rto_seconds == 11.9  # still what apps feel


def test_no_rpo_is_reported_when_the_ledger_was_not_read_against_a_snapshot() -> None:
    report = LedgerReport(acknowledged=40, unacknowledged=3, verified=40)
    measured = measurements_from(ledger=report.to_dict())
    assert measured.acknowledged_writes == 40
    assert measured.rpo_writes is None and measured.rpo_seconds is None
    assert measured.flaps is None  # no recovery measured: the field is left out
    assert "flaps" not in measured.to_dict()


def test_a_scenario_built_from_its_steps_matches_the_published_schema() -> None:
    draft = ScenarioDraft(
        id="total-loss", feature="Total loss", name="restore", tags=["total-loss"]
    )
    draft.objectives = {"rto_seconds": 60, "rpo_seconds": 300.0}
    with draft.step("Given", "a healthy stack"):
        pass
    draft.measurements = measurements_from(
        recovery=recovery_with_a_flap().to_dict(),
        ledger=ledger_after_a_restore().to_dict(),
        restore=restore_record(),
    )
    draft.compare("RTO", draft.measurements.rto_seconds, 60)
    draft.finish()
    evidence = evidence_of(draft)
    jsonschema.validate(evidence, json_schema())
    [scenario] = evidence["scenarios"]
    assert scenario["verdict"] == "passed" and evidence["verdict"] == "passed"
    assert scenario["steps"][0]["status"] == "passed"
    assert scenario["measurements"]["phases"]["writing"] == 11.9
    assert scenario["comparisons"] == [
        {"name": "RTO", "measured": 11.9, "objective": 60, "unit": "s", "met": True}
    ]


def test_a_failed_step_fails_the_scenario_and_the_steps_it_never_reached_are_skipped() -> None:
    draft = ScenarioDraft(id="leader-loss", feature="Leader loss", name="kill", tags=[])
    with pytest.raises(VaultdrError), draft.step("When", "the leader is killed"):
        raise VaultdrError("no node 'node-9'")
    draft.skip_missing([("When", "the leader is killed"), ("Then", "a new leader serves")])
    record = draft.record()
    assert record.verdict == "failed"
    assert record.error == "no node 'node-9'"
    assert [(s.text, s.status) for s in record.steps] == [
        ("the leader is killed", "failed"),
        ("a new leader serves", "skipped"),
    ]
    jsonschema.validate(evidence_of(draft), json_schema())


def test_a_missed_objective_fails_the_scenario_and_the_run() -> None:
    draft = ScenarioDraft(id="leader-loss", feature="Leader loss", name="kill", tags=[])
    draft.compare("RTO", 20.5, 15)
    draft.compare("RTO (unsealed)", None, 15)
    other = ScenarioDraft(id="auto-unseal", feature="Auto-unseal", name="restart", tags=[])
    evidence = evidence_of(draft, other)
    assert [s["verdict"] for s in evidence["scenarios"]] == ["failed", "passed"]
    assert evidence["verdict"] == "failed"
    assert [c["met"] for c in evidence["scenarios"][0]["comparisons"]] == [False, False]


def test_a_verdict_judged_elsewhere_is_the_scenarios() -> None:
    """A Chaos Toolkit run is judged from its journal: a deviation fails it even when every
    activity succeeded, and the probe's own verdict on the RTO is kept."""
    draft = ScenarioDraft(id="chaos-kill-leader", feature="Chaos Toolkit drill", name="k")
    with draft.step("Action", "kill-leader"):
        pass
    assert draft.compare("RTO", 15.2, 15, met=True).met is True
    assert draft.verdict == "passed"
    assert draft.record(verdict="failed").verdict == "failed"


def test_an_objective_about_another_phase_keeps_the_rto_apps_feel_and_names_the_phase() -> None:
    """KMS revoked is judged on "unsealed": the RTO column still says when apps could log
    in, read and write again, and the judged phase is shown by name beside it."""
    recovery = recovery_with_a_flap()
    measured = measurements_from(recovery=recovery.to_dict(), rto_phase="unsealed")
    assert measured.rto_seconds == 11.9
    assert measured.objective_phase == "unsealed"
    assert measured.judged_seconds() == 10.2
    draft = ScenarioDraft(id="kms-revoked", feature="KMS", name="n", tags=["kms-revoked"])
    draft.measurements = measured
    draft.objectives["rto_seconds"] = 20.0
    draft.compare("RTO (unsealed)", measured.judged_seconds(), 20.0)
    draft.finish()
    evidence = evidence_of(draft)
    jsonschema.validate(evidence, json_schema())
    page = render_html(evidence)
    assert "unsealed 10.20 s" in page and "11.90 s" in page
    assert "objective judged on: unsealed" in page
    plain = measurements_from(recovery=recovery.to_dict())
    assert plain.objective_phase is None and plain.judged_seconds() == 11.9
