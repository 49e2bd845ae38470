"""Starting, finding and stopping the local environment's processes.

Every process the local environment starts is detached into its own session (so
a Ctrl-C in the shell that ran ``vaultdr up`` does not take the stack down),
logs to a file in the state directory, and is recorded by pid *and* start time,
so a recycled pid is never mistaken for ours. Stopping is bounded: SIGTERM, a
grace period, then SIGKILL.

Hazard: everything here listens on 127.0.0.1 only; ports are picked free at run
time, and a port taken between picking and binding is reported as such.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vaultdr.polling import wait_for

__all__ = [
    "LOOPBACK",
    "ProcessRecord",
    "free_port",
    "pid_alive",
    "port_in_use",
    "spawn",
    "stop_pid",
    "tail",
    "wait_for",
]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True when ``pid`` runs (and, if given, was started at ``start_time``); zombies count as dead."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state in ("Z", "X"):
        return False
    return start_time is None or process_start_time(pid) == start_time


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started: enough to find it again from another shell."""

    name: str
    pid: int
    start_time: int
    log: str

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_time)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time, "log": self.log}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(str(data["pid"])),
            start_time=int(str(data["start_time"])),
            log=str(data["log"]),
        )


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detach: bool = True,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start ``argv`` with stdout and stderr appended to ``log``.

    With ``detach`` the child gets its own session, so signals sent to the
    caller's terminal do not reach it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=detach,
        )
    start = process_start_time(proc.pid)
    return proc, ProcessRecord(name=name, pid=proc.pid, start_time=start or 0, log=str(log))


def stop_pid(pid: int, start_time: int | None = None, *, grace: float = 5.0) -> bool:
    """SIGTERM ``pid``, wait up to ``grace`` seconds, then SIGKILL. True if it was running."""
    if not pid_alive(pid, start_time):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not pid_alive(pid, start_time), timeout=grace, interval=0.05):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid, start_time), timeout=5.0, interval=0.05)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path | str, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, for error messages ('' if unreadable)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
