"""The Environment contract: what every backend (local, kind, eks) offers the drill engine.

Drills, agents and the CLI talk to a stack only through this contract, so a
drill written once runs unchanged on every backend. Fault primitives here are
the raw mechanisms (kill a node, delete its volume, deny KMS access); the
fault catalogue adds the rollback journal on top. What both backends do the
same way is written once in :mod:`vaultdr.envs.common`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vaultdr.agents.configure import Change
from vaultdr.agents.snapshot import SnapshotAgent
from vaultdr.aws import Aws
from vaultdr.config import Stack
from vaultdr.envs.diagnostics import Diagnostics
from vaultdr.principals import break_glass_prefix
from vaultdr.vault import VaultClient


def ssm_path(cluster: str, name: str) -> str:
    """Where break-glass material lives in SSM Parameter Store (every environment)."""
    return f"{break_glass_prefix(cluster)}/{name}"


def initialize_cluster(
    client: VaultClient, aws: Aws, *, cluster: str, recovery_shares: int, recovery_threshold: int
) -> VaultClient:
    """Initialize with recovery keys, keep the root token and the keys in SSM as
    SecureString (they are never printed), and return the root client."""
    init = client.initialize(recovery_shares=recovery_shares, recovery_threshold=recovery_threshold)
    aws.put_secure_parameter(ssm_path(cluster, "root-token"), init.root_token)
    aws.put_secure_parameter(ssm_path(cluster, "recovery-keys"), json.dumps(init.recovery_keys))
    return client.with_token(init.root_token)


def read_root_token(aws: Aws, cluster: str) -> str:
    """The break-glass root token from SSM."""
    return aws.get_secure_parameter(ssm_path(cluster, "root-token"))


def read_recovery_keys(aws: Aws, cluster: str) -> list[str]:
    """The break-glass recovery keys from SSM."""
    return list(json.loads(aws.get_secure_parameter(ssm_path(cluster, "recovery-keys"))))


@dataclass(frozen=True)
class NodeStatus:
    """What ``vaultdr status`` shows for one node. Nothing secret."""

    name: str
    api_addr: str
    running: bool
    initialized: bool | None = None
    sealed: bool | None = None
    active: bool | None = None
    voter: bool | None = None
    version: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class StackStatus:
    environment: str
    cluster: str
    seal: str
    kms_reachable: bool | None
    nodes: list[NodeStatus]
    extras: dict[str, Any] = field(default_factory=dict)
    #: The parts that keep the stack healing (supervisor, snapshot agent, restore
    #: watcher): "running", or what is wrong. Empty when not looked at.
    agents: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """Every node initialized, unsealed and a voter, exactly one active, and every
        agent that was looked at running."""
        nodes = self.nodes
        return (
            bool(nodes)
            and all(n.initialized and n.sealed is False and n.voter for n in nodes)
            and sum(1 for n in nodes if n.active) == 1
            and all(state == "running" for state in self.agents.values())
        )


class FaultPrimitives(Protocol):
    """The fault part of the contract: what the fault catalogue acts through
    (:class:`vaultdr.faults.base.FaultTarget` is this). Each primitive is the raw
    mechanism; the catalogue journals its undo around it."""

    state_dir: Path  # where the journal, timelines and agent records are kept

    def node_names(self) -> list[str]: ...

    def leader(self) -> str | None:
        """The node that is active now, or None."""
        ...

    def kill_node(self, node: str) -> None:
        """Stop the node the way an outage does; it comes back by itself (local: SIGKILL of
        its process; kube: a graceful DELETE of its pod, the pod's termination grace applying)."""
        ...

    def force_delete_node(self, node: str) -> None:
        """Kill the node with no grace at all (kube: DELETE of its pod with
        gracePeriodSeconds=0, so its replacement may start while the old container still
        runs; local: SIGKILL, as kill_node)."""
        ...

    def kill_nodes(self, names: list[str]) -> None:
        """Kill several nodes at the same moment."""
        ...

    def delete_volume(self, node: str) -> None: ...

    def delete_all_volumes(self) -> None:
        """Total loss: every node's data is gone; they all come back empty."""
        ...

    def release_nodes(self, names: list[str]) -> None:
        """Let nodes a fault held down run again."""
        ...

    def freeze_node(self, node: str) -> tuple[int, int]:
        """Stop the node answering without killing it; returns what thaw needs."""
        ...

    def thaw_node(
        self, node: str, pid: int | None = None, start_time: int | None = None
    ) -> bool: ...

    def revoke_kms(self) -> None: ...

    def restore_kms(self) -> None: ...

    def aws(self, principal: str = "admin") -> Aws: ...

    def snapshot_location(self) -> tuple[str, str]:
        """(bucket, prefix) of the snapshots."""
        ...

    def cluster_id(self) -> str | None: ...

    def check_destructive(self, fault: str) -> None:
        """Raise a Refused error unless ``fault`` may run here (real clusters ask first)."""
        ...

    def recording(self) -> AbstractContextManager[list[str]]:
        """Within the block the primitives record each change they would make, and make none."""
        ...

    def refusal(self, fault: str) -> str | None:
        """Why ``fault`` would be refused here without a dry run, or None."""
        ...


class Environment(FaultPrimitives, Protocol):
    """A place the stack runs. Implemented by ``LocalEnvironment`` and the kube
    environments; front ends see only this (see :mod:`vaultdr.envs.factory`)."""

    name: str
    #: stack.yaml's path as given ("" when the stack came from elsewhere).
    stack_file: str
    #: ``up``/``down`` only say what they would do; faults record instead of acting.
    dry_run: bool

    # --- bring-up and teardown ------------------------------------------------------------
    def up(self) -> StackStatus: ...

    def down(self, *, keep_data: bool = False) -> None: ...

    def plan_up(self) -> list[str]:
        """What ``up`` would do, one line a step, doing none of it."""
        ...

    def plan_down(self, *, keep_data: bool = False) -> list[str]:
        """What ``down`` would do, one line a step, doing none of it."""
        ...

    def claimed_for_up(self) -> AbstractContextManager[None]:
        """What a front end holds around ``up``: the state directory claimed and locked
        where ``up`` does not do that itself."""
        ...

    def close(self) -> None:
        """Release what the environment opened (port-forwards); it stays usable."""
        ...

    # --- what runs --------------------------------------------------------------------------
    def status(self, *, quick: bool = False) -> StackStatus:
        """Every node's state; ``quick`` skips KMS and agents (for polling)."""
        ...

    def agent_status(self) -> dict[str, str]:
        """The parts that keep the stack healing (supervisor, snapshot agent, restore
        watcher): "running", or what is wrong. Empty where they are not looked at."""
        ...

    def last_restore(self) -> dict[str, Any] | None:
        """The restore watcher's record of its last restore (nothing secret), or None."""
        ...

    def events_file(self) -> Path | None:
        """The JSON-lines file the stack's supervisor and agents append node and restore
        events to, for the timeline (:func:`vaultdr.timeline.environment_events_source`),
        or None where there is none."""
        ...

    def stack_config(self) -> Stack: ...

    def client(self, node: str | None = None, *, token: str | None = None) -> VaultClient:
        """A client for ``node``, or for the active node when None."""
        ...

    def ca_file(self) -> Path | None: ...

    def service_account_token(
        self, namespace: str, name: str, *, audiences: list[str] | None = None, ttl: int = 3600
    ) -> str: ...

    # --- break-glass, configuration, snapshots -------------------------------------------------
    def root_token(self) -> str:
        """The break-glass root token, read from where it is kept (SSM)."""
        ...

    def recovery_keys(self) -> list[str]: ...

    def configure(self, *, dry_run: bool = False, stack: Stack | None = None) -> list[Change]:
        """Reconcile stack.yaml's ``configure`` section (``stack``: another stack file's)."""
        ...

    def snapshot_agent(self) -> SnapshotAgent:
        """The snapshot agent, run from here as its schedule runs it."""
        ...

    # --- diagnostics ---------------------------------------------------------------------------
    def diagnostics(self, dest: Path, *, known_secrets: Sequence[str] = ()) -> Diagnostics:
        """What a failed drill keeps of the stack, written into ``dest``: the parts' logs
        and status where the backend has them (kube: pod logs, events, StatefulSet and PVC
        status; local: the node and supervisor logs), bounded and redacted
        (``known_secrets`` and anything shaped like a secret; see
        :mod:`vaultdr.envs.diagnostics`). An optional capability: a backend with nothing
        to offer writes nothing. Never raises for what it cannot read: that is noted in
        the result."""
        ...
