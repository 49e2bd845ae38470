"""Assemble ``evidence.json`` for a drill run: who, where, what version, what happened."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vaultdr.config import load_stack
from vaultdr.evidence.models import ScenarioRecord
from vaultdr.evidence.record import git_commit, run_record
from vaultdr.files import write_json_atomic

__all__ = ["git_commit", "journals", "stack_shape", "write_evidence"]


def stack_shape(config_file: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine, stack) sections from the stack file the drill used."""

    if not config_file:
        return {"kind": None, "version": None}, {}
    path = Path(config_file)
    stack = load_stack(path)
    engine = {"kind": stack.engine.kind, "version": stack.engine.version}
    shape = {
        "cluster": stack.cluster,
        "nodes": stack.nodes,
        "seal": stack.seal.type,
        "storage": "raft",
        "config_file": str(path),
        "config_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    return engine, shape


def journals(run_dir: Path) -> list[str]:
    """The Chaos Toolkit journals in the run directory, relative to it."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("chaos/**/journal.json"))


def write_evidence(run_dir: Path, scenarios: Sequence[ScenarioRecord | Mapping[str, Any]]) -> Path:
    """``evidence.json`` of the drill run in ``run_dir`` (the runner's ``VAULTDR_DRILL_*``)."""
    finished = dt.datetime.now(dt.UTC)
    started = dt.datetime.fromisoformat(
        os.environ.get("VAULTDR_DRILL_STARTED") or finished.isoformat()
    )
    engine, shape = stack_shape(os.environ.get("VAULTDR_DRILL_CONFIG"))
    evidence = run_record(
        run_id=os.environ.get("VAULTDR_DRILL_RUN_ID") or run_dir.name,
        started=started,
        scenarios=scenarios,
        environment=os.environ.get("VAULTDR_DRILL_ENV", "local"),
        engine=engine,
        stack=shape,
        artifacts={
            "junit": os.environ.get("VAULTDR_DRILL_JUNIT") or None,
            "allure_results": "allure-results" if (run_dir / "allure-results").is_dir() else None,
            "journals": journals(run_dir),
        },
    )
    path = run_dir / "evidence.json"
    write_json_atomic(path, evidence)
    return path
