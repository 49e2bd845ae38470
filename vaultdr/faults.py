"""The fault catalogue: named, reversible faults, each journaled before it acts.

A fault is what a real outage does to the stack: a dead leader, a lost volume,
a revoked KMS grant, a corrupt backup. Faults act only through the
:class:`~vaultdr.envs.base.Environment` primitives, so kind and EKS implement
the same names.

Every injection first writes an entry to the rollback journal in the state
directory, with the undo steps it will need, and only then acts. So whatever
happens next (the drill fails, the process is killed, the machine reboots),
``vaultdr rollback`` reads the journal and undoes what is still in force.
Undo steps are idempotent; rolling back twice is harmless.

What is durable when: every change to the journal is appended, one JSON line per
changed entry, to ``rollback-journal.jsonl`` (flushed and fsynced), and then the
whole journal is rewritten as ``rollback-journal.json`` (``{"seq": N, "entries":
[...]}``, the format older vaultdr reads) through a temporary file that is
fsynced, renamed over the old one, and made durable by an fsync of the
directory. Only then does ``inject`` let the fault act; a fault that learns its
undo while acting (``corrupt-latest-snapshot``) journals that undo the same way
before the change that needs it (the corrupt upload), and fills in what it
learns (the new version id) afterwards.

What happens to a damaged journal: each file is read on its own. For each entry
the newest intact record wins (the ``.json`` counts as of its ``seq``; a line
of the ``.jsonl`` written after it wins over it), so the log covers a ``.json``
that does not parse, that lost an entry, or that a crash left one write behind.
Every unreadable part (the ``.json`` as a whole, one of its entries, one line of
the log) is a :class:`JournalProblem`: logged, listed by
:meth:`RollbackJournal.problems`, and SKIPPED; nothing in it is undone, and it
never keeps the intact entries from being undone. The next write keeps a copy of
each damaged file (``<name>.damaged-<time>``) and rewrites it whole.

Rollback order: each entry in force is undone on its own, access first:
``restore-kms`` (KMS access above all), then ``thaw-node``, then
``release-nodes``, then snapshot repairs (``delete-object-version``); within a
kind, newest first. An undo step that raises anything (a vaultdr error, an
OSError, a KeyError from a malformed step) is that entry's failure only: the
entry stays in force (``undo-failed``) and the rollback goes on. After trying
everything, :func:`rollback` raises :class:`FaultError` naming each failed entry,
each unreadable journal record and the journal's path.

Faults whose damage the stack repairs by itself (a killed process, a lost
volume) have no undo beyond releasing any node a crash left held: the point of
the drill is to see the stack heal, not to heal it for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from vaultdr.aws import Aws
from vaultdr.errors import EXIT_FAULT, ConfigError, StackStateError, VaultdrError

log = logging.getLogger("vaultdr.faults")

JOURNAL_FILE = "rollback-journal.json"
#: The append-only log beside it: one JSON line (``{"seq", "entry"}``) per change.
JOURNAL_LOG_FILE = "rollback-journal.jsonl"


class FaultTarget(Protocol):
    """The environment primitives the catalogue needs (see ``envs/base.py``)."""

    state_dir: Path

    def node_names(self) -> list[str]: ...

    def leader(self) -> str | None: ...

    def kill_node(self, node: str) -> None: ...

    def kill_nodes(self, names: list[str]) -> None: ...

    def delete_volume(self, node: str) -> None: ...

    def delete_all_volumes(self) -> None: ...

    def release_nodes(self, names: list[str]) -> None: ...

    def freeze_node(self, node: str) -> tuple[int, int]: ...

    def thaw_node(
        self, node: str, pid: int | None = None, start_time: int | None = None
    ) -> bool: ...

    def revoke_kms(self) -> None: ...

    def restore_kms(self) -> None: ...

    def aws(self, principal: str = "admin") -> Aws: ...

    def snapshot_location(self) -> tuple[str, str]: ...

    def cluster_id(self) -> str | None: ...


class FaultError(VaultdrError):
    """A fault could not be injected or rolled back.

    Raised by :func:`rollback`, ``results`` holds every :class:`RolledBack` of that
    run (the failed ones have an ``error``).
    """

    exit_code = EXIT_FAULT
    results: tuple[RolledBack, ...] = ()


@dataclass(frozen=True)
class FaultSpec:
    name: str
    params: tuple[str, ...]
    summary: str
    undo: str


CATALOGUE: dict[str, FaultSpec] = {
    spec.name: spec
    for spec in [
        FaultSpec("kill-leader", (), "SIGKILL the active node", "none: the node restarts"),
        FaultSpec("kill-node", ("NODE",), "SIGKILL one node", "none: the node restarts"),
        FaultSpec(
            "kill-quorum",
            (),
            "SIGKILL a majority at once (the leader first): no quorum until they restart",
            "none: the nodes restart",
        ),
        FaultSpec(
            "delete-volume",
            ("NODE",),
            "delete the node's data (PVC) and kill it; it comes back empty",
            "release the node if a crash left it held",
        ),
        FaultSpec(
            "delete-all-volumes",
            (),
            "total loss: delete every node's data; they all come back empty",
            "release the nodes if a crash left them held",
        ),
        FaultSpec("restart-all", (), "SIGKILL every node at once", "none: the nodes restart"),
        FaultSpec(
            "revoke-kms",
            (),
            "explicit deny of the seal's KMS access (transit: the seal token's policy)",
            "restore-kms",
        ),
        FaultSpec("restore-kms", (), "lift the KMS deny", "-"),
        FaultSpec(
            "freeze-node",
            ("NODE",),
            "SIGSTOP the node: it keeps its sockets and answers nothing (a partition)",
            "thaw-node",
        ),
        FaultSpec("thaw-node", ("NODE",), "SIGCONT a frozen node", "-"),
        FaultSpec(
            "corrupt-latest-snapshot",
            (),
            "overwrite the newest snapshot in S3 with a corrupt copy (same key and metadata)",
            "delete the corrupt object version: the good one is current again",
        ),
    ]
}


@dataclass
class JournalEntry:
    """One injected fault: what it did and how to undo it."""

    id: str
    fault: str
    args: list[str]
    started_at: str
    mono: float
    status: str  # acting | injected | done | undone | undo-failed
    undo: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    finished_at: str | None = None

    @property
    def in_force(self) -> bool:
        """True while something of this fault may still need undoing."""
        return self.status in ("acting", "injected", "undo-failed") and bool(self.undo)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JournalEntry:
        """The entry ``data`` describes; ValueError when it is not a well-formed entry.

        Fields this version does not know are ignored (a newer vaultdr may add some).
        """
        if not isinstance(data, dict):
            raise ValueError(f"an entry must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        missing = [
            n for n in ("id", "fault", "args", "started_at", "mono", "status") if n not in values
        ]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        for name in ("id", "fault", "started_at", "status"):
            if not isinstance(values[name], str) or not values[name]:
                raise ValueError(f"{name} must be a non-empty string")
        if values["status"] not in _STATUSES:
            raise ValueError(f"unknown status {values['status']!r}")
        args = values["args"]
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ValueError("args must be a list of strings")
        mono = values["mono"]
        if isinstance(mono, bool) or not isinstance(mono, int | float) or not math.isfinite(mono):
            raise ValueError("mono must be a number")
        undo = values.get("undo", [])
        if not isinstance(undo, list) or not all(
            isinstance(step, dict) and isinstance(step.get("kind"), str) for step in undo
        ):
            raise ValueError("undo must be a list of steps, each with a kind")
        if not isinstance(values.get("detail", {}), dict):
            raise ValueError("detail must be an object")
        if not isinstance(values.get("finished_at"), str | None):
            raise ValueError("finished_at must be a string or null")
        values["mono"] = float(mono)
        return cls(**values)


_STATUSES = frozenset({"acting", "injected", "done", "undone", "undo-failed"})


@dataclass(frozen=True)
class JournalProblem:
    """One unreadable part of the journal: skipped, never undone."""

    where: str  # "rollback-journal.json", "... entry 3", "rollback-journal.jsonl line 7"
    reason: str
    entry_id: str | None = None
    fault: str | None = None

    def __str__(self) -> str:
        what = f" ({self.fault} {self.entry_id})" if self.fault and self.entry_id else ""
        return f"{self.where}{what}: {self.reason}"


@dataclass
class _Loaded:
    """One read of the journal: the entries that could be read and what could not."""

    entries: list[JournalEntry] = field(default_factory=list)
    problems: list[JournalProblem] = field(default_factory=list)
    seq: int = 0
    main_damaged: bool = False
    log_damaged: bool = False
    log_exists: bool = False
    log_lines: int = 0


#: Compact the log (rewrite it as one line per entry) once it has this many lines.
_LOG_COMPACT_LINES = 2000


class RollbackJournal:
    """The journal in the state dir: every change is locked, logged and written durably.

    ``path`` is the journal (``rollback-journal.json``), ``log_path`` its append-only
    log (``rollback-journal.jsonl``); see the module docstring for how they are written
    and read. ``kept`` lists the copies of damaged files this object's writes kept.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / JOURNAL_FILE
        self.log_path = Path(state_dir) / JOURNAL_LOG_FILE
        self.kept: list[Path] = []

    # -- reading --------------------------------------------------------------------------

    def exists(self) -> bool:
        """True when anything was ever journaled here."""
        return self.path.exists() or self.log_path.exists()

    def entries(self) -> list[JournalEntry]:
        """Every entry that can be read, oldest first (unreadable ones are skipped)."""
        return self._read().entries

    def in_force(self) -> list[JournalEntry]:
        return [e for e in self._read().entries if e.in_force]

    def problems(self) -> list[JournalProblem]:
        """What of the journal cannot be read (until the next write repairs the files)."""
        return self._read().problems

    def _read(self) -> _Loaded:
        """A consistent read: under a shared lock when the state dir allows one."""
        if not self.exists():  # no lock file is made where nothing was journaled
            return _Loaded()
        try:
            lock = open(self._lock_path, "a")  # noqa: SIM115 - closed below
        except OSError:
            return self._load()
        with lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                return self._load()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def _lock_path(self) -> Path:
        return self.path.with_suffix(".lock")

    def _load(self) -> _Loaded:
        loaded = _Loaded()
        # id -> (seq the record is as of, position, entry); the highest seq wins.
        records: dict[str, tuple[float, int, JournalEntry]] = {}
        bad_main: list[int] = []  # indexes into loaded.problems of unreadable .json entries
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            main_seq = self._load_main(raw, loaded, records, bad_main)
            if main_seq is not None and not math.isinf(main_seq):
                loaded.seq = int(main_seq)
        try:
            log_raw = self.log_path.read_bytes()
        except FileNotFoundError:
            log_raw = None
        if log_raw is not None:
            loaded.log_exists = True
            self._load_log(log_raw, loaded, records)
        for index in bad_main:
            problem = loaded.problems[index]
            if problem.entry_id in records:
                loaded.problems[index] = JournalProblem(
                    problem.where,
                    f"{problem.reason}; its last intact record in {self.log_path.name} is used",
                    problem.entry_id,
                    problem.fault,
                )
        loaded.entries = [entry for _, _, entry in sorted(records.values(), key=lambda r: r[1])]
        return loaded

    def _load_main(
        self,
        raw: bytes,
        loaded: _Loaded,
        records: dict[str, tuple[float, int, JournalEntry]],
        bad_main: list[int],
    ) -> float | None:
        """Read the ``.json`` into ``records``; its seq (inf when it has none), or None."""
        name = self.path.name
        try:
            data = json.loads(raw.decode("utf-8"))
            items = data["entries"]
            if not isinstance(items, list):
                raise TypeError("entries is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            loaded.main_damaged = True
            loaded.problems.append(
                JournalProblem(name, f"unreadable as a whole ({_short(exc)}); read from the log")
            )
            return None
        seq = data.get("seq")
        main_seq: float = (
            float(seq) if isinstance(seq, int) and not isinstance(seq, bool) else math.inf
        )
        for index, item in enumerate(items):
            try:
                entry = JournalEntry.from_dict(item)
            except (ValueError, TypeError) as exc:
                loaded.main_damaged = True
                bad_main.append(len(loaded.problems))
                loaded.problems.append(
                    JournalProblem(
                        f"{name} entry {index + 1}",
                        f"not a journal entry ({_short(exc)}); skipped",
                        *_id_and_fault(item),
                    )
                )
                continue
            records[entry.id] = (main_seq, len(records), entry)
        return main_seq

    def _load_log(
        self, raw: bytes, loaded: _Loaded, records: dict[str, tuple[float, int, JournalEntry]]
    ) -> None:
        name = self.log_path.name
        position = len(records)
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            loaded.log_lines += 1
            record: Any = None
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise TypeError("a line must be a JSON object")
                seq = record["seq"]
                if not isinstance(seq, int) or isinstance(seq, bool):
                    raise TypeError("seq is not an integer")
                entry = JournalEntry.from_dict(record["entry"])
            except (ValueError, KeyError, TypeError) as exc:
                loaded.log_damaged = True
                item = record.get("entry") if isinstance(record, dict) else None
                loaded.problems.append(
                    JournalProblem(
                        f"{name} line {number}",
                        f"unreadable ({_short(exc)}); skipped",
                        *_id_and_fault(item),
                    )
                )
                continue
            loaded.seq = max(loaded.seq, seq)
            found = records.get(entry.id)
            if found is None:
                records[entry.id] = (float(seq), position, entry)
                position += 1
            elif seq > found[0]:
                records[entry.id] = (float(seq), found[1], entry)

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[JournalEntry]]:
        """The entries, to change in place; written back (durably) when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                loaded = self._load()
                before = {e.id: e.to_dict() for e in loaded.entries}
                yield loaded.entries
                self._write(loaded, before)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, loaded: _Loaded, before: dict[str, dict[str, Any]]) -> None:
        entries = loaded.entries
        changed = [e for e in entries if before.get(e.id) != e.to_dict()]
        if not changed and not loaded.problems and len(before) == len(entries):
            return
        seq = loaded.seq + 1
        rewrite_log = (
            loaded.log_damaged or not loaded.log_exists or loaded.log_lines >= _LOG_COMPACT_LINES
        )
        if loaded.log_damaged:
            self._keep_copy(self.log_path)
        if rewrite_log:
            _write_durably(self.log_path, _log_lines(entries, seq))
        else:
            _append_durably(self.log_path, _log_lines(changed, seq))
        if loaded.main_damaged:
            self._keep_copy(self.path)
        document = {"seq": seq, "entries": [e.to_dict() for e in entries]}
        _write_durably(self.path, (json.dumps(document, indent=2) + "\n").encode())

    def _keep_copy(self, path: Path) -> None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        copy = path.with_name(f"{path.name}.damaged-{stamp}")
        try:
            _write_durably(copy, path.read_bytes())
        except FileNotFoundError:
            return
        self.kept.append(copy)
        log.warning("the rollback journal file %s was damaged: a copy is kept at %s", path, copy)

    def repair(self) -> list[Path]:
        """Rewrite damaged journal files whole (keeping copies); the copies kept."""
        with self._locked():
            pass
        return list(self.kept)

    def add(self, entry: JournalEntry) -> None:
        with self._locked() as entries:
            entries.append(entry)

    def update(self, entry_id: str, **changes: Any) -> None:
        with self._locked() as entries:
            for entry in entries:
                if entry.id == entry_id:
                    for name, value in changes.items():
                        setattr(entry, name, value)

    def settle(self, fault: str, *, node: str | None = None) -> list[str]:
        """Mark entries of ``fault`` (for ``node``) undone: their undo was done by hand."""
        settled: list[str] = []
        with self._locked() as entries:
            for entry in entries:
                if entry.fault != fault or not entry.in_force:
                    continue
                if node is not None and entry.args[:1] != [node]:
                    continue
                entry.status = "undone"
                entry.finished_at = _now()
                settled.append(entry.id)
        return settled


def _id_and_fault(item: Any) -> tuple[str | None, str | None]:
    """The id and fault name of an unreadable entry, where they can still be read."""
    if not isinstance(item, dict):
        return None, None
    entry_id, fault = item.get("id"), item.get("fault")
    return (
        entry_id if isinstance(entry_id, str) and entry_id else None,
        fault if isinstance(fault, str) and fault else None,
    )


def _short(exc: BaseException) -> str:
    """An exception as ``Type: message``, on one line and bounded (no secrets: see _undo_entry)."""
    text = exc.message if isinstance(exc, VaultdrError) else str(exc)
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _log_lines(entries: Sequence[JournalEntry], seq: int) -> bytes:
    return b"".join(
        json.dumps({"seq": seq, "entry": e.to_dict()}, separators=(",", ":")).encode() + b"\n"
        for e in entries
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file, flush, fsync, rename, fsync the directory."""
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _append_durably(path: Path, data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path`` and fsync it; a line a crash left torn
    is ended first, so it stays one unreadable line instead of spoiling this one."""
    if not data:
        return
    created = not path.exists()
    with open(path, "a+b") as out:
        out.seek(0, os.SEEK_END)
        if out.tell() > 0:
            out.seek(-1, os.SEEK_END)
            if out.read(1) != b"\n":
                data = b"\n" + data
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    if created:
        _fsync_dir(path.parent)


Mark = Callable[[str, dict[str, Any]], None]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def resolve_node(env: FaultTarget, value: str) -> str:
    """A node by name, by index (``0``, ``1``, ...), or ``leader`` / ``follower`` (now)."""
    names = env.node_names()
    if value in names:
        return value
    if value == "leader":
        return _leader(env)
    if value == "follower":
        leader = _leader(env)
        return next(n for n in names if n != leader)
    if value.isdigit() and int(value) < len(names):
        return names[int(value)]
    raise ConfigError(
        f"no node '{value}' in this stack",
        hint=f"use one of: {', '.join(names)}, an index 0-{len(names) - 1}, leader or follower",
    )


def _leader(env: FaultTarget) -> str:
    leader = env.leader()
    if leader is None:
        raise StackStateError(
            "no node is active: there is no leader to kill",
            hint="wait until the cluster is healthy (`vaultdr status`)",
        )
    return leader


def plan(env: FaultTarget, name: str, args: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """Validate ``name`` and ``args``; the resolved args and the fault's targets."""
    spec = CATALOGUE.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown fault '{name}'",
            hint=f"known faults: {', '.join(CATALOGUE)} (see `vaultdr fault list`)",
        )
    if len(args) != len(spec.params):
        usage = " ".join([name, *spec.params])
        raise ConfigError(f"fault {name} takes {len(spec.params)} argument(s): {usage}")
    resolved = [resolve_node(env, a) for a in args]
    targets: dict[str, Any] = {}
    if name == "kill-leader":
        targets["nodes"] = [_leader(env)]
    elif name == "kill-quorum":
        leader = _leader(env)
        names = env.node_names()
        majority = len(names) // 2 + 1
        targets["nodes"] = [leader, *[n for n in names if n != leader]][:majority]
    elif name in ("kill-node", "delete-volume", "freeze-node", "thaw-node"):
        targets["nodes"] = resolved
    elif name in ("restart-all", "delete-all-volumes"):
        targets["nodes"] = env.node_names()
    return resolved, targets


