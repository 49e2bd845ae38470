"""Inject, preview and roll back faults: the journal first, then the change.

``inject`` resolves the fault's targets, asks the environment whether it may
break this stack (real clusters ask for confirmation), journals the entry with
every undo step it knows (fsynced), and only then lets the fault act. If acting
fails, what was journaled is undone at once.

``preview`` is the same ``act`` against the environment's recording mode: the
primitives list the changes they would make and make none.

``rollback`` undoes every entry in force on its own, access first:
``restore-kms`` (KMS access above all), then ``thaw-node``, then
``release-nodes``, then snapshot repairs; within a kind, newest first. An undo
step that raises anything is that entry's failure only: the entry stays in
force (``undo-failed``) and the rollback goes on. After trying everything it
raises :class:`FaultError` naming each failure, each unreadable journal record
and the journal's path.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from vaultdr.errors import ConfigError, FaultError
from vaultdr.faults.base import (
    UNDO_KINDS,
    Fault,
    FaultTarget,
    RolledBack,
    get_fault,
    run_undo_step,
)
from vaultdr.faults.journal import JournalEntry, RollbackJournal, describe_error, now

log = logging.getLogger("vaultdr.faults")

Mark = Callable[[str, dict[str, Any]], None]


class _Entry:
    """The :class:`~vaultdr.faults.base.Journaled` handle of one entry being injected."""

    def __init__(self, journal: RollbackJournal, entry: JournalEntry) -> None:
        self.journal = journal
        self.entry = entry

    def set_undo(self, steps: list[dict[str, Any]]) -> None:
        self.journal.update(self.entry.id, undo=steps)
        self.entry.undo = steps

    def settle(self, fault: str, *, node: str | None = None) -> list[str]:
        return self.journal.settle(fault, node=node)


class _DryEntry:
    """A dry run's handle: nothing is journaled, nothing is settled."""

    def set_undo(self, steps: list[dict[str, Any]]) -> None:
        return None

    def settle(self, fault: str, *, node: str | None = None) -> list[str]:
        return []


def plan(env: FaultTarget, name: str, args: Sequence[str]) -> tuple[Fault, list[str]]:
    """The fault called ``name`` and the nodes it would act on now; ConfigError on bad args."""
    fault = get_fault(name)
    if len(args) != len(fault.params):
        usage = " ".join([name, *(p.metavar for p in fault.params)])
        raise ConfigError(f"fault {name} takes {len(fault.params)} argument(s): {usage}")
    return fault, fault.targets(env, args)


def inject(
    env: FaultTarget,
    name: str,
    args: Sequence[str] = (),
    *,
    mark: Mark | None = None,
) -> JournalEntry:
    """Journal the fault with its undo steps, then inject it. Returns the journal entry.

    The entry, with every undo step known before acting, is on disk (fsynced) before
    the fault's first action.
    """
    fault, nodes = plan(env, name, args)
    env.check_destructive(name)  # real clusters: refused before anything is journaled
    journal = RollbackJournal(env.state_dir)
    entry = JournalEntry(
        id=uuid.uuid4().hex[:12],
        fault=name,
        args=[str(a) for a in (nodes if fault.params else [])],
        started_at=now(),
        mono=time.monotonic(),
        status="acting",
        detail={"nodes": nodes} if nodes else {},
    )
    entry.undo = fault.undo_steps(env, nodes)
    journal.add(entry)
    if mark:
        mark(f"fault:{name}", {"nodes": nodes, "fault_id": entry.id})
    try:
        detail = fault.act(env, nodes, _Entry(journal, entry))
    except BaseException as exc:
        log.error("fault %s failed while acting (%s); undoing it", name, describe_error(exc))
        undone = _undo_entry(env, journal, entry)
        if undone.error:
            log.error("undoing fault %s (id %s) failed: %s", name, entry.id, undone.error)
        raise
    status = "injected" if fault.persistent else "done"
    journal.update(entry.id, status=status, detail={**entry.detail, **detail}, finished_at=now())
    entry.status = status
    entry.detail.update(detail)
    return entry


def preview(env: FaultTarget, name: str, args: Sequence[str] = ()) -> list[str]:
    """Every change ``name`` would make now, without making it (``fault inject --dry-run``)."""
    fault, nodes = plan(env, name, args)
    return describe(env, fault, nodes)


