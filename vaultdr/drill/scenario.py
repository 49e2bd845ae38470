"""One DR scenario's instruments and measurements, for the Gherkin steps in ``features/``.

The steps stay thin: each calls one method here, which acts through the fault
catalogue, observes through the timeline and the write ledger, and records
what it measured beside the objective it is judged by. The drill plugin turns
the record into the scenario's part of ``evidence.json``.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from vaultdr import checks, faults
from vaultdr.agents import snapshot as snap
from vaultdr.config import Stack
from vaultdr.envs.kube.env import KubeEnvironment
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.errors import VaultdrError
from vaultdr.ledger import LedgerReport, WriteLedger
from vaultdr.polling import wait_for
from vaultdr.timeline import LoginCheck, Recovery, Timeline, write_events_source

APP_SECRET = ("secret", "apps/web/config")
APP_LOGIN = LoginCheck("apps", "web", "web", mount="secret", path="apps/web/config")
RECOVERY_TIMEOUT = 180.0


def app_secret_value() -> str:
    """The app secret's value: random, or ``$VAULTDR_DRILL_CANARY`` so a test can plant a
    canary and prove it never reaches the evidence."""
    return os.environ.get("VAULTDR_DRILL_CANARY") or secrets.token_hex(16)


class ObjectiveMissed(AssertionError):
    """A measured figure is worse than its objective."""


@dataclass
class ScenarioRun:
    env: LocalEnvironment | KubeEnvironment
    stack: Stack
    scenario_id: str
    timeline: Timeline | None = None
    ledger: WriteLedger | None = None
    ledger_report: LedgerReport | None = None
    recovery: Recovery | None = None
    injected: list[faults.JournalEntry] = field(default_factory=list)
    seeded: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot_key: str | None = None
    corrupt_key: str | None = None
    restore: dict[str, Any] | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    objectives: dict[str, float] = field(default_factory=dict)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    _token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # step arguments are recorded (Allure): nothing secret in here
        return f"ScenarioRun({self.scenario_id!r})"

    def __post_init__(self) -> None:
        rto = self.stack.objectives.rto.get(self.scenario_id)
        if rto is not None:
            self.objectives["rto_seconds"] = rto
        self.objectives["rpo_seconds"] = self.stack.objectives.rpo

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.env.root_token()
        return self._token

    # --- given ---------------------------------------------------------------------------
    def ensure_healthy(self) -> None:
        if not wait_for(lambda: self.env.status().healthy, timeout=120, interval=0.5):
            raise AssertionError(f"the stack is not healthy: {self.env.status()}")
        client = self.env.client(token=self.token)
        if client.read_kv(*APP_SECRET) is None:
            client.write_kv(*APP_SECRET, {"password": app_secret_value()})
        self.start_timeline()

    def start_timeline(self) -> None:
        if self.timeline is None:
            from vaultdr.timeline import local_events_source

            self.timeline = Timeline(
                self.env, self.token, interval=0.1, login=APP_LOGIN, read_path=APP_SECRET
            )
            self.timeline.add_source(local_events_source(self.env.state_dir))
            if self.ledger is not None:
                self.timeline.add_write_source(write_events_source(self.ledger))
            self.timeline.start()

    def start_write_load(self, rate: float = 10.0) -> None:
        self.ledger = WriteLedger(self.env, self.token, rate=rate)
        if self.timeline is not None:  # writes back is part of the RTO
            self.timeline.add_write_source(write_events_source(self.ledger))
        self.ledger.start()
        # some acknowledged writes before the fault (a second's worth)
        if not self.ledger.wait_acknowledged(max(1, int(rate))):
            raise VaultdrError("the write ledger had no write acknowledged within 30 s")

    def seed_and_snapshot(self, count: int = 50) -> str:
        """Write ``count`` secrets, then take a snapshot that contains them."""
        client = self.env.client(token=self.token)
        for i in range(count):
            data = {"n": str(i), "value": f"{app_secret_value()}-{i}"}
            client.write_kv("secret", f"drill/{self.scenario_id}/{i}", data)
            self.seeded[f"secret/drill/{self.scenario_id}/{i}"] = data
        record = self._snapshot_agent().take()
        self.snapshot_key = record.key
        return record.key

    def corrupt_a_newer_snapshot(self) -> str:
        """Take another snapshot, then corrupt it (the fault catalogue's corrupt-latest)."""
        self._snapshot_agent().take()  # its key carries microseconds: never the same key
        entry = self.inject("corrupt-latest-snapshot", mark=False)
        self.corrupt_key = str(entry.detail["key"])
        return self.corrupt_key

    def _snapshot_agent(self) -> snap.SnapshotAgent:
        """The snapshot agent, run from here as its schedule would run it."""
        return self.env.snapshot_agent()

    # --- when ------------------------------------------------------------------------------
    def inject(self, name: str, *args: str, mark: bool = True) -> faults.JournalEntry:
        timeline = self.timeline

        def on_mark(kind: str, detail: dict[str, Any]) -> None:
            if timeline is not None:
                timeline.mark(kind, **detail)

        entry = faults.inject(self.env, name, list(args), mark=on_mark if mark else None)
        self.injected.append(entry)
        return entry

    # --- then ------------------------------------------------------------------------------
    def wait_recovered(self, *require: str) -> Recovery:
        assert self.timeline is not None, "no timeline: the scenario has no 'Given a healthy stack'"
        phases = tuple(require)
        if self.ledger is not None and "serving" in phases and "writing" not in phases:
            phases += ("writing",)  # apps write too: writes back is part of the outage
        recovery = self.timeline.wait_recovered(
            RECOVERY_TIMEOUT, require=phases, stable_for=self.stack.objectives.stable_for
        )
        self.recovery = recovery
        self.measurements["phases"] = {
            k: recovery.to_dict()[k]
            for k in (
                "detected",
                "leader",
                "unsealed",
                "restored",
                "serving",
                "auth_ready",
                "healthy",
            )
        }
        self.measurements["rto_seconds"] = recovery.rto
        if not recovery.recovered:
            missing = [p for p in require if recovery.to_dict().get(p) is None]
            raise AssertionError(
                f"not recovered within {RECOVERY_TIMEOUT:.0f} s: never reached {', '.join(missing)}"
            )
        return recovery

    def compare(
        self, name: str, measured: float | None, objective: float | None, unit: str = "s"
    ) -> None:
        if objective is None:
            return
        met = measured is not None and measured <= objective
        self.comparisons.append(
            {"name": name, "measured": measured, "objective": objective, "unit": unit, "met": met}
        )
        if not met:
            shown = "nothing" if measured is None else f"{measured:.2f} {unit}"
            raise ObjectiveMissed(f"{name}: measured {shown}, objective {objective:.0f} {unit}")

    def within_objective(self, phase: str, *require: str, seconds: float | None = None) -> None:
        recovery = self.wait_recovered(*require)
        objective = seconds if seconds is not None else self.objectives.get("rto_seconds")
        if seconds is not None:
            self.objectives["rto_seconds"] = seconds
        value = recovery.rto if phase == "rto" else recovery.to_dict().get(phase)
        if phase != "rto":
            self.measurements["rto_seconds"] = value
        self.compare("RTO" if phase == "rto" else f"RTO ({phase})", value, objective)

    def wait_fully_healthy(self) -> None:
        """Every node unsealed and a raft voter, one active (autopilot promotion included)."""
        if not wait_for(
            lambda: checks.cluster_healthy(self.env, self.token).ok, timeout=120, interval=0.5
        ):
            raise AssertionError(checks.cluster_healthy(self.env, self.token).detail)

    def verify_ledger(self, *, after_restore: bool = False) -> LedgerReport:
        assert self.ledger is not None, "no write load ran in this scenario"
        self.ledger.stop()
        taken_at = None
        if after_restore:
            restore = self.read_restore()
            taken_at = snap.parse_key_time(restore["snapshot_key"]) if restore else None
        fault_wall = None
        if self.injected:
            fault_wall = dt.datetime.fromisoformat(self.injected[-1].started_at)
        report = self.ledger.verify(snapshot_taken_at=taken_at, fault_at_wall=fault_wall)
        self.ledger_report = report
        self.measurements["acknowledged_writes"] = report.acknowledged
        self.measurements["lost_writes"] = report.lost
        if taken_at is not None:
            self.measurements["rpo_writes"] = report.rpo_writes
            self.measurements["rpo_seconds"] = report.rpo_seconds
        if report.lost:
            first = report.lost[0]
            raise AssertionError(
                f"{len(report.lost)} acknowledged writes lost, the first {first['key']} "
                f"v{first['version']} written at {first['wall']}"
            )
        return report

    def read_restore(self) -> dict[str, Any] | None:
        started = self.injected[0].started_at if self.injected else ""
        record = self.env.last_restore()  # local: the watcher's file; kube: its annotation
        if record is None:
            return None
        if str(record.get("started_at", "")) < started:
            return None
        self.restore = record
        self.measurements["snapshot"] = {
            "key": record["snapshot_key"],
            "sha256": record["snapshot_sha256"],
            "age_seconds": record["snapshot_age_seconds"],
            "skipped": record.get("skipped", []),
        }
        return record

    def read_seeded(self) -> list[str]:
        """The seeded secrets that do not read back as written (through the active node)."""
        client = self.env.client(token=self.token)
        wrong = []
        for where, data in self.seeded.items():
            mount, _, path = where.partition("/")
            try:
                if client.read_kv(mount, path) != data:
                    wrong.append(where)
            except VaultdrError:
                wrong.append(where)
        return wrong

    # --- evidence ------------------------------------------------------------------------------
    def timeline_for_evidence(self) -> list[dict[str, Any]]:
        if self.timeline is None:
            return []
        events = self.timeline.events
        fault = self.timeline.last_fault() if self.injected else None
        base = fault.mono if fault else (events[0].mono if events else 0.0)
        shown = []
        for event in events:
            if event.detail.get("initial"):
                continue
            shown.append({"t": round(event.mono - base, 3), "kind": event.kind, "node": event.node})
        return shown

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.stop()
        if self.timeline is not None:
            self.timeline.stop()
        faults.rollback(self.env)