def inject(
    env: FaultTarget,
    name: str,
    args: Sequence[str] = (),
    *,
    mark: Mark | None = None,
) -> JournalEntry:
    """Journal the fault with its undo steps, then inject it. Returns the journal entry.

    The entry, with every undo step known before acting, is on disk (fsynced) before
    the fault's first action; see the module docstring.
    """
    resolved, targets = plan(env, name, args)
    check = getattr(env, "check_destructive", None)
    if check is not None:  # real clusters: refused before anything is journaled or changed
        check(name)
    journal = RollbackJournal(env.state_dir)
    nodes: list[str] = targets.get("nodes", [])
    entry = JournalEntry(
        id=uuid.uuid4().hex[:12],
        fault=name,
        args=resolved,
        started_at=_now(),
        mono=time.monotonic(),
        status="acting",
        detail=dict(targets),
    )
    entry.undo = _undo_steps(env, name, nodes, entry)
    journal.add(entry)
    if mark:
        mark(f"fault:{name}", {"nodes": nodes, "fault_id": entry.id})
    try:
        detail = _act(env, name, nodes, entry, journal)
    except BaseException as exc:
        log.error("fault %s failed while acting (%s); undoing it", name, _short(exc))
        undone = _undo_entry(env, journal, entry)
        if undone.error:
            log.error("undoing fault %s (id %s) failed: %s", name, entry.id, undone.error)
        raise
    persistent = name in ("revoke-kms", "freeze-node", "corrupt-latest-snapshot")
    status = "injected" if persistent else "done"
    journal.update(entry.id, status=status, detail={**entry.detail, **detail}, finished_at=_now())
    entry.status = status
    entry.detail.update(detail)
    return entry


