"""Assemble ``evidence.json`` for a drill run: who, where, what version, what happened."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from vaultdr import __version__
from vaultdr.envs.local.state import write_json_atomic
from vaultdr.evidence.schema import SCHEMA, validate_evidence


def git_commit() -> str | None:
    """The commit of the vaultdr checkout, when it is one."""
    repo = Path(__file__).resolve().parent.parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def stack_shape(config_file: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(engine, stack) sections from the stack file the drill used."""
    from vaultdr.config import load_stack

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


def write_evidence(run_dir: Path, scenarios: list[dict[str, Any]]) -> Path:
    finished = dt.datetime.now(dt.UTC)
    started_text = os.environ.get("VAULTDR_DRILL_STARTED") or finished.isoformat()
    started = dt.datetime.fromisoformat(started_text)
    engine, shape = stack_shape(os.environ.get("VAULTDR_DRILL_CONFIG"))
    journals = sorted(str(p.relative_to(run_dir)) for p in run_dir.glob("chaos/**/journal.json"))
    passed = bool(scenarios) and all(s["verdict"] == "passed" for s in scenarios)
    evidence = {
        "schema": SCHEMA,
        "run_id": os.environ.get("VAULTDR_DRILL_RUN_ID") or run_dir.name,
        "started_at": started.isoformat(timespec="milliseconds"),
        "finished_at": finished.isoformat(timespec="milliseconds"),
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "verdict": "passed" if passed else "failed",
        "environment": {
            "name": os.environ.get("VAULTDR_DRILL_ENV", "local"),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "vaultdr": {"version": __version__, "git_commit": git_commit()},
        "engine": engine,
        "stack": shape,
        "scenarios": scenarios,
        "artifacts": {
            "junit": os.environ.get("VAULTDR_DRILL_JUNIT") or None,
            "allure_results": "allure-results" if (run_dir / "allure-results").is_dir() else None,
            "journals": journals,
        },
    }
    validate_evidence(evidence)
    path = run_dir / "evidence.json"
    write_json_atomic(path, evidence)
    return path
