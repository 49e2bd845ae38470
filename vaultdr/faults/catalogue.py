"""The faults of processes, volumes and KMS access: what real outages do to the stack.

Blast radius, fault by fault: the kill faults end server processes the
supervisor (or the StatefulSet) starts again (on Kubernetes gracefully, as an
outage's eviction does; force-delete-pod with no grace at all); the volume faults delete a node's
data, which the cluster (or the auto-restore, on total loss) must bring back;
revoke-kms denies the seal's principal its key until restore-kms or rollback;
freeze-node stops a process without ending it until thaw-node or rollback.

Rolled back: only what the stack cannot heal itself. A held node (a volume fault
interrupted between stopping the node and deleting its data) is released; a
frozen node is thawed; KMS access is restored, first of all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from vaultdr.faults.base import (
    NODE,
    Fault,
    FaultTarget,
    Journaled,
    Param,
    current_leader,
    register,
    undo_kind,
)


@register
class KillLeader(Fault):
    name = "kill-leader"
    summary = "SIGKILL the active node"
    undo = "none: the node restarts"

    def targets(self, env: FaultTarget, args: Sequence[str]) -> list[str]:
        return [current_leader(env)]

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.kill_node(nodes[0])
        return {}


@register
class KillNode(Fault):
    name = "kill-node"
    summary = "SIGKILL one node (kube: delete its pod, with its termination grace)"
    undo = "none: the node restarts"
    params: ClassVar[tuple[Param, ...]] = (NODE,)

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.kill_node(nodes[0])
        return {}


@register
class ForceDeletePod(Fault):
    """The node's pod deleted with no grace (``gracePeriodSeconds=0``, ``kubectl delete
    --force --grace-period=0``): the pod object goes at once, so the StatefulSet starts
    the replacement while the old container may still hold the raft database. Locally a
    process has no grace to skip: SIGKILL, as kill-node."""

    name = "force-delete-pod"
    summary = "delete the node's pod with gracePeriodSeconds=0 (local: SIGKILL)"
    undo = "none: the node restarts"
    params: ClassVar[tuple[Param, ...]] = (NODE,)

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.force_delete_node(nodes[0])
        return {}


@register
class KillQuorum(Fault):
    name = "kill-quorum"
    summary = "SIGKILL a majority at once (the leader first): no quorum until they restart"
    undo = "none: the nodes restart"

    def targets(self, env: FaultTarget, args: Sequence[str]) -> list[str]:
        leader = current_leader(env)
        names = env.node_names()
        majority = len(names) // 2 + 1
        return [leader, *[n for n in names if n != leader]][:majority]

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.kill_nodes(nodes)
        return {}


@register
class DeleteVolume(Fault):
    name = "delete-volume"
    summary = "delete the node's data (PVC) and kill it; it comes back empty"
    undo = "release the node if a crash left it held"
    params: ClassVar[tuple[Param, ...]] = (NODE,)

    def undo_steps(self, env: FaultTarget, nodes: list[str]) -> list[dict[str, Any]]:
        return [{"kind": "release-nodes", "nodes": nodes}]

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.delete_volume(nodes[0])
        return {}


@register
class DeleteAllVolumes(Fault):
    name = "delete-all-volumes"
    summary = "total loss: delete every node's data; they all come back empty"
    undo = "release the nodes if a crash left them held"

    def targets(self, env: FaultTarget, args: Sequence[str]) -> list[str]:
        return env.node_names()

    def undo_steps(self, env: FaultTarget, nodes: list[str]) -> list[dict[str, Any]]:
        return [{"kind": "release-nodes", "nodes": nodes}]

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.delete_all_volumes()
        return {}


@register
class RestartAll(Fault):
    name = "restart-all"
    summary = "SIGKILL every node at once"
    undo = "none: the nodes restart"

    def targets(self, env: FaultTarget, args: Sequence[str]) -> list[str]:
        return env.node_names()

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.kill_nodes(nodes)
        return {}


@register
class RevokeKms(Fault):
    name = "revoke-kms"
    summary = "explicit deny of the seal's KMS access (transit: the seal token's policy)"
    undo = "restore-kms"
    persistent = True

    def undo_steps(self, env: FaultTarget, nodes: list[str]) -> list[dict[str, Any]]:
        return [{"kind": "restore-kms"}]

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.revoke_kms()
        return {}


@register
class RestoreKms(Fault):
    name = "restore-kms"
    summary = "lift the KMS deny"
    undo = "-"

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        env.restore_kms()
        return {"settled": entry.settle("revoke-kms")}


@register
class FreezeNode(Fault):
    name = "freeze-node"
    summary = "SIGSTOP the node: it keeps its sockets and answers nothing (a partition)"
    undo = "thaw-node"
    params: ClassVar[tuple[Param, ...]] = (NODE,)
    persistent = True

    def undo_steps(self, env: FaultTarget, nodes: list[str]) -> list[dict[str, Any]]:
        return [{"kind": "thaw-node", "node": nodes[0]}]  # by node, before SIGSTOP

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        pid, start_time = env.freeze_node(nodes[0])
        # The thaw by node was journaled before SIGSTOP; the pid makes it exact.
        entry.set_undo(
            [{"kind": "thaw-node", "node": nodes[0], "pid": pid, "start_time": start_time}]
        )
        return {"pid": pid}


@register
class ThawNode(Fault):
    name = "thaw-node"
    summary = "SIGCONT a frozen node"
    undo = "-"
    params: ClassVar[tuple[Param, ...]] = (NODE,)

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        thawed = env.thaw_node(nodes[0])
        return {"thawed": thawed, "settled": entry.settle("freeze-node", node=nodes[0])}


# --- how their undo steps are undone (rank: KMS access first) ---------------------------


@undo_kind("restore-kms", rank=0)
def _restore_kms(env: FaultTarget, step: dict[str, Any]) -> str:
    env.restore_kms()
    return "KMS access restored"


@undo_kind("thaw-node", rank=1)
def _thaw_node(env: FaultTarget, step: dict[str, Any]) -> str:
    thawed = env.thaw_node(step["node"], step.get("pid"), step.get("start_time"))
    return f"thawed {step['node']}" if thawed else f"{step['node']} was no longer frozen"


@undo_kind("release-nodes", rank=2)
def _release_nodes(env: FaultTarget, step: dict[str, Any]) -> str:
    env.release_nodes(list(step["nodes"]))
    return f"released {', '.join(step['nodes'])}"
