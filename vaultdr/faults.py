"""The fault catalogue: named, reversible faults, each journaled before it acts.

A fault is what a real outage does to the stack: a dead leader, a lost volume,
a revoked KMS grant, a corrupt backup. Faults act only through the
:class:`~vaultdr.envs.base.Environment` primitives, so kind and EKS implement
the same names.

Every injection first writes an entry to the rollback journal in the state
directory, with the undo steps it will need, and only then acts. So whatever
happens next (the drill fails, the process is killed, the machine reboots),
``vaultdr rollback`` reads the journal and undoes what is still in force: KMS
access above all, then frozen processes, held nodes and corrupted snapshots.
Undo steps are idempotent; rolling back twice is harmless.

Faults whose damage the stack repairs by itself (a killed process, a lost
volume) have no undo beyond releasing any node a crash left held: the point of
the drill is to see the stack heal, not to heal it for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vaultdr.aws import Aws
from vaultdr.errors import ConfigError, StackStateError, VaultdrError

log = logging.getLogger("vaultdr.faults")

JOURNAL_FILE = "rollback-journal.json"


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
    """A fault could not be injected or rolled back."""

    exit_code = 6


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
        return cls(**data)


class RollbackJournal:
    """The journal file in the state dir; every change is locked and written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / JOURNAL_FILE

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[JournalEntry]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = self._read()
                yield entries
                self._write(entries)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> list[JournalEntry]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
            return [JournalEntry.from_dict(item) for item in data["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise FaultError(
                f"the rollback journal {self.path} is unreadable ({exc})",
                hint="inspect it by hand; it lists the undo steps of every injected fault",
            ) from None

    def _write(self, entries: list[JournalEntry]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"entries": [e.to_dict() for e in entries]}, indent=2) + "\n")
        os.replace(tmp, self.path)

    def entries(self) -> list[JournalEntry]:
        return self._read()

    def in_force(self) -> list[JournalEntry]:
        return [e for e in self._read() if e.in_force]

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
    """Journal the fault with its undo steps, then inject it. Returns the journal entry."""
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
        log.error("fault %s failed while acting: %s; undoing it", name, exc)
        _undo_entry(env, journal, entry)
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
    found = primitive(env, name, nodes)
    if name == "restore-kms":
        return {"settled": journal.settle("revoke-kms")}
    if name == "freeze-node":
        pid, start_time = found
        undo = [{"kind": "thaw-node", "node": nodes[0], "pid": pid, "start_time": start_time}]
        journal.update(entry.id, undo=undo)
        entry.undo = undo
        return {"pid": pid}
    if name == "thaw-node":
        thawed = env.thaw_node(nodes[0])
        return {"thawed": thawed, "settled": journal.settle("freeze-node", node=nodes[0])}
    if name == "corrupt-latest-snapshot":
        return _corrupt_latest_snapshot(env, entry, journal)
    return {}


def _corrupt_latest_snapshot(
    env: FaultTarget, entry: JournalEntry, journal: RollbackJournal
) -> dict[str, Any]:
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
    body = bytearray(aws.get_object(bucket, newest.key))
    # Same length, different bytes: only the checksum can tell.
    middle = len(body) // 2
    for i in range(middle, min(middle + 64, len(body))):
        body[i] ^= 0xFF
    version = aws.put_object(
        bucket,
        newest.key,
        bytes(body),
        metadata=stat["metadata"],
        sse_kms_key_id=stat.get("sse_kms_key_id"),
    )
    if not version:
        raise FaultError(
            f"s3://{bucket} has no versioning: a corrupted snapshot could not be undone",
            hint="enable versioning on the snapshot bucket",
        )
    undo = [
        {"kind": "delete-object-version", "bucket": bucket, "key": newest.key, "version": version}
    ]
    journal.update(entry.id, undo=undo)
    entry.undo = undo
    return {"key": newest.key, "version": version}


@dataclass
class RolledBack:
    fault: str
    entry_id: str
    steps: list[str]
    error: str | None = None


def rollback(env: FaultTarget) -> list[RolledBack]:
    """Undo every fault still in force, newest first; raise after trying all if any failed."""
    journal = RollbackJournal(env.state_dir)
    results = [_undo_entry(env, journal, entry) for entry in reversed(journal.in_force())]
    failed = [r for r in results if r.error]
    if failed:
        raise FaultError(
            "rollback failed for: " + "; ".join(f"{r.fault} ({r.error})" for r in failed),
            hint=f"run `vaultdr rollback` again; the undo steps are in {journal.path}",
        )
    return results


def _undo_entry(env: FaultTarget, journal: RollbackJournal, entry: JournalEntry) -> RolledBack:
    done: list[str] = []
    try:
        for step in entry.undo:
            done.append(_undo_step(env, step))
    except VaultdrError as exc:
        journal.update(entry.id, status="undo-failed")
        return RolledBack(entry.fault, entry.id, done, error=exc.message)
    journal.update(entry.id, status="undone", finished_at=_now())
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
        env.aws("admin").delete_object_version(step["bucket"], step["key"], step["version"])
        return f"removed the corrupt version of {step['key']}"
    raise FaultError(f"unknown undo step {kind!r} in the rollback journal")