def preview(env: FaultTarget, name: str, args: Sequence[str] = ()) -> list[str]:
    """Every change ``name`` would make now, without making it (``fault inject --dry-run``).

    An environment that can record its own requests (``describe_fault``) lists them
    exactly; otherwise the catalogue's summary is given for the resolved targets.
    """
    _, targets = plan(env, name, args)
    nodes: list[str] = targets.get("nodes", [])
    describe = getattr(env, "describe_fault", None)
    if describe is not None:
        return list(describe(name, nodes))
    spec = CATALOGUE[name]
    where = f" on {', '.join(nodes)}" if nodes else ""
    return [f"{spec.summary}{where}"]


def primitive(env: FaultTarget, name: str, nodes: list[str]) -> Any:
    """The environment call a fault makes, alone: no journal, no settling.

    ``_act`` runs it inside ``inject``; an environment that runs it as a dry run
    records the requests it would send (``fault inject --dry-run``). thaw-node and
    the snapshot faults are not environment calls and are handled by ``_act``.
    """
    if name in ("kill-leader", "kill-node"):
        return env.kill_node(nodes[0])
    if name in ("kill-quorum", "restart-all"):
        return env.kill_nodes(nodes)
    if name == "delete-volume":
        return env.delete_volume(nodes[0])
    if name == "delete-all-volumes":
        return env.delete_all_volumes()
    if name == "revoke-kms":
        return env.revoke_kms()
    if name == "restore-kms":
        return env.restore_kms()
    if name == "freeze-node":
        return env.freeze_node(nodes[0])
    return None


