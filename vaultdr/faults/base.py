"""What a fault is: a class declaring its targets, what it does, the undo steps it
journals and how each is undone; and the registry that ``vaultdr fault list``, the
CLI, the drills and the Chaos Toolkit actions all read.

A fault acts only through the :class:`FaultTarget` primitives (the environment's
contract), so one class serves local processes and Kubernetes alike. Every undo
step a fault journals names a kind registered with :func:`undo_kind`, whose
handler undoes it and whose rank places it in the rollback order (access grants
first). A dry run is the same ``act`` against an environment that records the
changes instead of making them (:meth:`FaultTarget.recording`).

Hazard: ``act`` must journal (through the :class:`Journaled` handle) every undo it
learns while acting *before* the change that needs it, or a crash in between
leaves a change nobody can undo.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from vaultdr.envs.base import FaultPrimitives
from vaultdr.errors import ConfigError, FaultError, StackStateError

#: The environment primitives the catalogue acts through: the fault part of the
#: Environment contract, declared once in :mod:`vaultdr.envs.base`.
FaultTarget = FaultPrimitives


@dataclass
class RolledBack:
    """What undoing one journal entry did (``error`` when it could not)."""

    fault: str
    entry_id: str
    steps: list[str]
    error: str | None = None


@dataclass(frozen=True)
class Param:
    """One argument of a fault: ``node`` for ``kill-node NODE``."""

    name: str
    metavar: str
    help: str


NODE = Param("node", "NODE", "a node by name, by index (0, 1, ...), or `leader` / `follower` (now)")


class Journaled(Protocol):
    """The journal entry of the fault being injected (a no-op one in a dry run)."""

    def set_undo(self, steps: list[dict[str, Any]]) -> None:
        """Replace the entry's undo steps, durably, before the change that needs them."""
        ...

    def settle(self, fault: str, *, node: str | None = None) -> list[str]:
        """Mark entries of ``fault`` (for ``node``) undone: their undo was just done."""
        ...


class Fault(ABC):
    """A named, reversible fault. Subclasses set the class attributes and ``act``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    #: How it is undone, in words, for ``vaultdr fault list``.
    undo: ClassVar[str] = "none: the stack heals by itself"
    params: ClassVar[tuple[Param, ...]] = ()
    #: Stays in force until undone (rollback or its counterpart fault).
    persistent: ClassVar[bool] = False

    def targets(self, env: FaultTarget, args: Sequence[str]) -> list[str]:
        """The nodes the fault acts on, resolved now (a leader is whoever leads now)."""
        return [resolve_node(env, arg) for arg in args]

    def undo_steps(self, env: FaultTarget, nodes: list[str]) -> list[dict[str, Any]]:
        """The undo steps journaled before the fault acts."""
        return []

    @abstractmethod
    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        """Make the change; returns what the journal's ``detail`` should record."""

    def describe(self, env: FaultTarget, nodes: list[str]) -> list[str] | None:
        """The changes of a dry run when ``act`` is not made of recording primitives."""
        return None


REGISTRY: dict[str, Fault] = {}


def register(cls: type[Fault]) -> type[Fault]:
    """Class decorator: add one instance of ``cls`` to the registry under its name."""
    REGISTRY[cls.name] = cls()
    return cls


def get_fault(name: str) -> Fault:
    """The fault called ``name``; ConfigError listing the catalogue when there is none."""
    fault = REGISTRY.get(name)
    if fault is None:
        raise ConfigError(
            f"unknown fault '{name}'",
            hint=f"known faults: {', '.join(REGISTRY)} (see `vaultdr fault list`)",
        )
    return fault


# --- undo steps ------------------------------------------------------------------------


@dataclass(frozen=True)
class UndoKind:
    """How undo steps of one kind are undone, and where they come in the rollback order."""

    kind: str
    rank: int
    run: Callable[[FaultTarget, dict[str, Any]], str]


UNDO_KINDS: dict[str, UndoKind] = {}


def undo_kind(kind: str, *, rank: int) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register the function below as the handler of undo steps of ``kind``."""

    def add(run: Callable[[FaultTarget, dict[str, Any]], str]) -> Callable[..., str]:
        UNDO_KINDS[kind] = UndoKind(kind, rank, run)
        return run

    return add


def run_undo_step(env: FaultTarget, step: dict[str, Any]) -> str:
    """Undo one step; FaultError for a kind nobody registered."""
    handler = UNDO_KINDS.get(str(step.get("kind")))
    if handler is None:
        raise FaultError(f"unknown undo step {step.get('kind')!r} in the rollback journal")
    return handler.run(env, step)


# --- nodes -----------------------------------------------------------------------------


def resolve_node(env: FaultTarget, value: str) -> str:
    """A node by name, by index (``0``, ``1``, ...), or ``leader`` / ``follower`` (now)."""
    names = env.node_names()
    if value in names:
        return value
    if value == "leader":
        return current_leader(env)
    if value == "follower":
        leader = current_leader(env)
        return next(n for n in names if n != leader)
    if value.isdigit() and int(value) < len(names):
        return names[int(value)]
    raise ConfigError(
        f"no node '{value}' in this stack",
        hint=f"use one of: {', '.join(names)}, an index 0-{len(names) - 1}, leader or follower",
    )


def current_leader(env: FaultTarget) -> str:
    """The active node now; StackStateError when none is."""
    leader = env.leader()
    if leader is None:
        raise StackStateError(
            "no node is active: there is no leader to kill",
            hint="wait until the cluster is healthy (`vaultdr status`)",
        )
    return leader
