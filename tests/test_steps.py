"""The Gherkin step library in features/conftest.py, run by pytest on generated feature files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STEPS = (REPO / "features/conftest.py").read_text()


def feature_project(pytester: pytest.Pytester, text: str) -> None:
    pytester.makeconftest(STEPS)
    pytester.makefile(".feature", generated=text)
    pytester.makepyfile(
        test_generated='from pytest_bdd import scenarios\n\nscenarios("generated.feature")\n'
    )


def test_an_unknown_step_fails_the_scenario_and_names_the_step(pytester: pytest.Pytester) -> None:
    feature_project(
        pytester,
        "Feature: Made up\n  Scenario: nobody wrote this step\n    Given a cluster on the moon\n",
    )
    result = pytester.runpytest_subprocess("-p", "vaultdr.drill.plugin", "-q")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*StepDefinitionNotFoundError*a cluster on the moon*"])


@pytest.mark.stack
def test_a_generated_scenario_with_its_objective_in_the_text(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    feature_project(
        pytester,
        "@leader-loss\n"
        "Feature: Generated leader loss\n"
        "  Scenario: the leader dies and the text sets the objective\n"
        "    Given a healthy stack\n"
        "    And a steady write load\n"
        "    When the leader is killed\n"
        "    Then a new leader serves within 45 seconds\n"
        "    And no acknowledged write is lost\n",
    )
    run_dir = tmp_path / "20261123T040000Z-abcdef"  # a run id, as evidence.json's run_id must be
    run_dir.mkdir()
    monkeypatch.setenv("VAULTDR_DRILL_DIR", str(run_dir))
    monkeypatch.setenv("VAULTDR_DRILL_CONFIG", str(REPO / "environments/local/stack.yaml"))
    result = pytester.runpytest_subprocess(
        "-p", "vaultdr.drill.plugin", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning"
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*Then a new leader serves within 45 seconds*", "*ok (*"])
    evidence = json.loads((run_dir / "evidence.json").read_text())
    [scenario] = evidence["scenarios"]
    assert scenario["objectives"]["rto_seconds"] == 45.0
    assert scenario["comparisons"][0]["objective"] == 45.0
    assert scenario["comparisons"][0]["met"] is True
    assert scenario["measurements"]["acknowledged_writes"] > 0