def _undo_steps(
    env: FaultTarget, name: str, nodes: list[str], entry: JournalEntry
) -> list[dict[str, Any]]:
    if name in ("delete-volume", "delete-all-volumes"):
        return [{"kind": "release-nodes", "nodes": nodes}]
    if name == "revoke-kms":
        return [{"kind": "restore-kms"}]
    if name == "freeze-node":
        # The pid is filled in before SIGSTOP; see _act.
        return [{"kind": "thaw-node", "node": nodes[0]}]
    return []


def _act(
    env: FaultTarget, name: str, nodes: list[str], entry: JournalEntry, journal: RollbackJournal
) -> dict[str, Any]:
    if name == "corrupt-latest-snapshot":
        return _corrupt_latest_snapshot(env, entry, journal)
    if name == "thaw-node":
        thawed = env.thaw_node(nodes[0])
        return {"thawed": thawed, "settled": journal.settle("freeze-node", node=nodes[0])}
    found = primitive(env, name, nodes)
    if name == "restore-kms":
        return {"settled": journal.settle("revoke-kms")}
    if name == "freeze-node":
        # The thaw step (by node) was journaled before SIGSTOP; the pid makes it exact.
        pid, start_time = found
        undo = [{"kind": "thaw-node", "node": nodes[0], "pid": pid, "start_time": start_time}]
        journal.update(entry.id, undo=undo)
        entry.undo = undo
        return {"pid": pid}
    return {}


