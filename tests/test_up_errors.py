"""`vaultdr up` on bad input: a clear error, a non-zero exit, and nothing left running."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.conftest import CliRunner, stack_with
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.errors import EnvironmentStartError


def test_a_missing_server_binary_is_named(tmp_path: Path, cli: CliRunner) -> None:
    _, path = stack_with(tmp_path, engine={"binary": str(tmp_path / "no-such-bao")})
    result = cli("up", "--config", str(path), state_dir=tmp_path / "state")
    assert result.returncode == 2
    assert "engine.binary" in result.stderr
    assert "no-such-bao" in result.stderr
    assert not (tmp_path / "state").exists()


def test_a_server_of_the_wrong_version_is_refused_before_anything_starts(
    tmp_path: Path, cli: CliRunner
) -> None:
    _, path = stack_with(tmp_path, engine={"kind": "openbao", "version": "9.9.9"})
    result = cli("up", "--config", str(path), state_dir=tmp_path / "state")
    assert result.returncode == 2
    assert "expects 9.9.9" in result.stderr
    assert "2.6.2" in result.stderr
    assert not (tmp_path / "state").exists()


def fake_server(tmp_path: Path) -> Path:
    """A 'server' that reports the right version but dies at start, like a bad config."""
    script = tmp_path / "bao"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = version ]; then echo "OpenBao v2.6.2 (fake)"; exit 0; fi\n'
        'echo "Error parsing config: storage is on fire" >&2\n'
        "exit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.mark.stack
def test_a_node_that_never_becomes_healthy_shows_its_log_and_stops_everything(
    tmp_path: Path,
) -> None:
    stack, path = stack_with(
        tmp_path, engine={"binary": str(fake_server(tmp_path))}, startup_timeout="6s"
    )
    env = LocalEnvironment(tmp_path / "state", stack, stack_file=str(path))
    with pytest.raises(EnvironmentStartError) as err:
        env.up()
    assert "storage is on fire" in str(err.value)
    assert "did not happen within 6 s" in str(err.value)
    assert env.running_processes() == []
