"""The pytest plugin ``vaultdr drill`` runs the features with: progress, and ``evidence.json``.

It shows each scenario and step as it goes (with the time since the run
started), records every step's status, start and duration, takes each
scenario's measurements and objectives from its :class:`ScenarioRun`, and at
the end writes ``evidence.json`` (schema ``vaultdr.evidence/v1``, see
``docs/evidence-schema.md``) into the run directory.

The runner passes the run directory, run id, stack file and environment name
in ``VAULTDR_DRILL_*`` environment variables.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import pytest

from vaultdr.drill.scenario import ScenarioRun
from vaultdr.evidence.schema import empty_measurements

RUN_KEY = pytest.StashKey[ScenarioRun]()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class DrillRecorder:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.t0 = time.monotonic()
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.step_started: dict[str, float] = {}

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
        record = {
            "id": _scenario_id(tags, feature.name),
            "feature": feature.name,
            "name": scenario.name,
            "tags": tags,
            "verdict": "passed",
            "started_at": _now(),
            "_mono": time.monotonic(),
            "duration_seconds": 0.0,
            "steps": [],
            "objectives": {},
            "measurements": empty_measurements(),
            "comparisons": [],
            "timeline": [],
            "error": None,
        }
        self.scenarios[request.node.nodeid] = record
        self.say(f"{feature.name}: {scenario.name}")

    @pytest.hookimpl
    def pytest_bdd_before_step(
        self, request: Any, feature: Any, scenario: Any, step: Any, step_func: Any
    ) -> None:
        self.step_started[request.node.nodeid] = time.monotonic()
        record = self.scenarios.get(request.node.nodeid)
        if record is not None:
            record["steps"].append(
                {
                    "keyword": step.keyword,
                    "text": step.name,
                    "status": "running",
                    "started_at": _now(),
                    "duration_seconds": 0.0,
                    "error": None,
                }
            )
        self.say(f"  {step.keyword} {step.name}")

    def _end_step(self, nodeid: str, status: str, error: str | None) -> None:
        record = self.scenarios.get(nodeid)
        if record is None or not record["steps"]:
            return
        step = record["steps"][-1]
        step["status"] = status
        step["duration_seconds"] = round(time.monotonic() - self.step_started.get(nodeid, 0), 3)
        step["error"] = error
        mark = "ok" if status == "passed" else "FAILED"
        self.say(f"    {mark} ({step['duration_seconds']:.1f} s){': ' + error if error else ''}")

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
        record = self.scenarios.get(request.node.nodeid)
        if record is not None:
            record["verdict"] = "failed"
            record["error"] = error

    @pytest.hookimpl
    def pytest_bdd_after_scenario(self, request: Any, feature: Any, scenario: Any) -> None:
        record = self.scenarios.get(request.node.nodeid)
        run = request.node.stash.get(RUN_KEY, None)
        if record is None:
            return
        if run is not None:
            record["objectives"] = dict(run.objectives)
            record["measurements"] = _measurements(run)
            record["comparisons"] = list(run.comparisons)
            record["timeline"] = run.timeline_for_evidence()
        done = [s for s in record["steps"] if s["status"] in ("passed", "failed")]
        names = {(s["keyword"], s["text"]) for s in done}
        for step in scenario.steps:
            if (step.keyword, step.name) not in names:
                record["steps"].append(
                    {
                        "keyword": step.keyword,
                        "text": step.name,
                        "status": "skipped",
                        "started_at": None,
                        "duration_seconds": 0.0,
                        "error": None,
                    }
                )
        record["duration_seconds"] = round(time.monotonic() - record["_mono"], 3)

    # --- pytest hooks -----------------------------------------------------------------------------
    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = self.scenarios.get(report.nodeid)
        if report.failed:
            if record is None:  # the stack did not come up: the scenario never started
                record = self.scenarios.setdefault(
                    report.nodeid,
                    {
                        "id": report.nodeid.split("::")[-1],
                        "feature": report.nodeid.split("::")[0],
                        "name": report.nodeid.split("::")[-1],
                        "tags": [],
                        "started_at": _now(),
                        "_mono": time.monotonic(),
                        "duration_seconds": 0.0,
                        "steps": [],
                        "objectives": {},
                        "measurements": empty_measurements(),
                        "comparisons": [],
                        "timeline": [],
                    },
                )
            record["verdict"] = "failed"
            if not record.get("error"):
                crash = getattr(report.longrepr, "reprcrash", None)
                record["error"] = (
                    f"{report.when}: {crash.message if crash else str(report.longrepr)[-1500:]}"
                )
            self.say(f"  FAILED in {report.when}: {record['error'][:300]}")
        elif report.when == "call" and record is not None:
            self.say(f"  passed ({record['duration_seconds']:.1f} s)")

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        run_dir = os.environ.get("VAULTDR_DRILL_DIR")
        if not run_dir:
            return
        from vaultdr.drill.evidence import write_evidence

        scenarios = []
        for record in self.scenarios.values():
            record.pop("_mono", None)
            scenarios.append(record)
        write_evidence(Path(run_dir), scenarios)


def _scenario_id(tags: list[str], feature: str) -> str:
    return tags[0] if tags else feature.lower().replace(" ", "-")


def _measurements(run: ScenarioRun) -> dict[str, Any]:
    return {**empty_measurements(), **run.measurements}


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(DrillRecorder(config), "vaultdr-drill-recorder")
