"""``vaultdr drill``: play the Gherkin scenarios in ``features/`` and leave evidence.

Each feature gets a fresh stack on local (the scenarios destroy it on purpose; on
kind/eks the cluster's stack, brought up unless healthy, heals itself between features); pytest
with pytest-bdd plays them, the drill plugin shows progress and writes
``evidence.json``, ``allure-pytest-bdd`` writes Allure results, and then the
HTML report, the runs index and ``MANIFEST.sha256`` are written. The exit
status is 0 only when every scenario passed.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultdr.config import Stack, load_stack
from vaultdr.drill.chaos_drills import run_chaos_drills
from vaultdr.drill.evidence import journals
from vaultdr.errors import EXIT_DRILL_FAILED, EXIT_OK, ConfigError, VaultdrError
from vaultdr.evidence.index import write_index
from vaultdr.evidence.manifest import seal_run
from vaultdr.evidence.record import run_record
from vaultdr.evidence.schema import load_evidence
from vaultdr.files import write_json_atomic

FEATURES = Path(__file__).resolve().parent.parent.parent / "features"


@dataclass
class DrillResult:
    run_dir: Path
    verdict: str
    scenarios: int
    passed: int
    exit_code: int


def new_run_id() -> str:
    return f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def run_drill(
    *,
    config: Path,
    env_name: str = "local",
    tags: str | None = None,
    report_dir: Path = Path("reports"),
    junit: bool = False,
    chaos: bool = False,
    features: Path = FEATURES,
) -> DrillResult:
    if env_name not in ("local", "kind", "eks"):
        raise ConfigError(f"--env {env_name}: unknown", hint="use local, kind or eks")
    stack = load_stack(config)  # a bad stack.yaml fails here, before anything starts
    if not features.is_dir():
        raise ConfigError(f"no features directory at {features}")
    run_id = new_run_id()
    run_dir = (report_dir / run_id).resolve()
    run_dir.mkdir(parents=True)
    print(f"vaultdr drill {run_id}: evidence in {run_dir}", flush=True)
    code = _play_features(
        pytest_command(features, run_dir, tags=tags, junit=junit),
        cwd=features.parent,
        environ=drill_environment(run_dir, run_id, config=config, env_name=env_name, junit=junit),
        log_path=run_dir / "pytest.log",
    )
    if not (run_dir / "evidence.json").exists():
        raise VaultdrError(
            f"the drill wrote no evidence (pytest exit {code})",
            hint=f"see {run_dir / 'pytest.log'}",
        )
    evidence = load_evidence(run_dir)
    if chaos:
        evidence = add_chaos_drills(run_dir, evidence, stack, config)
    seal_run(run_dir)
    write_index(run_dir.parent)
    scenarios = evidence["scenarios"]
    passed = sum(1 for s in scenarios if s["verdict"] == "passed")
    ok = code == 0 and evidence["verdict"] == "passed"
    exit_code = EXIT_OK if ok else EXIT_DRILL_FAILED
    return DrillResult(run_dir, evidence["verdict"], len(scenarios), passed, exit_code)


def pytest_command(features: Path, run_dir: Path, *, tags: str | None, junit: bool) -> list[str]:
    """pytest over ``features`` with the drill plugin, Allure results and (``junit``) JUnit XML."""
    command = [sys.executable, "-m", "pytest", str(features), "-p", "vaultdr.drill.plugin"]
    command += ["-p", "no:cacheprovider", "-q", "--no-header", "-rN", "--tb=short"]
    command += ["-W", "ignore::pytest.PytestUnknownMarkWarning"]  # feature tags are marks
    command += ["--alluredir", str(run_dir / "allure-results")]
    command += ["-o", "testpaths=features", "--rootdir", str(features.parent)]
    if tags:
        command += ["-m", tags]
    if junit:
        command += ["--junitxml", str(run_dir / "junit.xml")]
    return command


def drill_environment(
    run_dir: Path, run_id: str, *, config: Path, env_name: str, junit: bool
) -> dict[str, str]:
    """The process environment the drill plugin reads its run from (``VAULTDR_DRILL_*``)."""
    return {
        **os.environ,
        "VAULTDR_DRILL_DIR": str(run_dir),
        "VAULTDR_DRILL_RUN_ID": run_id,
        "VAULTDR_DRILL_CONFIG": str(config.resolve()),
        "VAULTDR_DRILL_ENV": env_name,
        "VAULTDR_DRILL_STARTED": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "VAULTDR_DRILL_JUNIT": "junit.xml" if junit else "",
    }


def _play_features(
    command: list[str], *, cwd: Path, environ: dict[str, str], log_path: Path
) -> int:
    """Run pytest, keeping its output in ``log_path`` and showing the plugin's progress lines."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:  # progress lines come from the drill plugin
            log.write(line)
            if line.startswith("["):
                print(line, end="", flush=True)
        return process.wait()


def add_chaos_drills(
    run_dir: Path, evidence: dict[str, Any], stack: Stack, config: Path
) -> dict[str, Any]:
    """Run drills/*.json too; their journals and verdicts join the evidence."""

    started = dt.datetime.now(dt.UTC)

    def say(text: str) -> None:
        elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
        print(f"[{elapsed:7.1f}s] {text}", flush=True)

    played = run_chaos_drills(run_dir, stack, config, say=say)
    evidence = run_record(
        run_id=evidence["run_id"],
        started=dt.datetime.fromisoformat(evidence["started_at"]),
        scenarios=[*evidence["scenarios"], *played],
        environment=evidence["environment"]["name"],
        engine=evidence["engine"],
        stack=evidence["stack"],
        artifacts={**evidence["artifacts"], "journals": journals(run_dir)},
    )
    write_json_atomic(run_dir / "evidence.json", evidence)
    return evidence
