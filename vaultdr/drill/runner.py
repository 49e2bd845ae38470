"""``vaultdr drill``: play the Gherkin scenarios in ``features/`` and leave evidence.

Each feature gets a fresh stack (the scenarios destroy it on purpose); pytest
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

from vaultdr.config import load_stack
from vaultdr.errors import ConfigError
from vaultdr.evidence.index import write_index
from vaultdr.evidence.manifest import write_manifest
from vaultdr.evidence.report import write_report
from vaultdr.evidence.schema import load_evidence

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
    features: Path = FEATURES,
) -> DrillResult:
    if env_name != "local":
        raise ConfigError(
            f"--env {env_name}: not available in this version", hint="use --env local"
        )
    load_stack(config)  # a bad stack.yaml fails here, before anything starts
    if not features.is_dir():
        raise ConfigError(f"no features directory at {features}")
    run_id = new_run_id()
    run_dir = (report_dir / run_id).resolve()
    run_dir.mkdir(parents=True)
    command = [sys.executable, "-m", "pytest", str(features), "-p", "vaultdr.drill.plugin"]
    command += ["-p", "no:cacheprovider", "-q", "--no-header", "-rN", "--tb=short"]
    command += ["-W", "ignore::pytest.PytestUnknownMarkWarning"]  # feature tags are marks
    command += ["--alluredir", str(run_dir / "allure-results")]
    command += ["-o", "testpaths=features", "--rootdir", str(features.parent)]
    if tags:
        command += ["-m", tags]
    if junit:
        command += ["--junitxml", str(run_dir / "junit.xml")]
    environ = {
        **os.environ,
        "VAULTDR_DRILL_DIR": str(run_dir),
        "VAULTDR_DRILL_RUN_ID": run_id,
        "VAULTDR_DRILL_CONFIG": str(config.resolve()),
        "VAULTDR_DRILL_ENV": env_name,
        "VAULTDR_DRILL_STARTED": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "VAULTDR_DRILL_JUNIT": "junit.xml" if junit else "",
    }
    print(f"vaultdr drill {run_id}: evidence in {run_dir}", flush=True)
    with open(run_dir / "pytest.log", "w") as log:
        process = subprocess.Popen(
            command,
            cwd=features.parent,
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
        code = process.wait()
    if not (run_dir / "evidence.json").exists():
        raise ConfigError(
            f"the drill wrote no evidence (pytest exit {code})",
            hint=f"see {run_dir / 'pytest.log'}",
        )
    evidence = load_evidence(run_dir)
    write_report(run_dir)
    write_manifest(run_dir)
    write_index(run_dir.parent)
    scenarios = evidence["scenarios"]
    passed = sum(1 for s in scenarios if s["verdict"] == "passed")
    ok = code == 0 and evidence["verdict"] == "passed"
    return DrillResult(run_dir, evidence["verdict"], len(scenarios), passed, 0 if ok else 1)
