"""The snapshot agent wired to a local stack: its settings and collaborators from the state.

The agent itself (:mod:`vaultdr.agents.snapshot`) knows nothing of environments;
this is where the local environment supplies what a Kubernetes deployment
supplies through its manifest: node addresses and CA, the bucket and KMS key,
the snapshot principal's AWS credentials (``env.aws("snapshot")``), and a fresh
service-account token for ``vaultdr-snapshot`` from the Kubernetes API stand-in.

Files: ``<state dir>/agents/snapshot.json`` (the status) and
``<state dir>/agents/tmp/`` (private temporary snapshot files).

Hazard: the JWT source asks the stand-in for a new token on every run; the token
lives only for the login and is never stored.
"""

from __future__ import annotations

from pathlib import Path

from vaultdr.agents.snapshot import SnapshotAgent, SnapshotSettings
from vaultdr.envs.local.env import LocalEnvironment


def snapshot_status_file(env: LocalEnvironment) -> Path:
    """Where the local snapshot agent writes its status."""
    return env.state_dir / "agents" / "snapshot.json"


def snapshot_settings_for(env: LocalEnvironment) -> SnapshotSettings:
    """The agent's settings for the local stack in ``env`` (stack.yaml + state)."""
    return env.snapshot_settings()


def snapshot_agent_for(
    env: LocalEnvironment, settings: SnapshotSettings | None = None
) -> SnapshotAgent:
    """A snapshot agent for the local stack, acting as the snapshot principal
    (:meth:`LocalEnvironment.snapshot_agent`)."""
    return env.snapshot_agent(settings)
