"""Safe by default: vaultdr never wipes a directory it did not create, two commands never
share a state directory, an interrupted ``up`` stops what it started, and ``status`` is
not healthy while the parts that heal the stack are dead. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, CliRunner, stack_with
from vaultdr import statedir
from vaultdr.envs.local.processes import wait_for
from vaultdr.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_NOT_GOOD, EXIT_STATE


def processes_mentioning(path: Path) -> list[int]:
    """Pids of every process whose command line or working directory is under ``path``."""
    found = []
    needle = str(path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if needle in argv or cwd.startswith(needle):
            found.append(int(entry.name))
    return found


def vaultdr(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vaultdr.cli", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_state_dir_holding_a_users_file_survives_up(tmp_path: Path, cli: CliRunner) -> None:
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    result = cli("up", state_dir=mine)
    assert result.returncode == EXIT_STATE
    assert "vaultdr did not create" in result.stderr and "notes.txt" in result.stderr
    assert (mine / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert "Traceback" not in result.stderr


def test_a_state_dir_that_is_a_file_is_bad_input(tmp_path: Path, cli: CliRunner) -> None:
    afile = tmp_path / "state"
    afile.write_text("mine")
    for command in (["up"], ["status"], ["down"], ["rollback"]):
        result = cli(*command, state_dir=afile)
        assert result.returncode == EXIT_BAD_INPUT, (command, result.stderr)
        assert "is a file, not a directory" in result.stderr
        assert afile.read_text() == "mine"


def test_down_refuses_a_directory_vaultdr_did_not_create(tmp_path: Path, cli: CliRunner) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "state.json").write_text(json.dumps({"directory": "/somewhere/else"}))
    (other / "data.db").write_text("theirs")
    result = cli("down", state_dir=other)
    assert result.returncode != 0
    assert (other / "data.db").read_text() == "theirs"


def test_remove_owned_refuses_an_unmarked_directory(tmp_path: Path) -> None:
    (tmp_path / "keep").write_text("x")
    with pytest.raises(statedir.NotOurDirectory):
        statedir.remove_owned(tmp_path, what="work directory")
    with pytest.raises(statedir.NotOurDirectory):
        statedir.empty_owned(tmp_path, what="work directory")
    assert (tmp_path / "keep").read_text() == "x"


def test_rollback_on_a_missing_state_dir_is_an_error(tmp_path: Path, cli: CliRunner) -> None:
    result = cli("rollback", state_dir=tmp_path / "typo")
    assert result.returncode == EXIT_STATE
    assert "no state directory" in result.stderr
    assert "nothing to roll back" not in result.stdout
    assert not (tmp_path / "typo").exists()


def test_the_lock_refuses_a_second_process_and_names_the_holder(tmp_path: Path) -> None:
    statedir.claim(tmp_path / "s", what="state directory", purpose="test")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from vaultdr import statedir\n"
            "with statedir.locked(Path(sys.argv[1]), command='drill'):\n"
            "    print('held', flush=True); time.sleep(60)\n",
            str(tmp_path / "s"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(statedir.DirectoryBusy) as busy,
            statedir.locked(tmp_path / "s", command="rollback"),
        ):
            pass
        assert "`vaultdr drill`" in str(busy.value) and str(holder.pid) in str(busy.value)
    finally:
        holder.kill()
        holder.wait()
    # A dead holder holds nothing; within one process the lock is re-entrant.
    with (
        statedir.locked(tmp_path / "s", command="rollback"),
        statedir.locked(tmp_path / "s", command="rollback"),
    ):
        pass


@pytest.mark.stack
def test_sigterm_during_up_leaves_no_process(tmp_path: Path) -> None:
    _, config = stack_with(tmp_path)
    state = tmp_path / "state"
    up = vaultdr("up", "--config", str(config), "--state-dir", str(state))
    try:
        started = wait_for(
            lambda: (
                "supervisor"
                in json.loads((state / "state.json").read_text() or "{}").get("processes", {})
            ),
            timeout=60,
            interval=0.05,
        )
        assert started, "up never started its supervisor"
        assert processes_mentioning(state), "up should have processes running by now"
        up.send_signal(signal.SIGTERM)
        _, err = up.communicate(timeout=90)
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == EXIT_INTERRUPTED, err
    assert "interrupted by SIGTERM" in err
    assert "Traceback" not in err
    assert wait_for(lambda: not processes_mentioning(state), timeout=20), processes_mentioning(
        state
    )


@pytest.mark.stack
def test_a_second_up_is_refused_and_status_sees_a_dead_supervisor(
    tmp_path: Path, cli: CliRunner
) -> None:
    _, config = stack_with(tmp_path)
    state = tmp_path / "state"
    first = vaultdr("up", "--config", str(config), "--state-dir", str(state))
    try:
        assert wait_for(lambda: (state / statedir.LOCK_FILE).exists(), timeout=30, interval=0.05)
        second = cli("up", "--config", str(config), state_dir=state)
        assert second.returncode == EXIT_STATE, second.stderr
        assert "in use by `vaultdr up`" in second.stderr
        out, err = first.communicate(timeout=240)
        assert first.returncode == 0, err
        assert "healthy" in out

        again = cli("up", "--config", str(config), state_dir=state)
        assert again.returncode == EXIT_STATE
        assert "already running" in again.stderr
        status = cli("status", state_dir=state)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "agent supervisor: running" in status.stdout
        assert "agent snapshot-agent: running" in status.stdout
        assert "agent restore-watcher: running" in status.stdout

        ca = state / "ca" / "ca.pem"
        ca.rename(ca.with_suffix(".away"))
        try:
            no_ca = cli("status", state_dir=state)
        finally:
            ca.with_suffix(".away").rename(ca)
        assert no_ca.returncode == EXIT_STATE, no_ca.stderr
        assert "CA certificate" in no_ca.stderr and "Traceback" not in no_ca.stderr

        supervisor = json.loads((state / "state.json").read_text())["processes"]["supervisor"]
        os.kill(supervisor["pid"], signal.SIGSTOP)  # hung: alive, no heartbeat
        try:
            assert wait_for(
                lambda: "hung" in cli("status", state_dir=state).stdout, timeout=30, interval=1
            )
        finally:
            os.kill(supervisor["pid"], signal.SIGCONT)
        os.kill(supervisor["pid"], signal.SIGKILL)  # dead: nothing heals the stack any more
        time.sleep(0.5)
        dead = cli("status", state_dir=state)
        assert dead.returncode == EXIT_NOT_GOOD
        assert "agent supervisor: not running" in dead.stdout
        assert "NOT healthy" in dead.stdout

        node0 = json.loads((state / "state.json").read_text())["nodes"][0]
        pid = json.loads((Path(node0["directory"]) / "pid.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # with no supervisor it stays down
        assert wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=10)
        killed = cli("fault", "inject", "kill-node", "0", state_dir=state)
        assert killed.returncode == EXIT_STATE, killed.stdout + killed.stderr
        assert "is not running" in killed.stderr
        assert "injected" not in killed.stdout
        assert "rollback journal:" in killed.stderr
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        down = cli("down", state_dir=state)
        assert down.returncode == 0, down.stderr
    assert not state.exists()
    assert wait_for(lambda: not processes_mentioning(state), timeout=20)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_an_upgrade_check_work_dir_holding_a_users_file_survives(
    tmp_path: Path, cli: CliRunner
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    reports = tmp_path / "reports"
    result = cli(
        "upgrade-check", "--to", "2.6.2", "--work-dir", str(work), "--report-dir", str(reports)
    )
    assert result.returncode == EXIT_STATE, result.stdout + result.stderr
    assert "vaultdr did not create" in result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["thesis.tex"]
    assert (work / "thesis.tex").read_text() == "years of work"
    assert not reports.exists()  # refused before anything was written