def _corrupted(body: bytes) -> bytes:
    """Same length, different bytes: only the checksum can tell."""
    corrupt = bytearray(body)
    middle = len(corrupt) // 2
    for i in range(middle, min(middle + 64, len(corrupt))):
        corrupt[i] ^= 0xFF
    return bytes(corrupt)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _corrupt_latest_snapshot(
    env: FaultTarget, entry: JournalEntry, journal: RollbackJournal
) -> dict[str, Any]:
    """Upload a corrupt copy of the newest snapshot over it, its undo journaled first.

    The undo step names the corrupt body's md5 and the good version before the upload,
    so a process killed between the upload and the journal update that names the new
    version still leaves an undo that finds exactly that copy.
    """
    from vaultdr.agents.snapshot import list_snapshots

    aws = env.aws("admin")
    bucket, prefix = env.snapshot_location()
    snapshots = list_snapshots(aws, bucket, prefix, env.cluster_id())
    if not snapshots:
        raise FaultError(
            f"there is no snapshot in s3://{bucket}/{prefix} to corrupt",
            hint="take one first: `vaultdr snapshot now`",
        )
    newest = snapshots[0]
    stat = aws.stat_object(bucket, newest.key)
    good_version = stat.get("version_id")
    if not good_version or good_version == "null":
        raise FaultError(
            f"s3://{bucket}/{newest.key} has no version id (the bucket is not versioned, or "
            "the object predates versioning): a corrupted snapshot could not be undone",
            hint="enable versioning on the snapshot bucket and take a new snapshot; "
            "nothing was changed",
        )
    good = aws.get_object(bucket, newest.key)
    body = _corrupted(good)
    if body == good:
        raise FaultError(
            f"s3://{bucket}/{newest.key} is empty: there is nothing to corrupt",
            hint="take a new snapshot: `vaultdr snapshot now`; nothing was changed",
        )
    step: dict[str, Any] = {
        "kind": "delete-object-version",
        "bucket": bucket,
        "key": newest.key,
        "version": None,
        "corrupt_md5": _md5(body),
        "size": len(body),
        "good_version": str(good_version),
    }
    journal.update(entry.id, undo=[step])
    entry.undo = [step]
    version = aws.put_object(
        bucket,
        newest.key,
        body,
        metadata=stat["metadata"],
        sse_kms_key_id=stat.get("sse_kms_key_id"),
    )
    if not version:
        raise FaultError(
            f"s3://{bucket} answered the corrupt upload without a version id: "
            "versioning was turned off while the fault ran",
            hint="enable versioning on the snapshot bucket; `vaultdr rollback` removes "
            "the corrupt copy by its checksum",
        )
    filled = {**step, "version": version}
    journal.update(entry.id, undo=[filled])
    entry.undo = [filled]
    return {"key": newest.key, "version": version}


