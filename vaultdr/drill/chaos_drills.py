"""``vaultdr drill --chaos``: the Chaos Toolkit drills too, their journals kept as evidence.

They run one after another against one fresh stack (each drill leaves it
healthy or fails), with ``vaultdr chaos run``'s verdict, and each becomes a
scenario of the run's evidence with its activities as steps and the
measurements the vaultdr control added to its journal.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

from vaultdr.chaos.runner import judge, run_experiment
from vaultdr.config import Stack
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.errors import VaultdrError
from vaultdr.evidence.schema import empty_measurements

DRILLS = Path(__file__).resolve().parent.parent.parent / "drills"


def run_chaos_drills(
    run_dir: Path, stack: Stack, stack_file: Path, say: Any = print
) -> list[dict[str, Any]]:
    """Run every experiment in ``drills/``; one evidence scenario per drill."""
    scenarios: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vaultdr-chaos-") as tmp:
        env = LocalEnvironment(Path(tmp) / "state", stack, stack_file=str(stack_file))
        say("Chaos Toolkit drills: deploying a stack")
        try:
            env.up()
        except VaultdrError as exc:
            return [_failed_setup(f"the stack did not come up: {exc.message}")]
        try:
            for experiment in sorted(DRILLS.glob("*.json")):
                scenarios.append(_one(env, experiment, run_dir, say))
        finally:
            env.down()
    return scenarios


def _one(env: LocalEnvironment, experiment: Path, run_dir: Path, say: Any) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC)
    journal_path = run_dir / "chaos" / experiment.stem / "journal.json"
    say(f"Chaos Toolkit drill: {experiment.name}")
    record: dict[str, Any] = {
        "id": f"chaos-{experiment.stem}",
        "feature": "Chaos Toolkit drill",
        "name": json.loads(experiment.read_text()).get("title", experiment.stem),
        "tags": ["chaos", experiment.stem],
        "verdict": "failed",
        "started_at": started.isoformat(timespec="milliseconds"),
        "duration_seconds": 0.0,
        "steps": [],
        "objectives": {},
        "measurements": empty_measurements(),
        "comparisons": [],
        "timeline": [],
        "error": None,
    }
    try:
        verdict = run_experiment(experiment, state_dir=env.state_dir, journal_path=journal_path)
    except VaultdrError as exc:
        record["error"] = exc.message
        return record
    journal = json.loads(journal_path.read_text())
    verdict = judge(journal, journal_path)
    for run in [*(journal.get("run") or []), *(journal.get("rollbacks") or [])]:
        activity = run.get("activity", {})
        record["steps"].append(
            {
                "keyword": str(activity.get("type", "activity")).title(),
                "text": str(activity.get("name", "?")),
                "status": "passed" if run.get("status") == "succeeded" else "failed",
                "started_at": run.get("start"),
                "duration_seconds": float(run.get("duration") or 0.0),
                "error": None if run.get("status") == "succeeded" else str(run.get("status")),
            }
        )
    measured = journal.get("vaultdr") or {}
    recovery = measured.get("recovery") or {}
    ledger = measured.get("ledger") or {}
    record["measurements"].update(
        {
            "rto_seconds": recovery.get("rto"),
            "phases": {
                k: recovery.get(k)
                for k in (
                    "detected",
                    "leader",
                    "unsealed",
                    "restored",
                    "serving",
                    "auth_ready",
                    "healthy",
                )
                if k in recovery
            },
            "acknowledged_writes": ledger.get("acknowledged"),
            "lost_writes": ledger.get("lost", []),
            "rpo_writes": ledger.get("rpo_writes") if ledger.get("snapshot_taken_at") else None,
            "rpo_seconds": ledger.get("rpo_seconds") if ledger.get("snapshot_taken_at") else None,
        }
    )
    for check in measured.get("checks") or []:
        if check.get("name") == "recovered-within" and "objective" in str(check.get("detail")):
            comparison = _comparison(str(check["detail"]), bool(check["ok"]))
            record["comparisons"].append(comparison)
            record["objectives"]["rto_seconds"] = comparison["objective"]
    record["verdict"] = "passed" if verdict.passed else "failed"
    record["error"] = "; ".join(verdict.reasons) or None
    record["duration_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 3)
    say(f"  {record['verdict']} ({record['duration_seconds']:.1f} s)")
    return record


def _comparison(detail: str, ok: bool) -> dict[str, Any]:
    """From the probe's detail ``<name> 1.23 s (objective 15 s)``."""
    words = detail.replace("(", " ").replace(")", " ").split()
    measured = float(words[1])
    objective = float(words[words.index("objective") + 1])
    return {"name": words[0], "measured": measured, "objective": objective, "unit": "s", "met": ok}


def _failed_setup(error: str) -> dict[str, Any]:
    return {
        "id": "chaos-drills",
        "feature": "Chaos Toolkit drill",
        "name": "deploy a stack for the drills",
        "tags": ["chaos"],
        "verdict": "failed",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "duration_seconds": 0.0,
        "steps": [],
        "objectives": {},
        "measurements": empty_measurements(),
        "comparisons": [],
        "timeline": [],
        "error": error,
    }
