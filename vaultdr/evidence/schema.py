"""Validating ``evidence.json`` (schema ``vaultdr.evidence/v1``) against its models.

The models in :mod:`vaultdr.evidence.models` are the schema; this module turns
what they refuse into an :class:`EvidenceError` that names the JSON path of
each problem (``evidence.json: scenarios[1].measurements.rto_seconds: expected
a number or null``), so a hand-edited or truncated file says exactly what is
wrong with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from vaultdr.errors import EXIT_EVIDENCE, VaultdrError
from vaultdr.evidence.models import SCHEMA, Evidence, Measurements

__all__ = [
    "SCHEMA",
    "EvidenceError",
    "empty_measurements",
    "load_evidence",
    "load_evidence_model",
    "parse_evidence",
    "validate_evidence",
]

#: At most this many problems are named in one error.
SHOWN_PROBLEMS = 5

_KINDS = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "bool_type": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "missing": "missing",
}


class EvidenceError(VaultdrError):
    """Evidence is missing, unreadable, invalid or tampered with."""

    exit_code = EXIT_EVIDENCE


def empty_measurements() -> dict[str, Any]:
    """Every measurement a scenario must carry, none measured yet (a fresh dict each call)."""
    return Measurements.empty().to_dict()


def _union_prefixes(errors: list[ErrorDetails]) -> list[tuple[int | str, ...]]:
    """Where an optional field's ``T | None`` union failed: the None branch's error marks it."""
    found = {e["loc"][:-1] for e in errors if e["type"] == "none_required" and e["loc"]}
    return sorted(found, key=len, reverse=True)


def _without_union_tags(
    loc: tuple[int | str, ...], prefixes: list[tuple[int | str, ...]]
) -> tuple[int | str, ...]:
    """``loc`` with the union branch names pydantic inserts after each optional field dropped."""
    for prefix in prefixes:  # longest first: removing a later element keeps earlier indices
        if len(loc) > len(prefix) and loc[: len(prefix)] == prefix:
            loc = loc[: len(prefix)] + loc[len(prefix) + 1 :]
    return loc


def _path(loc: tuple[int | str, ...]) -> str:
    """``("scenarios", 1, "steps", 0, "status")`` as ``scenarios[1].steps[0].status``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _KINDS:
        return _KINDS[kind]
    if kind == "extra_forbidden":
        return "unknown phase" if loc[-2:-1] == ("phases",) else "unknown field"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        if " or " not in expected:  # a constant, such as the schema version
            return f"expected {expected}, found {_shown(error['input'])}"
        name = next((part for part in reversed(loc) if isinstance(part, str)), "value")
        return f"unknown {name} {_shown(error['input'])}: expected {expected}"
    if kind == "string_pattern_mismatch":
        return f"{_shown(error['input'])} does not match {ctx.get('pattern')}"
    if kind == "greater_than_equal":
        return f"expected at least {ctx.get('ge')}"
    return error["msg"]  # vaultdr's own errors (numbers, nulls) are already worded


def describe(exc: ValidationError) -> str:
    """Every problem pydantic found, as ``evidence.json: <path>: <problem>; ...``."""
    errors = exc.errors()
    prefixes = _union_prefixes(errors)
    problems: list[str] = []
    for error in errors:
        if error["type"] == "none_required" and error["loc"][:-1] in prefixes:
            continue  # the None branch of an optional field: the other branch says why
        loc = _without_union_tags(error["loc"], prefixes)
        where = _path(loc)
        problem = f"{where}: {_problem(error, loc)}" if where else _problem(error, loc)
        if problem not in problems:
            problems.append(problem)
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return f"evidence.json: {shown}" + (f" (and {more} more)" if more > 0 else "")


def parse_evidence(data: Any) -> Evidence:
    """``data`` as an :class:`Evidence`; :class:`EvidenceError` naming every path that does not fit."""
    try:  # by the JSON names only: "schema_" or "from_" in a file is an unknown field
        return Evidence.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise EvidenceError(describe(exc)) from None


def validate_evidence(data: Any) -> None:
    """Raise :class:`EvidenceError` naming the first things that do not fit the schema."""
    parse_evidence(data)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _read(location: Path) -> Any:
    path = location / "evidence.json" if location.is_dir() else location
    if not path.exists():
        raise EvidenceError(
            f"no evidence at {path}", hint="pass a run directory under reports/ (vaultdr drill)"
        )
    try:
        return json.loads(path.read_text(), parse_constant=_refuse_constant)
    except ValueError as exc:
        raise EvidenceError(f"{path} is not JSON: {exc}") from None


def load_evidence(location: Path) -> dict[str, Any]:
    """``evidence.json`` from a run directory (or the file itself), validated, as a dict."""
    data = _read(location)
    validate_evidence(data)
    result: dict[str, Any] = data
    return result


def load_evidence_model(location: Path) -> Evidence:
    """``evidence.json`` from a run directory (or the file itself) as an :class:`Evidence`."""
    return parse_evidence(_read(location))