@dataclass
class RolledBack:
    fault: str
    entry_id: str
    steps: list[str]
    error: str | None = None


#: Undo order: access grants first, then frozen processes, held nodes, snapshot repairs.
_UNDO_RANK = {"restore-kms": 0, "thaw-node": 1, "release-nodes": 2, "delete-object-version": 3}


def _undo_rank(entry: JournalEntry) -> int:
    return min((_UNDO_RANK.get(str(step.get("kind")), 4) for step in entry.undo), default=4)


def undo_order(entries: Sequence[JournalEntry]) -> list[JournalEntry]:
    """``entries`` (oldest first, as journaled) in the order rollback undoes them:
    restore-kms, thaw-node, release-nodes, delete-object-version, anything else; within
    a kind newest first."""
    ranked = sorted(enumerate(entries), key=lambda item: (_undo_rank(item[1]), -item[0]))
    return [entry for _, entry in ranked]


def rollback(env: FaultTarget) -> list[RolledBack]:
    """Undo every fault still in force (see the module docstring for the order).

    Each entry is undone on its own; an unreadable journal record is skipped. After
    trying everything, raises FaultError naming each failure and the journal's path.
    """
    journal = RollbackJournal(env.state_dir)
    loaded = journal._read()
    for problem in loaded.problems:
        log.warning("rollback journal %s: %s", journal.path.parent, problem)
    pending = undo_order([e for e in loaded.entries if e.in_force])
    results = [_undo_entry(env, journal, entry) for entry in pending]
    if loaded.problems:
        try:
            journal.repair()
        except Exception as exc:  # noqa: BLE001 - the undo above is what matters; say so
            log.error("could not repair the rollback journal %s: %s", journal.path, _short(exc))
        results += [
            RolledBack(
                p.fault or "journal",
                p.entry_id or p.where,
                [],
                error=f"unreadable journal record, skipped: {p}",
            )
            for p in loaded.problems
        ]
    failed = [r for r in results if r.error]
    if failed:
        hint = f"run `vaultdr rollback` again; the undo steps are in {journal.path}"
        if journal.kept:
            copies = ", ".join(str(c) for c in journal.kept)
            hint += (
                f"; the damaged journal is kept at {copies}: check by hand that nothing "
                "it held is still in force"
            )
        error = FaultError(
            "rollback failed for: "
            + "; ".join(f"{r.fault} (id {r.entry_id}): {r.error}" for r in failed)
            + f" [journal {journal.path}]",
            hint=hint,
        )
        error.results = tuple(results)
        raise error
    return results


