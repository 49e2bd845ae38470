"""Building ``evidence.json``: a scenario's record and the run's, in one place for every producer.

``vaultdr drill`` (its pytest plugin), the Chaos Toolkit drills (``vaultdr drill
--chaos``) and ``vaultdr upgrade-check`` all record a scenario as a
:class:`ScenarioDraft` while it is played (steps as they start and end, the
figures judged against objectives) and turn it into the typed
:class:`~vaultdr.evidence.models.ScenarioRecord` at the end. The measurements
come from :func:`measurements_from`, which reads the JSON forms of a recovery
(``Recovery.to_dict()``), a write-ledger report (``LedgerReport.to_dict()``) and
a restore record, the same forms a Chaos Toolkit journal carries, so a drill
measured in another process is recorded exactly like one measured here. The
recovery phases are :data:`vaultdr.timeline.PHASES`.

Hazards: nothing here may carry a secret value; the inputs are the instruments'
public summaries (keys, versions and times of writes, never their values).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vaultdr import __version__
from vaultdr.errors import VaultdrError
from vaultdr.evidence.models import (
    SCHEMA,
    Comparison,
    DiagnosticsRecord,
    Flap,
    LostWrite,
    Measurements,
    Objectives,
    Phases,
    ScenarioRecord,
    SkippedSnapshot,
    SnapshotRecord,
    Step,
    TimelineEvent,
)
from vaultdr.evidence.schema import validate_evidence
from vaultdr.timeline import PHASES

__all__ = [
    "ScenarioDraft",
    "git_commit",
    "measurements_from",
    "now_iso",
    "run_record",
    "snapshot_record",
]

StepStatus = Literal["passed", "failed", "skipped", "running"]


def now_iso() -> str:
    """Now, as evidence writes times: ISO 8601 UTC with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# --- measurements ---------------------------------------------------------------------------
def snapshot_record(restore: Mapping[str, Any]) -> SnapshotRecord:
    """The snapshot a restore record (``RestoreRecord.to_dict()``, the environment's
    ``last_restore()``) used, and the newer ones it skipped."""
    return SnapshotRecord(
        key=str(restore["snapshot_key"]),
        sha256=str(restore["snapshot_sha256"]),
        age_seconds=restore["snapshot_age_seconds"],
        skipped=[SkippedSnapshot.model_validate(s) for s in restore.get("skipped") or []],
    )


def measurements_from(
    *,
    recovery: Mapping[str, Any] | None = None,
    ledger: Mapping[str, Any] | None = None,
    restore: Mapping[str, Any] | None = None,
    rto_phase: str = "rto",
) -> Measurements:
    """A scenario's measurements from its recovery, write-ledger report and restore record.

    ``rto_seconds`` is always what apps feel (the later of reads, logins and writes back);
    ``rto_phase`` names the phase the scenario's objective is about when it is another one
    (``unsealed`` for KMS revoked), recorded as ``objective_phase`` beside it. The RPO is
    reported only when the ledger was verified against a restored snapshot.
    """
    measured = Measurements.empty()
    if recovery is not None:
        measured.phases = Phases.model_validate({p: recovery[p] for p in PHASES if p in recovery})
        measured.rto_seconds = recovery.get("rto")
        if rto_phase != "rto":
            measured.objective_phase = rto_phase
        measured.flaps = [Flap.model_validate(f) for f in recovery.get("flaps") or []]
    if ledger is not None:
        measured.acknowledged_writes = ledger.get("acknowledged")
        measured.lost_writes = [LostWrite.model_validate(w) for w in ledger.get("lost") or []]
        if ledger.get("snapshot_taken_at"):
            measured.rpo_writes = ledger.get("rpo_writes")
            measured.rpo_seconds = ledger.get("rpo_seconds")
    if restore is not None:
        measured.snapshot = snapshot_record(restore)
    return measured


