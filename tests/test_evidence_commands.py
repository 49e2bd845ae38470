"""`vaultdr report` and `vaultdr evidence verify` from vaultdr.evidence.commands, run for real.

The commands run in a subprocess (``python -m vaultdr.evidence.commands``) on
real run directories; the sample evidence is the one of tests/test_evidence.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_evidence import evidence, run_dir_with
from vaultdr.evidence.commands import cmd_evidence, cmd_report, register
from vaultdr.evidence.manifest import MANIFEST, verify_manifest, write_manifest

REPO = Path(__file__).resolve().parent.parent

Commands = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def commands() -> Commands:
    """Run ``python -m vaultdr.evidence.commands ARGS``; ``path`` replaces $PATH."""

    def run(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        if path is not None:
            env["PATH"] = path
        return subprocess.run(
            [sys.executable, "-m", "vaultdr.evidence.commands", *args],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
            env=env,
            check=False,
        )

    return run


def test_verify_passes_a_sealed_run_then_fails_once_it_is_tampered_with(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    ok = commands("evidence", "verify", str(run_dir))
    assert ok.returncode == 0, ok.stderr
    assert f"OK: 3 files in {run_dir} match {MANIFEST}" in ok.stdout
    data = json.loads((run_dir / "evidence.json").read_text())
    data["scenarios"][2]["verdict"] = "passed"  # a failure made to look like a pass
    (run_dir / "evidence.json").write_text(json.dumps(data))
    bad = commands("evidence", "verify", str(run_dir))
    assert bad.returncode == 8
    assert "changed: evidence.json" in bad.stderr
    assert "does NOT verify (1 problem(s))" in bad.stderr


def test_verify_fails_a_run_that_was_never_sealed_or_has_no_valid_evidence(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    (run_dir / MANIFEST).unlink()
    (run_dir / "evidence.json").write_text("{ truncated")
    bad = commands("evidence", "verify", str(run_dir))
    assert bad.returncode == 8
    assert f"no {MANIFEST} in {run_dir}" in bad.stderr
    assert "is not JSON" in bad.stderr


def test_verify_reports_a_manifest_that_is_not_text_instead_of_crashing(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    (run_dir / MANIFEST).write_bytes(b"\xff\xfe\x00 not a manifest\n")
    bad = commands("evidence", "verify", str(run_dir))
    assert bad.returncode == 8
    assert f"{MANIFEST} is not text" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_verify_and_report_name_a_directory_that_does_not_exist(
    commands: Commands, tmp_path: Path
) -> None:
    for args in (("evidence", "verify"), ("report",)):
        bad = commands(*args, str(tmp_path / "nope"))
        assert bad.returncode == 8
        assert "is not a directory" in bad.stderr


def test_report_rebuilds_the_page_reseals_and_refreshes_the_index(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    (run_dir / "report.html").write_text("lost")
    rebuilt = commands("report", str(run_dir))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "DR drill evidence" in (run_dir / "report.html").read_text()
    assert verify_manifest(run_dir) == []
    assert run_dir.name in (tmp_path / "index.html").read_text()


def test_report_never_reseals_tampered_evidence_and_leaves_the_run_as_found(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    (run_dir / "junit.xml").write_text("<changed/>")
    (run_dir / "notes.txt").write_text("added later")
    (run_dir / "report.html").write_text("stale page")
    manifest = (run_dir / MANIFEST).read_bytes()
    refused = commands("report", str(run_dir))
    assert refused.returncode == 8
    assert "changed: junit.xml" in refused.stderr
    assert "not in the manifest: notes.txt" in refused.stderr
    assert "not re-sealed" in refused.stderr
    assert (run_dir / MANIFEST).read_bytes() == manifest
    assert (run_dir / "report.html").read_text() == "stale page"


def test_report_does_not_seal_a_run_that_had_no_manifest(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    (run_dir / MANIFEST).unlink()
    done = commands("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert (run_dir / "report.html").exists()
    assert not (run_dir / MANIFEST).exists()


def with_allure_results(tmp_path: Path) -> Path:
    run_dir = run_dir_with(tmp_path, evidence())
    results = run_dir / "allure-results"
    results.mkdir()
    (results / "0b5a1c2e-result.json").write_text(
        json.dumps(
            {
                "uuid": "0b5a1c2e",
                "historyId": "leader-loss",
                "name": "the leader-loss scenario",
                "fullName": "features/leader_loss.feature:the leader-loss scenario",
                "status": "passed",
                "stage": "finished",
                "start": 1795406400000,
                "stop": 1795406420500,
                "labels": [{"name": "feature", "value": "Leader loss"}],
                "steps": [],
            }
        )
    )
    write_manifest(run_dir)
    return run_dir


def test_report_with_allure_but_no_allure_cli_says_what_to_install_and_changes_nothing(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = with_allure_results(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    page = (run_dir / "report.html").read_text()
    refused = commands("report", str(run_dir), "--allure", path=str(empty))
    assert refused.returncode != 0
    assert "npm install -g allure" in refused.stderr
    assert "npm install allure" in refused.stderr
    assert (run_dir / "report.html").read_text() == page
    assert verify_manifest(run_dir) == []


@pytest.fixture(scope="session")
def allure_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The npm ``allure`` package (Allure 3) installed into a temporary directory."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    prefix = tmp_path_factory.mktemp("allure-npm")
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "allure@3"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"the npm allure package could not be installed: {done.stderr[-300:]}")
    return prefix / "node_modules" / ".bin"


def test_report_with_allure_renders_html_inside_the_seal(
    commands: Commands, tmp_path: Path, allure_bin: Path
) -> None:
    run_dir = with_allure_results(tmp_path)
    path = f"{allure_bin}{os.pathsep}{os.environ['PATH']}"
    first = commands("report", str(run_dir), "--allure", path=path)
    assert first.returncode == 0, first.stderr
    assert (run_dir / "allure-report" / "index.html").exists()
    assert verify_manifest(run_dir) == []  # the Allure pages are sealed with the rest
    (run_dir / "allure-report" / "planted.html").write_text("not from allure")
    again = commands("report", str(run_dir), "--allure", path=path)
    assert again.returncode == 0, again.stderr
    assert not (run_dir / "allure-report" / "planted.html").exists()
    assert verify_manifest(run_dir) == []


def test_register_adds_both_commands_with_the_common_options() -> None:
    parser = argparse.ArgumentParser(prog="vaultdr")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir")
    register(parser.add_subparsers(dest="command", required=True), common)
    report = parser.parse_args(["report", "reports/r1", "--allure", "--state-dir", "s"])
    assert (report.handler, report.dir, report.allure, report.state_dir) == (
        cmd_report,
        "reports/r1",
        True,
        "s",
    )
    verify = parser.parse_args(["evidence", "verify", "reports/r1"])
    assert (verify.handler, verify.action, verify.dir) == (cmd_evidence, "verify", "reports/r1")


def test_verify_refuses_a_manifest_that_names_paths_outside_the_run(
    commands: Commands, tmp_path: Path
) -> None:
    run_dir = run_dir_with(tmp_path, evidence())
    outside = tmp_path / "outside.txt"
    outside.write_text("not evidence")
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    with open(run_dir / MANIFEST, "a") as manifest:
        manifest.write(f"{digest}  ../outside.txt\n{digest}  {outside}\n")
    bad = commands("evidence", "verify", str(run_dir))
    assert bad.returncode != 0
    assert "names a path outside the run: ../outside.txt" in bad.stderr
    assert f"names a path outside the run: {outside}" in bad.stderr


def test_verify_refuses_nan_and_infinity_in_evidence(commands: Commands, tmp_path: Path) -> None:
    data = evidence()
    run_dir = run_dir_with(tmp_path, data)
    text = (run_dir / "evidence.json").read_text()
    first_rto = json.dumps(data["scenarios"][0]["measurements"]["rto_seconds"])
    (run_dir / "evidence.json").write_text(text.replace(first_rto, "NaN", 1))
    write_manifest(run_dir)  # sealed as it is: only the content is wrong
    bad = commands("evidence", "verify", str(run_dir))
    assert bad.returncode != 0
    assert "NaN is not a number JSON allows" in bad.stderr
