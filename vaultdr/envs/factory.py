"""The one door to the environments: :func:`open_environment` makes the environment
of ``--env local|kind|eks`` for every front end (the CLI, the Chaos Toolkit
extension, the Gherkin features), so none of them knows the concrete classes.

Hazard: opening an environment never starts or changes anything; ``up`` does.
On kind/eks it may read the kubeconfig lazily on first use.
"""

from __future__ import annotations

from pathlib import Path

from vaultdr.config import Stack
from vaultdr.envs.base import Environment
from vaultdr.envs.kube.clusters import make_kube_environment
from vaultdr.envs.kube.env import KubeEnvironment
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.errors import ConfigError

#: The environments this version has.
ENVIRONMENTS = ("local", "kind", "eks")

#: What :func:`open_environment` returns: the contract, whichever backend is behind it.
#: (The name predates the contract, when it was the union of the concrete classes.)
AnyEnvironment = Environment


def open_environment(
    name: str,
    state_dir: Path,
    stack: Stack | None = None,
    *,
    stack_file: str = "",
    confirm_context: str | None = None,
    dry_run: bool = False,
) -> Environment:
    """The environment ``name`` whose state lives in ``state_dir``.

    ``stack`` is stack.yaml's content: required on kind/eks; on local it is read from
    the running stack's state when not given. ``dry_run`` is ``--dry-run`` (``up``
    and ``down`` only plan; on kind/eks the faults only record); ``confirm_context``
    is the kube environments' ``--i-know-this-breaks``.
    """
    if name == "local":
        return LocalEnvironment(state_dir, stack, stack_file=stack_file, dry_run=dry_run)
    if name in ("kind", "eks"):
        if stack is None:
            raise ConfigError(f"--env {name} needs its stack.yaml", hint="pass --config PATH")
        return open_kube_environment(
            name,
            state_dir,
            stack,
            stack_file=stack_file,
            confirm_context=confirm_context,
            dry_run=dry_run,
        )
    raise ConfigError(f"--env {name}: unknown environment", hint=f"use one of {ENVIRONMENTS}")


def open_kube_environment(
    name: str,
    state_dir: Path,
    stack: Stack,
    *,
    stack_file: str = "",
    confirm_context: str | None = None,
    dry_run: bool = False,
) -> KubeEnvironment:
    """:func:`open_environment` for ``kind``/``eks`` only (the cluster commands)."""
    return make_kube_environment(
        name,
        state_dir,
        stack,
        stack_file=stack_file,
        confirm_context=confirm_context,
        dry_run=dry_run,
    )