# --- a scenario -------------------------------------------------------------------------------
@dataclass
class ScenarioDraft:
    """A scenario while it is played; :meth:`record` is what ``evidence.json`` keeps of it."""

    id: str
    feature: str
    name: str
    tags: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=now_iso)
    steps: list[Step] = field(default_factory=list)
    objectives: dict[str, float] = field(default_factory=dict)
    measurements: Measurements = field(default_factory=Measurements.empty)
    comparisons: list[Comparison] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    error: str | None = None
    duration_seconds: float | None = None  # set by finish(); until then, the time so far
    diagnostics: DiagnosticsRecord | None = None  # collected when it failed
    _began: float = field(default_factory=time.monotonic, repr=False)
    _step_began: float = field(default=0.0, repr=False)

    # --- steps ----------------------------------------------------------------------------
    def begin_step(self, keyword: str, text: str) -> Step:
        """A step starts: recorded as running until :meth:`end_step`."""
        self._step_began = time.monotonic()
        step = Step(
            keyword=keyword,
            text=text,
            status="running",
            started_at=now_iso(),
            duration_seconds=0.0,
            error=None,
        )
        self.steps.append(step)
        return step

    def end_step(self, status: StepStatus, error: str | None = None) -> Step | None:
        """The running step ended (``passed`` or ``failed``, with the failure)."""
        if not self.steps:
            return None
        step = self.steps[-1]
        step.status = status
        step.duration_seconds = round(time.monotonic() - self._step_began, 3)
        step.error = error
        if status == "failed":
            self.error = self.error or error
        return step

    @contextlib.contextmanager
    def step(self, keyword: str, text: str) -> Iterator[Step]:
        """The block is one step: passed when it returns, failed (and re-raised) when it raises."""
        begun = self.begin_step(keyword, text)
        try:
            yield begun
        except Exception as exc:
            message = exc.message if isinstance(exc, VaultdrError) else f"{exc}".strip()
            self.end_step("failed", message or type(exc).__name__)
            raise
        self.end_step("passed")

    def skip_missing(self, planned: Iterable[tuple[str, str]]) -> None:
        """Record as skipped every planned (keyword, text) step that never finished."""
        done = {(s.keyword, s.text) for s in self.steps if s.status in ("passed", "failed")}
        for keyword, text in planned:
            if (keyword, text) not in done:
                self.steps.append(
                    Step(
                        keyword=keyword,
                        text=text,
                        status="skipped",
                        started_at=None,
                        duration_seconds=0.0,
                        error=None,
                    )
                )

    # --- judging ----------------------------------------------------------------------------
    def compare(
        self,
        name: str,
        measured: float | None,
        objective: float,
        unit: str = "s",
        *,
        met: bool | None = None,
    ) -> Comparison:
        """Judge ``measured`` against ``objective``: met when measured and at most it, or
        ``met`` when it was judged elsewhere (a Chaos Toolkit probe)."""
        if met is None:
            met = measured is not None and measured <= objective
        comparison = Comparison(
            name=name, measured=measured, objective=objective, unit=unit, met=met
        )
        self.comparisons.append(comparison)
        return comparison

    def fail(self, error: str) -> None:
        """The scenario failed outside its steps (setup, the stack, a verdict from elsewhere)."""
        self.error = self.error or error

    @property
    def verdict(self) -> Literal["passed", "failed"]:
        """failed when a step failed, an objective was missed or an error was recorded."""
        failed = (
            self.error is not None
            or any(s.status == "failed" for s in self.steps)
            or any(not c.met for c in self.comparisons)
        )
        return "failed" if failed else "passed"

    def finish(self) -> None:
        """The scenario's last step is over: its duration stops here."""
        self.duration_seconds = round(time.monotonic() - self._began, 3)

    def record(self, *, verdict: Literal["passed", "failed"] | None = None) -> ScenarioRecord:
        """The scenario as ``evidence.json`` keeps it (``verdict`` given, or :attr:`verdict`)."""
        duration = self.duration_seconds
        extra: dict[str, Any] = {}
        if self.diagnostics is not None:
            extra["diagnostics"] = self.diagnostics
        return ScenarioRecord(
            id=self.id,
            feature=self.feature,
            name=self.name,
            tags=list(self.tags),
            verdict=verdict or self.verdict,
            started_at=self.started_at,
            duration_seconds=round(time.monotonic() - self._began, 3)
            if duration is None
            else duration,
            steps=list(self.steps),
            objectives=Objectives.model_validate(self.objectives),
            measurements=self.measurements,
            comparisons=list(self.comparisons),
            timeline=list(self.timeline),
            error=self.error,
            **extra,
        )


# --- the run ------------------------------------------------------------------------------------
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


def run_record(
    *,
    run_id: str,
    started: dt.datetime,
    scenarios: Sequence[ScenarioRecord | Mapping[str, Any]],
    environment: str,
    engine: Mapping[str, Any],
    stack: Mapping[str, Any],
    artifacts: Mapping[str, Any],
    upgrade: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole ``evidence.json`` of a run, validated: passed only if there was a scenario
    and every one passed."""
    played = [s.to_dict() if isinstance(s, ScenarioRecord) else dict(s) for s in scenarios]
    passed = bool(played) and all(s["verdict"] == "passed" for s in played)
    finished = dt.datetime.now(dt.UTC)
    evidence: dict[str, Any] = {
        "schema": SCHEMA,
        "run_id": run_id,
        "started_at": started.isoformat(timespec="milliseconds"),
        "finished_at": finished.isoformat(timespec="milliseconds"),
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "verdict": "passed" if passed else "failed",
        "environment": {
            "name": environment,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "vaultdr": {"version": __version__, "git_commit": git_commit()},
        "engine": dict(engine),
        "stack": dict(stack),
        "scenarios": played,
        "artifacts": dict(artifacts),
    }
    if upgrade is not None:
        evidence["upgrade"] = dict(upgrade)
    validate_evidence(evidence)
    return evidence
