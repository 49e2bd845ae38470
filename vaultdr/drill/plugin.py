"""The pytest plugin ``vaultdr drill`` runs the features with: progress, and ``evidence.json``.

It shows each scenario and step as it goes (with the time since the run
started), records every step's status, start and duration in a
:class:`~vaultdr.evidence.record.ScenarioDraft`, takes each scenario's
measurements and objectives from its :class:`ScenarioRun`, and at the end
writes ``evidence.json`` (schema ``vaultdr.evidence/v1``, see
``docs/evidence-schema.md``) into the run directory. When a scenario fails, its
session collects the stack's diagnostics (logs, events, status) into
``diagnostics/<scenario>/`` before the faults are rolled back; a failure to collect
them is recorded and changes nothing else.

The runner passes the run directory, run id, stack file and environment name
in ``VAULTDR_DRILL_*`` environment variables.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from vaultdr.drill.evidence import write_evidence
from vaultdr.drill.scenario import ScenarioRun
from vaultdr.evidence.record import ScenarioDraft

RUN_KEY = pytest.StashKey[ScenarioRun]()


class DrillRecorder:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.t0 = time.monotonic()
        self.scenarios: dict[str, ScenarioDraft] = {}

    # --- output ---------------------------------------------------------------------------
    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {text}"
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if capture is not None:  # progress goes to the terminal even while a test runs
            with capture.global_and_fixture_disabled():
                print(line, flush=True)
        else:
            print(line, flush=True)

    # --- pytest-bdd hooks -----------------------------------------------------------------------
    @pytest.hookimpl
    def pytest_bdd_before_scenario(self, request: Any, feature: Any, scenario: Any) -> None:
        tags = sorted(set(feature.tags) | set(scenario.tags))
        self.scenarios[request.node.nodeid] = ScenarioDraft(
            id=_scenario_id(tags, feature.name), feature=feature.name, name=scenario.name, tags=tags
        )
        self.say(f"{feature.name}: {scenario.name}")

    @pytest.hookimpl
    def pytest_bdd_before_step(
        self, request: Any, feature: Any, scenario: Any, step: Any, step_func: Any
    ) -> None:
        draft = self.scenarios.get(request.node.nodeid)
        if draft is not None:
            draft.begin_step(step.keyword, step.name)
        self.say(f"  {step.keyword} {step.name}")

    def _end_step(self, nodeid: str, status: str, error: str | None) -> None:
        draft = self.scenarios.get(nodeid)
        ended = (
            draft.end_step("passed" if status == "passed" else "failed", error) if draft else None
        )
        if ended is None:
            return
        mark = "ok" if status == "passed" else "FAILED"
        self.say(f"    {mark} ({ended.duration_seconds:.1f} s){': ' + error if error else ''}")

    @pytest.hookimpl
    def pytest_bdd_after_step(
        self,
        request: Any,
        feature: Any,
        scenario: Any,
        step: Any,
        step_func: Any,
        step_func_args: Any,
    ) -> None:
        self._end_step(request.node.nodeid, "passed", None)

    @pytest.hookimpl
    def pytest_bdd_step_error(
        self,
        request: Any,
        feature: Any,
        scenario: Any,
        step: Any,
        step_func: Any,
        step_func_args: Any,
        exception: Exception,
    ) -> None:
        error = f"{type(exception).__name__}: {exception}".strip()[:2000]
        self._end_step(request.node.nodeid, "failed", error)

    @pytest.hookimpl
    def pytest_bdd_after_scenario(self, request: Any, feature: Any, scenario: Any) -> None:
        draft = self.scenarios.get(request.node.nodeid)
        if draft is None:
            return
        run = request.node.stash.get(RUN_KEY, None)
        if run is not None:
            draft.objectives = dict(run.objectives)
            draft.measurements = run.measurements()
            draft.comparisons = list(run.comparisons)
            draft.timeline = run.timeline_for_evidence()
        draft.skip_missing((step.keyword, step.name) for step in scenario.steps)
        draft.finish()

    # --- pytest hooks -----------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Any:
        """A scenario that failed while it was played: its diagnostics, before its session
        is closed (the faults rolled back) in teardown."""
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" and report.failed:
            self.collect_diagnostics(item)

    def collect_diagnostics(self, item: pytest.Item) -> None:
        run_dir = os.environ.get("VAULTDR_DRILL_DIR")
        run = item.stash.get(RUN_KEY, None)
        draft = self.scenarios.get(item.nodeid)
        if not run_dir or run is None or draft is None or draft.diagnostics is not None:
            return
        self.say("  collecting diagnostics")
        try:
            collected = run.collect_diagnostics(Path(run_dir), draft.id)
        except Exception as exc:  # noqa: BLE001 - never let it break the run's report
            self.say(f"    not collected: {type(exc).__name__}")
            return
        draft.diagnostics = collected
        self.say(
            f"    {len(collected.files)} files in {collected.directory}"
            + (f" ({len(collected.errors)} not collected)" if collected.errors else "")
        )

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        draft = self.scenarios.get(report.nodeid)
        if report.failed:
            if draft is None:  # the stack did not come up: the scenario never started
                where, _, name = report.nodeid.rpartition("::")
                draft = ScenarioDraft(id=name, feature=where.split("::")[0], name=name)
                draft.finish()
                self.scenarios[report.nodeid] = draft
            crash = getattr(report.longrepr, "reprcrash", None)
            draft.fail(f"{report.when}: {crash.message if crash else str(report.longrepr)[-1500:]}")
            self.say(f"  FAILED in {report.when}: {(draft.error or '')[:300]}")
        elif report.when == "call" and draft is not None:
            self.say(f"  passed ({draft.duration_seconds or 0.0:.1f} s)")

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run_dir = os.environ.get("VAULTDR_DRILL_DIR")
        if not run_dir:
            return

        write_evidence(Path(run_dir), [d.record() for d in self.scenarios.values()])


def _scenario_id(tags: list[str], feature: str) -> str:
    return tags[0] if tags else feature.lower().replace(" ", "-")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(DrillRecorder(config), "vaultdr-drill-recorder")
