"""The rollback journal: what every injected fault did and how to undo it, durably.

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

Hazard: the journal holds names, pids, bucket keys and version ids, never a
secret; keep it that way (it is read by people after a crash).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vaultdr.errors import VaultdrError

log = logging.getLogger("vaultdr.faults")

JOURNAL_FILE = "rollback-journal.json"
#: The append-only log beside it: one JSON line (``{"seq", "entry"}``) per change.
JOURNAL_LOG_FILE = "rollback-journal.jsonl"


def now() -> str:
    """The wall-clock time as journal entries record it (UTC, milliseconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


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
class JournalContents:
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
        return self.read().entries

    def in_force(self) -> list[JournalEntry]:
        return [e for e in self.read().entries if e.in_force]

    def problems(self) -> list[JournalProblem]:
        """What of the journal cannot be read (until the next write repairs the files)."""
        return self.read().problems

    def read(self) -> JournalContents:
        """A consistent read: under a shared lock when the state dir allows one."""
        if not self.exists():  # no lock file is made where nothing was journaled
            return JournalContents()
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

    def _load(self) -> JournalContents:
        loaded = JournalContents()
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
        loaded: JournalContents,
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
                JournalProblem(
                    name, f"unreadable as a whole ({describe_error(exc)}); read from the log"
                )
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
                        f"not a journal entry ({describe_error(exc)}); skipped",
                        *_id_and_fault(item),
                    )
                )
                continue
            records[entry.id] = (main_seq, len(records), entry)
        return main_seq

    def _load_log(
        self,
        raw: bytes,
        loaded: JournalContents,
        records: dict[str, tuple[float, int, JournalEntry]],
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
                        f"unreadable ({describe_error(exc)}); skipped",
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

    def _write(self, loaded: JournalContents, before: dict[str, dict[str, Any]]) -> None:
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
                entry.finished_at = now()
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


def describe_error(exc: BaseException) -> str:
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
