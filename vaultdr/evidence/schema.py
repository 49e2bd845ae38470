"""The ``evidence.json`` schema (``vaultdr.evidence/v1``) and its validation.

Validation names the JSON path of the first problem, so a hand-edited or
truncated file says exactly what is wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaultdr.errors import VaultdrError

SCHEMA = "vaultdr.evidence/v1"
VERDICTS = {"passed", "failed"}
SCENARIO_VERDICTS = {"passed", "failed", "skipped"}
STEP_STATUSES = {"passed", "failed", "skipped", "running"}
PHASES = ("detected", "leader", "unsealed", "restored", "serving", "auth_ready", "healthy")


def empty_measurements() -> dict[str, Any]:
    """Every measurement a scenario must carry, none measured yet (a fresh dict each call)."""
    return {
        "rto_seconds": None,
        "phases": {},
        "rpo_seconds": None,
        "rpo_writes": None,
        "acknowledged_writes": None,
        "lost_writes": [],
        "snapshot": None,
    }


class EvidenceError(VaultdrError):
    """Evidence is missing, unreadable, invalid or tampered with."""

    exit_code = 8


def _fail(path: str, problem: str) -> None:
    raise EvidenceError(f"evidence.json: {path}: {problem}")


def _expect(value: Any, kinds: tuple[type, ...], path: str, what: str) -> None:
    if isinstance(value, bool) and bool not in kinds:
        _fail(path, f"expected {what}")
    if not isinstance(value, kinds):
        _fail(path, f"expected {what}")


def _number(value: Any, path: str, *, nullable: bool = True) -> None:
    if value is None and nullable:
        return
    _expect(value, (int, float), path, "a number or null" if nullable else "a number")


def _fields(data: Any, path: str, required: dict[str, tuple[type, ...]]) -> None:
    _expect(data, (dict,), path, "an object")
    for name, kinds in required.items():
        where = f"{path}.{name}" if path else name
        if name not in data:
            _fail(where, "missing")
        what = " or ".join(sorted({k.__name__ for k in kinds})).replace("NoneType", "null")
        _expect(data[name], kinds, where, what)


def validate_evidence(data: Any) -> None:
    """Raise :class:`EvidenceError` naming the first thing that does not fit the schema."""
    none = type(None)
    _fields(
        data,
        "",
        {
            "schema": (str,),
            "run_id": (str,),
            "started_at": (str,),
            "finished_at": (str,),
            "duration_seconds": (int, float),
            "verdict": (str,),
            "environment": (dict,),
            "vaultdr": (dict,),
            "engine": (dict,),
            "stack": (dict,),
            "scenarios": (list,),
            "artifacts": (dict,),
        },
    )
    if data["schema"] != SCHEMA:
        _fail("schema", f"expected {SCHEMA!r}, found {data['schema']!r}")
    if data["verdict"] not in VERDICTS:
        _fail("verdict", "expected 'passed' or 'failed'")
    _fields(data["environment"], "environment", {"name": (str,), "host": (str,)})
    _fields(data["vaultdr"], "vaultdr", {"version": (str,), "git_commit": (str, none)})
    for i, scenario in enumerate(data["scenarios"]):
        where = f"scenarios[{i}]"
        _fields(
            scenario,
            where,
            {
                "id": (str,),
                "feature": (str,),
                "name": (str,),
                "tags": (list,),
                "verdict": (str,),
                "duration_seconds": (int, float),
                "steps": (list,),
                "objectives": (dict,),
                "measurements": (dict,),
                "comparisons": (list,),
                "timeline": (list,),
            },
        )
        if scenario["verdict"] not in SCENARIO_VERDICTS:
            _fail(f"{where}.verdict", "expected 'passed', 'failed' or 'skipped'")
        for j, step in enumerate(scenario["steps"]):
            _fields(
                step, f"{where}.steps[{j}]", {"keyword": (str,), "text": (str,), "status": (str,)}
            )
            if step["status"] not in STEP_STATUSES:
                _fail(f"{where}.steps[{j}].status", f"unknown status {step['status']!r}")
        for name, value in scenario["objectives"].items():
            _number(value, f"{where}.objectives.{name}", nullable=False)
        measurements = scenario["measurements"]
        for name in ("rto_seconds", "rpo_seconds", "rpo_writes", "acknowledged_writes"):
            _number(measurements.get(name), f"{where}.measurements.{name}")
        for name, value in (measurements.get("phases") or {}).items():
            if name not in PHASES:
                _fail(f"{where}.measurements.phases.{name}", "unknown phase")
            _number(value, f"{where}.measurements.phases.{name}")
        for k, comparison in enumerate(scenario["comparisons"]):
            path = f"{where}.comparisons[{k}]"
            _fields(comparison, path, {"name": (str,), "met": (bool,), "unit": (str,)})
            _number(comparison.get("measured"), f"{path}.measured")
            _number(comparison.get("objective"), f"{path}.objective", nullable=False)
        for k, event in enumerate(scenario["timeline"]):
            _fields(event, f"{where}.timeline[{k}]", {"t": (int, float), "kind": (str,)})


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def load_evidence(location: Path) -> dict[str, Any]:
    """``evidence.json`` from a run directory (or the file itself), validated."""
    path = location / "evidence.json" if location.is_dir() else location
    if not path.exists():
        raise EvidenceError(
            f"no evidence at {path}", hint="pass a run directory under reports/ (vaultdr drill)"
        )
    try:
        data = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except ValueError as exc:
        raise EvidenceError(f"{path} is not JSON: {exc}") from None
    validate_evidence(data)
    result: dict[str, Any] = data
    return result
