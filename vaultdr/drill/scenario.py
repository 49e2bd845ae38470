"""One DR scenario for the Gherkin steps in ``features/``: a drill session that judges.

The steps stay thin: each calls one method here. :class:`ScenarioRun` is the
scenario's :class:`~vaultdr.session.DrillSession` (it acts through the fault
catalogue, observes through the timeline and the write ledger) plus what a
Gherkin scenario adds: the data it seeds, the objectives it is judged by, and
failing the step (an ``AssertionError``) when a figure misses its objective.
The drill plugin turns it into the scenario's part of ``evidence.json``.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from vaultdr.agents import snapshot as snap
from vaultdr.config import Stack
from vaultdr.envs.factory import AnyEnvironment
from vaultdr.errors import VaultdrError
from vaultdr.evidence.models import Comparison, Measurements
from vaultdr.ledger import LedgerReport
from vaultdr.polling import wait_for
from vaultdr.session import APP_LOGIN, APP_SECRET, RECOVERY_TIMEOUT, DrillSession
from vaultdr.timeline import Recovery

__all__ = ["APP_LOGIN", "APP_SECRET", "ObjectiveMissed", "ScenarioRun", "app_secret_value"]


def app_secret_value() -> str:
    """The app secret's value: random, or ``$VAULTDR_DRILL_CANARY`` so a test can plant a
    canary and prove it never reaches the evidence."""
    return os.environ.get("VAULTDR_DRILL_CANARY") or secrets.token_hex(16)


class ObjectiveMissed(AssertionError):
    """A measured figure is worse than its objective."""


class ScenarioRun(DrillSession):
    """A Gherkin scenario's drill session: seeds, objectives and comparisons."""

    def __init__(self, env: AnyEnvironment, stack: Stack, scenario_id: str) -> None:
        super().__init__(env, stack=stack)
        self.stack = stack
        self.scenario_id = scenario_id
        self.seeded: dict[str, dict[str, Any]] = {}
        self.snapshot_key: str | None = None
        self.corrupt_key: str | None = None
        self.objectives: dict[str, float] = {}
        self.comparisons: list[Comparison] = []
        self.rto_phase = "rto"  # the figure reported as the scenario's RTO
        rto = stack.objectives.rto.get(scenario_id)
        if rto is not None:
            self.objectives["rto_seconds"] = rto
        self.objectives["rpo_seconds"] = stack.objectives.rpo

    def __repr__(self) -> str:  # step arguments are recorded (Allure): nothing secret in here
        return f"ScenarioRun({self.scenario_id!r})"

    # --- given ---------------------------------------------------------------------------
    def ensure_healthy(self) -> None:
        if not wait_for(lambda: self.env.status().healthy, timeout=120, interval=0.5):
            raise AssertionError(f"the stack is not healthy: {self.env.status()}")
        client = self.env.client(token=self.token)
        if client.read_kv(*APP_SECRET) is None:
            client.write_kv(*APP_SECRET, {"password": app_secret_value()})
        self.start_timeline()

    def start_write_load(self, rate: float = 10.0) -> None:
        self.start_ledger(rate=rate)  # some acknowledged writes before the fault

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

    # --- then ------------------------------------------------------------------------------
    def wait_recovered(
        self, *require: str, timeout: float = RECOVERY_TIMEOUT, stable_for: float | None = None
    ) -> Recovery:
        """The session's wait; a scenario fails when the recovery did not happen in time."""
        assert self.timeline is not None, "no timeline: the scenario has no 'Given a healthy stack'"
        recovery = super().wait_recovered(*require, timeout=timeout, stable_for=stable_for)
        if not recovery.recovered:
            raise AssertionError(
                f"not recovered within {timeout:.0f} s: never reached {', '.join(recovery.missing)}"
            )
        return recovery

    def compare(
        self, name: str, measured: float | None, objective: float | None, unit: str = "s"
    ) -> None:
        if objective is None:
            return
        met = measured is not None and measured <= objective
        self.comparisons.append(
            Comparison(name=name, measured=measured, objective=objective, unit=unit, met=met)
        )
        if not met:
            shown = "nothing" if measured is None else f"{measured:.2f} {unit}"
            raise ObjectiveMissed(f"{name}: measured {shown}, objective {objective:.0f} {unit}")

    def within_objective(self, phase: str, *require: str, seconds: float | None = None) -> None:
        recovery = self.wait_recovered(*require)
        objective = seconds if seconds is not None else self.objectives.get("rto_seconds")
        if seconds is not None:
            self.objectives["rto_seconds"] = seconds
        self.rto_phase = phase
        value = recovery.rto if phase == "rto" else recovery.to_dict().get(phase)
        self.compare("RTO" if phase == "rto" else f"RTO ({phase})", value, objective)

    def wait_fully_healthy(self) -> None:
        """Every node unsealed and a raft voter, one active (autopilot promotion included)."""
        result = self.fully_healthy()
        if not result.ok:
            raise AssertionError(result.detail)

    def verify_ledger(self, *, after_restore: bool = False, timeout: float = 60.0) -> LedgerReport:
        """The session's read-back; a scenario fails when an acknowledged write was lost."""
        assert self.ledger is not None, "no write load ran in this scenario"
        report = super().verify_ledger(after_restore=after_restore, timeout=timeout)
        if report.lost:
            first = report.lost[0]
            raise AssertionError(
                f"{len(report.lost)} acknowledged writes lost, the first {first['key']} "
                f"v{first['version']} written at {first['wall']}"
            )
        return report

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
    def measurements(self, *, rto_phase: str | None = None) -> Measurements:
        """What the scenario measured; its RTO is the phase its objective is about."""
        return super().measurements(rto_phase=rto_phase or self.rto_phase)
