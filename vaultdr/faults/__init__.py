"""The fault catalogue: named, reversible faults, each journaled before it acts.

A fault is what a real outage does to the stack: a dead leader, a lost volume,
a revoked KMS grant, a corrupt backup. Each is a class in the registry
(:mod:`.catalogue`, :mod:`.snapshots`) declaring its targets, what it does, the
undo steps it journals and how each is undone (:mod:`.base`). Faults act only
through the environment's primitives, so kind and EKS implement the same names.

Every injection first writes an entry to the rollback journal in the state
directory (:mod:`.journal`, fsynced) with the undo steps it will need, and only
then acts (:mod:`.engine`). So whatever happens next (the drill fails, the
process is killed, the machine reboots), ``vaultdr rollback`` reads the journal
and undoes what is still in force: KMS access above all, then frozen processes,
held nodes and corrupted snapshots. Undo steps are idempotent; rolling back
twice is harmless.

Faults whose damage the stack repairs by itself (a killed process, a lost
volume) have no undo beyond releasing any node a crash left held: the point of
the drill is to see the stack heal, not to heal it for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaultdr.errors import FaultError
from vaultdr.faults import catalogue as catalogue
from vaultdr.faults import snapshots as snapshots
from vaultdr.faults.base import (
    NODE,
    REGISTRY,
    UNDO_KINDS,
    Fault,
    FaultTarget,
    Journaled,
    Param,
    RolledBack,
    get_fault,
    resolve_node,
)
from vaultdr.faults.engine import Mark, describe, inject, plan, preview, rollback, undo_order
from vaultdr.faults.journal import (
    JOURNAL_FILE,
    JOURNAL_LOG_FILE,
    JournalEntry,
    JournalProblem,
    RollbackJournal,
)

__all__ = [
    "CATALOGUE",
    "JOURNAL_FILE",
    "JOURNAL_LOG_FILE",
    "NODE",
    "REGISTRY",
    "UNDO_KINDS",
    "Fault",
    "FaultError",
    "FaultSpec",
    "FaultTarget",
    "JournalEntry",
    "JournalProblem",
    "Journaled",
    "Mark",
    "Param",
    "RollbackJournal",
    "RolledBack",
    "describe",
    "get_fault",
    "inject",
    "plan",
    "preview",
    "resolve_node",
    "rollback",
    "undo_order",
]


@dataclass(frozen=True)
class FaultSpec:
    """A fault as ``vaultdr fault list`` shows it: usage, what it does, how it is undone."""

    name: str
    params: tuple[str, ...]
    summary: str
    undo: str


#: Every fault by name, as the catalogue lists it.
CATALOGUE: dict[str, FaultSpec] = {
    name: FaultSpec(name, tuple(p.metavar for p in f.params), f.summary, f.undo)
    for name, f in REGISTRY.items()
}