def _undo_entry(env: FaultTarget, journal: RollbackJournal, entry: JournalEntry) -> RolledBack:
    """Undo one entry; never raises an Exception (its failure is the result's error).

    An error's text is its type and message: vaultdr's errors never carry a secret, and
    the primitives' own (OSError, KeyError on a malformed step) name paths and fields.
    """
    done: list[str] = []
    for step in entry.undo:
        try:
            done.append(_undo_step(env, step))
        except Exception as exc:  # noqa: BLE001 - this entry's failure; the others go on
            error = f"{step.get('kind', '?')} failed: {_short(exc)}"
            log.error("undo of %s (id %s) failed: %s", entry.fault, entry.id, error)
            entry.status = "undo-failed"
            entry.detail = {**entry.detail, "undo_error": error}
            try:
                journal.update(entry.id, status=entry.status, detail=entry.detail)
            except Exception as journal_exc:  # noqa: BLE001 - the undo's failure is the news
                error += f"; the journal could not record it ({_short(journal_exc)})"
            return RolledBack(entry.fault, entry.id, done, error=error)
    entry.status = "undone"
    entry.finished_at = _now()
    changes: dict[str, Any] = {"status": entry.status, "finished_at": entry.finished_at}
    if "undo_error" in entry.detail:  # an earlier rollback's failure, now mended
        entry.detail = {k: v for k, v in entry.detail.items() if k != "undo_error"}
        changes["detail"] = entry.detail
    try:
        journal.update(entry.id, **changes)
    except Exception as exc:  # noqa: BLE001 - undone all the same; the next rollback redoes it
        error = (
            f"undone, but the journal could not record it ({_short(exc)}); "
            "rolling back again is harmless"
        )
        return RolledBack(entry.fault, entry.id, done, error=error)
    return RolledBack(entry.fault, entry.id, done)


