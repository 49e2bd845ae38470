"""Directories vaultdr owns: a marker that proves it made them, and a lock per directory.

vaultdr wipes and re-creates its state directory on ``up``, removes it on
``down`` and does the same with upgrade-check's work directory. A path typed
by a person (``--state-dir .``, ``--work-dir $HOME``) must never be wiped, so
every such directory gets a marker file when vaultdr creates it, and nothing
is ever removed from a directory without one. Two commands on one directory
at once (two ``up``s a second apart, a ``rollback`` during a ``drill``) would
wipe or undo each other's work, so every command that changes a directory
first takes its lock; a second one is refused with who holds it.

Hazards:

* The lock is an ``flock`` on ``<dir>/.vaultdr.lock``, released by the kernel
  when the holder dies, so a crashed command never leaves the directory locked.
  The lock file carries the holder's command, pid and start time for the
  refusal message only; a stale one is never trusted.
* A directory removed while locked (``down``) loses its lock file with it; a
  waiter that opened the old file would hold a lock on nothing, so after
  locking the inode is compared with the path's and the lock is retried.
* Within one process the lock is re-entrant (a drill's own rollback runs in the
  process that holds it); other processes are refused, never queued.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from vaultdr import __version__
from vaultdr.errors import ConfigError, StackStateError

#: The state directory when neither ``--state-dir`` nor ``$VAULTDR_STATE_DIR`` names one.
DEFAULT_STATE_DIR = Path(".vaultdr")
STATE_ENV_VAR = "VAULTDR_STATE_DIR"
MARKER_FILE = ".vaultdr-owned"
LOCK_FILE = ".vaultdr.lock"
#: Files that alone do not make a directory someone else's (left by the lock, editors, macOS).
_HARMLESS = frozenset({LOCK_FILE, ".DS_Store"})

_held: dict[str, int] = {}
_held_guard = threading.Lock()


class DirectoryBusy(StackStateError):
    """Another vaultdr command holds the directory's lock."""


class NotOurDirectory(StackStateError):
    """The directory exists, holds something, and vaultdr did not create it."""


def resolve_state_dir(explicit: Path | str | None = None) -> Path:
    """``--state-dir``, else ``$VAULTDR_STATE_DIR``, else ``./.vaultdr`` (absolute)."""
    chosen = explicit or os.environ.get(STATE_ENV_VAR) or DEFAULT_STATE_DIR
    return Path(chosen).resolve()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def is_owned(directory: Path, *, legacy_file: str | None = None) -> bool:
    """True when vaultdr created ``directory`` (its marker is there).

    ``legacy_file`` names a file that marked vaultdr's directories before the
    marker existed (a state.json whose ``directory`` is this very path); such a
    directory counts as ours and gets its marker now.
    """
    if (directory / MARKER_FILE).is_file():
        return True
    if legacy_file is None:
        return False
    try:
        data = json.loads((directory / legacy_file).read_text())
    except (OSError, ValueError):
        return False
    if isinstance(data, dict) and data.get("directory") == str(directory):
        write_marker(directory, purpose="state (adopted)")
        return True
    return False


def write_marker(directory: Path, *, purpose: str) -> None:
    """Mark ``directory`` as created by vaultdr (for ``purpose``)."""
    record = {"created_by": "vaultdr", "version": __version__, "purpose": purpose, "at": _now()}
    (directory / MARKER_FILE).write_text(json.dumps(record) + "\n")


def _check_usable(directory: Path, what: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(
            f"{what} {directory} is a file, not a directory",
            hint="pass a directory path that does not exist yet (vaultdr creates it)",
        )


def _foreign_entries(directory: Path) -> list[str]:
    try:
        return sorted(p.name for p in directory.iterdir() if p.name not in _HARMLESS)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"{directory} cannot be read ({exc.strerror})") from None


def claim(directory: Path, *, what: str, purpose: str, legacy_file: str | None = None) -> None:
    """Make ``directory`` vaultdr's: create and mark it, or check it is ours already.

    An existing directory is accepted when it carries the marker or is empty;
    anything else is refused with the path, so nothing of the user's is ever
    wiped.
    """
    _check_usable(directory, what)
    if directory.is_dir() and not is_owned(directory, legacy_file=legacy_file):
        found = _foreign_entries(directory)
        if found:
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            raise NotOurDirectory(
                f"{what} {directory} already holds files vaultdr did not create ({shown})",
                hint="pass a path that does not exist yet (vaultdr creates it and marks it as "
                "its own); nothing in this one was touched",
            )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(
            f"{what} {directory} cannot be created ({exc.strerror})",
            hint="pass a path in a directory you can write to",
        ) from None
    if not (directory / MARKER_FILE).is_file():
        write_marker(directory, purpose=purpose)


def empty_owned(directory: Path, *, what: str, keep: tuple[str, ...] = ()) -> None:
    """Remove everything in ``directory`` (which must carry the marker) but the marker,
    the lock and ``keep``."""
    if not (directory / MARKER_FILE).is_file():
        raise NotOurDirectory(
            f"refusing to empty {what} {directory}: vaultdr did not create it",
            hint="remove it yourself if it is yours to remove",
        )
    spared = {MARKER_FILE, LOCK_FILE, *keep}
    for entry in directory.iterdir():
        if entry.name in spared:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            raise StackStateError(
                f"cannot empty {what} {directory}: {entry} cannot be removed ({exc.strerror})",
                hint="fix its permissions, or pass another directory",
            ) from None


def remove_owned(directory: Path, *, what: str) -> None:
    """Remove ``directory`` entirely, only when vaultdr created it."""
    if not directory.exists():
        return
    if not (directory / MARKER_FILE).is_file():
        raise NotOurDirectory(
            f"refusing to remove {what} {directory}: vaultdr did not create it",
            hint="remove it yourself if it is yours to remove",
        )
    try:
        shutil.rmtree(directory)
    except OSError as exc:
        raise StackStateError(
            f"{what} {directory} could not be removed completely: "
            f"{exc.filename or directory}: {exc.strerror or exc}",
            hint="fix the permissions and remove it by hand",
        ) from None


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
        return f"`vaultdr {info['command']}` (pid {info['pid']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another vaultdr command"


@contextlib.contextmanager
def locked(directory: Path, *, command: str, what: str = "state directory") -> Iterator[None]:
    """Hold ``directory``'s lock for the block; refuse at once if another process has it.

    The directory must exist (``claim`` it first when it may not).
    """
    key = str(directory.resolve())
    with _held_guard:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key] -= 1
        return
    fd = _acquire(directory, command=command, what=what)
    with _held_guard:
        _held[key] = 1
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _acquire(directory: Path, *, command: str, what: str) -> int:
    lock_path = directory / LOCK_FILE
    for _ in range(5):
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:
            raise StackStateError(
                f"{what} {directory} does not exist",
                hint="pass --state-dir where the stack runs",
            ) from None
        except OSError as exc:
            raise ConfigError(f"{what} {directory} cannot be locked ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DirectoryBusy(
                f"{what} {directory} is in use by {_holder(lock_path)}",
                hint="wait for it to finish, or use another --state-dir",
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            record = {"command": command, "pid": os.getpid(), "since": _now()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
            return fd
        os.close(fd)  # the directory was removed and made anew meanwhile: lock the new one
    raise DirectoryBusy(f"{what} {directory} kept changing while vaultdr tried to lock it")