def describe(env: FaultTarget, fault: Fault, nodes: list[str]) -> list[str]:
    """The changes of ``fault`` on ``nodes``: its ``act`` run in the environment's
    recording mode, and whether a real run would be refused."""
    changes = fault.describe(env, nodes)
    if changes is None:
        with env.recording() as planned:
            fault.act(env, nodes, _DryEntry())
        changes = list(planned)
    refused = env.refusal(fault.name)
    return changes + ([refused] if refused else [])


def _undo_rank(entry: JournalEntry) -> int:
    ranks = [
        UNDO_KINDS[k].rank for k in (str(s.get("kind")) for s in entry.undo) if k in UNDO_KINDS
    ]
    return min(ranks, default=len(UNDO_KINDS))


def undo_order(entries: Sequence[JournalEntry]) -> list[JournalEntry]:
    """``entries`` (oldest first, as journaled) in the order rollback undoes them:
    by the rank of their undo kinds (KMS access first), within a rank newest first."""
    ranked = sorted(enumerate(entries), key=lambda item: (_undo_rank(item[1]), -item[0]))
    return [entry for _, entry in ranked]


def rollback(env: FaultTarget) -> list[RolledBack]:
    """Undo every fault still in force (see the module docstring for the order).

    Each entry is undone on its own; an unreadable journal record is skipped. After
    trying everything, raises FaultError naming each failure and the journal's path.
    """
    journal = RollbackJournal(env.state_dir)
    loaded = journal.read()
    for problem in loaded.problems:
        log.warning("rollback journal %s: %s", journal.path.parent, problem)
    pending = undo_order([e for e in loaded.entries if e.in_force])
    results = [_undo_entry(env, journal, entry) for entry in pending]
    if loaded.problems:
        try:
            journal.repair()
        except Exception as exc:  # noqa: BLE001 - the undo above is what matters; say so
            log.error(
                "could not repair the rollback journal %s: %s", journal.path, describe_error(exc)
            )
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
        raise _rollback_failed(journal, results, failed)
    return results


def _rollback_failed(
    journal: RollbackJournal, results: list[RolledBack], failed: list[RolledBack]
) -> FaultError:
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
    return error


def _undo_entry(env: FaultTarget, journal: RollbackJournal, entry: JournalEntry) -> RolledBack:
    """Undo one entry; never raises an Exception (its failure is the result's error).

    An error's text is its type and message: vaultdr's errors never carry a secret, and
    the primitives' own (OSError, KeyError on a malformed step) name paths and fields.
    """
    done: list[str] = []
    for step in entry.undo:
        try:
            done.append(run_undo_step(env, step))
        except Exception as exc:  # noqa: BLE001 - this entry's failure; the others go on
            return _undo_failed(
                journal, entry, done, f"{step.get('kind', '?')} failed: {describe_error(exc)}"
            )
    entry.status = "undone"
    entry.finished_at = now()
    changes: dict[str, Any] = {"status": entry.status, "finished_at": entry.finished_at}
    if "undo_error" in entry.detail:  # an earlier rollback's failure, now mended
        entry.detail = {k: v for k, v in entry.detail.items() if k != "undo_error"}
        changes["detail"] = entry.detail
    try:
        journal.update(entry.id, **changes)
    except Exception as exc:  # noqa: BLE001 - undone all the same; the next rollback redoes it
        error = (
            f"undone, but the journal could not record it ({describe_error(exc)}); "
            "rolling back again is harmless"
        )
        return RolledBack(entry.fault, entry.id, done, error=error)
    return RolledBack(entry.fault, entry.id, done)


def _undo_failed(
    journal: RollbackJournal, entry: JournalEntry, done: list[str], error: str
) -> RolledBack:
    log.error("undo of %s (id %s) failed: %s", entry.fault, entry.id, error)
    entry.status = "undo-failed"
    entry.detail = {**entry.detail, "undo_error": error}
    try:
        journal.update(entry.id, status=entry.status, detail=entry.detail)
    except Exception as journal_exc:  # noqa: BLE001 - the undo's failure is the news
        error += f"; the journal could not record it ({describe_error(journal_exc)})"
    return RolledBack(entry.fault, entry.id, done, error=error)