def _undo_step(env: FaultTarget, step: dict[str, Any]) -> str:
    kind = step["kind"]
    if kind == "restore-kms":
        env.restore_kms()
        return "KMS access restored"
    if kind == "release-nodes":
        env.release_nodes(list(step["nodes"]))
        return f"released {', '.join(step['nodes'])}"
    if kind == "thaw-node":
        thawed = env.thaw_node(step["node"], step.get("pid"), step.get("start_time"))
        return f"thawed {step['node']}" if thawed else f"{step['node']} was no longer frozen"
    if kind == "delete-object-version":
        return _remove_corrupt_version(env.aws("admin"), step)
    raise FaultError(f"unknown undo step {kind!r} in the rollback journal")


_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


def _remove_corrupt_version(aws: Aws, step: dict[str, Any]) -> str:
    """Delete the corrupt copy: the recorded version, or, when the process was killed
    before it could record one, every version of the key whose content is the corrupt
    body (ETag, or the body's own md5 where SSE-KMS makes the ETag no md5). Never the
    good version, never any other content."""
    bucket, key = str(step["bucket"]), str(step["key"])
    version = step.get("version")
    if version:
        aws.delete_object_version(bucket, key, str(version))
        return f"removed the corrupt version of {key}"
    digest = step.get("corrupt_md5")
    if not isinstance(digest, str) or not _MD5_RE.match(digest):
        raise FaultError(
            f"the undo step for s3://{bucket}/{key} names neither the corrupt version nor its md5",
            hint=f"find the corrupt version by hand (aws s3api list-object-versions "
            f"--bucket {bucket} --prefix {key})",
        )
    good = step.get("good_version")
    size = step.get("size")
    versions = [v for v in aws.list_object_versions(bucket, key) if not v["delete_marker"]]
    ids = [v["version_id"] for v in versions]
    # Newest first: the corrupt copy can only be newer than the good version.
    candidates = versions[: ids.index(good)] if good in ids else versions
    removed = 0
    for found in candidates:
        if found["version_id"] in (good, None):
            continue
        same = found["etag"] == digest
        if not same and (size is None or found["size"] == size):
            same = _md5(aws.get_object_version(bucket, key, found["version_id"])) == digest
        if same:
            aws.delete_object_version(bucket, key, found["version_id"])
            removed += 1
    if not removed:
        return f"no corrupt version of {key} was found (it was never uploaded)"
    return f"removed the corrupt version of {key} (found by its checksum)"
