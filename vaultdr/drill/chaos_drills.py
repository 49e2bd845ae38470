"""``vaultdr drill --chaos``: the Chaos Toolkit drills too, their journals kept as evidence.

They run one after another against one fresh stack (each drill leaves it
healthy or fails), with ``vaultdr chaos run``'s verdict, and each becomes a
scenario of the run's evidence with its activities as steps and the
measurements the vaultdr control added to its journal.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaultdr.chaos.runner import judge, run_experiment
from vaultdr.config import Stack
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.errors import VaultdrError
from vaultdr.evidence.models import ScenarioRecord, Step
from vaultdr.evidence.record import ScenarioDraft, measurements_from
from vaultdr.timeline import PHASES

__all__ = ["DRILLS", "journal_scenario", "run_chaos_drills"]

DRILLS = Path(__file__).resolve().parent.parent.parent / "drills"
FEATURE = "Chaos Toolkit drill"

Say = Callable[[str], None]


def run_chaos_drills(
    run_dir: Path, stack: Stack, stack_file: Path, say: Say = print
) -> list[ScenarioRecord]:
    """Run every experiment in ``drills/``; one evidence scenario per drill."""
    scenarios: list[ScenarioRecord] = []
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


def _draft(experiment: Path) -> ScenarioDraft:
    return ScenarioDraft(
        id=f"chaos-{experiment.stem}",
        feature=FEATURE,
        name=str(json.loads(experiment.read_text()).get("title", experiment.stem)),
        tags=["chaos", experiment.stem],
    )


def _one(env: LocalEnvironment, experiment: Path, run_dir: Path, say: Say) -> ScenarioRecord:
    journal_path = run_dir / "chaos" / experiment.stem / "journal.json"
    say(f"Chaos Toolkit drill: {experiment.name}")
    draft = _draft(experiment)
    try:
        run_experiment(experiment, state_dir=env.state_dir, journal_path=journal_path)
    except VaultdrError as exc:
        draft.fail(exc.message)
        return draft.record(verdict="failed")
    record = journal_scenario(experiment, journal_path, draft=draft)
    say(f"  {record.verdict} ({record.duration_seconds:.1f} s)")
    return record


def journal_scenario(
    experiment: Path, journal_path: Path, *, draft: ScenarioDraft | None = None
) -> ScenarioRecord:
    """A drill's scenario from its Chaos Toolkit journal: the activities as steps, the
    measurements the vaultdr control added, ``vaultdr chaos run``'s verdict."""
    journal = json.loads(journal_path.read_text())
    verdict = judge(journal, journal_path)
    draft = draft or _draft(experiment)
    draft.steps = [
        _activity_step(run)
        for run in [*(journal.get("run") or []), *(journal.get("rollbacks") or [])]
    ]
    measured = journal.get("vaultdr") or {}
    draft.measurements = measurements_from(
        recovery=measured.get("recovery"),
        ledger=measured.get("ledger"),
        restore=measured.get("restore"),
        rto_phase=_judged_phase(measured.get("checks") or []),
    )
    for check in measured.get("checks") or []:
        if check.get("name") == "recovered-within" and "objective" in str(check.get("detail")):
            objective = _comparison(draft, str(check["detail"]), bool(check["ok"]))
            draft.objectives["rto_seconds"] = objective
    if not verdict.passed:
        draft.fail("; ".join(verdict.reasons))
    draft.finish()
    return draft.record(verdict="passed" if verdict.passed else "failed")


def _activity_step(run: dict[str, Any]) -> Step:
    activity = run.get("activity", {})
    succeeded = run.get("status") == "succeeded"
    return Step(
        keyword=str(activity.get("type", "activity")).title(),
        text=str(activity.get("name", "?")),
        status="passed" if succeeded else "failed",
        started_at=run.get("start"),
        duration_seconds=float(run.get("duration") or 0.0),
        error=None if succeeded else str(run.get("status")),
    )


def _judged_phase(checks: list[dict[str, Any]]) -> str:
    """The phase the drill's ``recovered_within`` probe judged (``rto`` unless it named one):
    its detail reads ``RTO 1.23 s (...)`` or ``unsealed 1.23 s (...)``."""
    for check in checks:
        if check.get("name") == "recovered-within":
            label = str(check.get("detail", "")).split(" ", 1)[0]
            if label and label != "RTO" and label in PHASES:
                return label
    return "rto"


def _comparison(draft: ScenarioDraft, detail: str, ok: bool) -> float:
    """Judge the probe's detail ``<name> 1.23 s (objective 15 s)``; the objective."""
    words = detail.replace("(", " ").replace(")", " ").split()
    objective = float(words[words.index("objective") + 1])
    draft.compare(words[0], float(words[1]), objective, met=ok)
    return objective


def _failed_setup(error: str) -> ScenarioRecord:
    draft = ScenarioDraft(
        id="chaos-drills", feature=FEATURE, name="deploy a stack for the drills", tags=["chaos"]
    )
    draft.fail(error)
    draft.finish()
    return draft.record()
