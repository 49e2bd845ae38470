"""The Environment contract: what every backend (local, kind, eks) offers the drill engine.

Drills, agents and the CLI talk to a stack only through this contract, so a
drill written once runs unchanged on every backend. Fault primitives here are
the raw mechanisms (kill a node, delete its volume, deny KMS access); the
fault catalogue adds the rollback journal on top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vaultdr.aws import Aws
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


class Environment(Protocol):
    """A place the stack runs. Implemented by ``LocalEnvironment`` and the kube environments."""

    name: str
    state_dir: Path  # where the journal, timelines and agent records are kept

    def up(self) -> StackStatus: ...

    def down(self, *, keep_data: bool = False) -> None: ...

    def status(self) -> StackStatus: ...

    def node_names(self) -> list[str]: ...

    def client(self, node: str | None = None, *, token: str | None = None) -> VaultClient:
        """A client for ``node``, or for the active node when None."""
        ...

    def leader(self) -> str | None: ...

    def root_token(self) -> str:
        """The break-glass root token, read from where it is kept (SSM)."""
        ...

    def recovery_keys(self) -> list[str]: ...

    def ca_file(self) -> Path | None: ...

    def service_account_token(
        self, namespace: str, name: str, *, audiences: list[str] | None = None
    ) -> str: ...

    # fault primitives
    def kill_node(self, node: str) -> None: ...

    def delete_volume(self, node: str) -> None: ...

    def kill_nodes(self, names: list[str]) -> None:
        """Kill several nodes at the same moment."""
        ...

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

    def cluster_id(self) -> str | None: ...

    def snapshot_location(self) -> tuple[str, str]:
        """(bucket, prefix) of the snapshots."""
        ...
