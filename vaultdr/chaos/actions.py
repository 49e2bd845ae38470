"""Chaos Toolkit actions: start measuring, inject a fault, wait for recovery, roll back.

Each takes the experiment's ``configuration`` (see :mod:`vaultdr.chaos.session`)
and returns JSON-able data that lands in the journal. A failure raises
``ActivityFailed`` with the reason, which ``vaultdr chaos run`` reports.
"""

import time
import uuid
from typing import Any

from chaoslib.exceptions import ActivityFailed

from vaultdr import faults
from vaultdr.chaos.session import DEFAULT_LOGIN, drill
from vaultdr.errors import VaultdrError
from vaultdr.session import fault_summary

__all__ = [
    "corrupt_latest_snapshot",
    "delete_all_volumes",
    "delete_volume",
    "ensure_app_secret",
    "force_delete_pod",
    "freeze_node",
    "inject_fault",
    "kill_leader",
    "kill_node",
    "kill_quorum",
    "restart_all",
    "restore_kms",
    "revoke_kms",
    "rollback_faults",
    "start_measuring",
    "take_snapshot",
    "thaw_node",
    "wait_for_recovery",
]

#: The action of each fault in the catalogue (a test keeps it complete).
FAULT_ACTIONS: dict[str, str] = {
    "kill-leader": "kill_leader",
    "kill-node": "kill_node",
    "force-delete-pod": "force_delete_pod",
    "kill-quorum": "kill_quorum",
    "delete-volume": "delete_volume",
    "delete-all-volumes": "delete_all_volumes",
    "restart-all": "restart_all",
    "revoke-kms": "revoke_kms",
    "restore-kms": "restore_kms",
    "freeze-node": "freeze_node",
    "thaw-node": "thaw_node",
    "corrupt-latest-snapshot": "corrupt_latest_snapshot",
}


def start_measuring(
    write_rate: float = 10.0,
    interval: float = 0.1,
    login: dict[str, str] | None = None,
    configuration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the recovery timeline (polling every ``interval`` s) and the write ledger
    (``write_rate`` acknowledged-or-not writes per second; 0 for none)."""
    try:
        current = drill(configuration)
        current.start(
            write_rate=float(write_rate), interval=float(interval), login=login or DEFAULT_LOGIN
        )
    except VaultdrError as exc:
        raise ActivityFailed(f"cannot start measuring: {exc}") from None
    return {"results_dir": str(current.results_dir), "interval": interval, "write_rate": write_rate}


def inject_fault(
    name: str,
    args: list[str] | None = None,
    configuration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Inject a fault of the catalogue by name (``vaultdr fault list``), journaled for
    rollback. Prefer the fault's own action (``kill_leader``, ``delete_volume``, ...),
    which ``chaos discover`` describes; this one stays for older experiments.

    Node arguments take a name, an index, ``leader`` or ``follower``."""
    return _inject(name, args or [], configuration)


def kill_leader(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """SIGKILL the active node (delete its pod on Kubernetes). It comes back by itself;
    a new leader should serve within the leader-loss objective."""
    return _inject("kill-leader", [], configuration)


def kill_node(
    node: str = "follower", configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """SIGKILL one node (delete its pod). ``node``: a name, an index (``0``),
    ``leader`` or ``follower`` (resolved when the action runs)."""
    return _inject("kill-node", [node], configuration)


def force_delete_pod(
    node: str = "follower", configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Delete one node's pod with no grace (``gracePeriodSeconds=0``): its replacement may
    start while the old container still holds the data. Locally a SIGKILL, as
    ``kill_node``. ``node``: a name, an index, ``leader`` or ``follower``."""
    return _inject("force-delete-pod", [node], configuration)


def kill_quorum(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """SIGKILL a majority of the nodes at once, the leader first: no quorum, so no
    reads or writes, until they are back."""
    return _inject("kill-quorum", [], configuration)


def restart_all(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """SIGKILL every node at the same moment; each must auto-unseal when it is back."""
    return _inject("restart-all", [], configuration)


def delete_volume(
    node: str = "follower", configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Delete one node's data (its PVC) and kill it: it comes back empty and must rejoin.
    ``node``: a name, an index, ``leader`` or ``follower``."""
    return _inject("delete-volume", [node], configuration)


def delete_all_volumes(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Total loss: every node's data is deleted; the auto-restore must bring the
    cluster back from the newest good snapshot."""
    return _inject("delete-all-volumes", [], configuration)


def revoke_kms(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deny the seal's principal its KMS key (an IAM deny; transit: the seal token's
    policy). Running nodes keep serving; a restarted node stays sealed. Rolled back by
    ``restore_kms`` or the rollback."""
    return _inject("revoke-kms", [], configuration)


def restore_kms(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Lift the KMS deny; sealed nodes unseal themselves on their next retry."""
    return _inject("restore-kms", [], configuration)


def freeze_node(
    node: str = "follower", configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """SIGSTOP one node (local only): it holds its sockets and answers nothing, like a
    partitioned peer. Rolled back by ``thaw_node`` or the rollback."""
    return _inject("freeze-node", [node], configuration)


def thaw_node(node: str, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """SIGCONT a node ``freeze_node`` stopped."""
    return _inject("thaw-node", [node], configuration)


def corrupt_latest_snapshot(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Overwrite the newest snapshot in S3 with a corrupt copy of the same size and
    metadata (a new object version): a restore must skip it. Rolled back by deleting
    that version."""
    return _inject("corrupt-latest-snapshot", [], configuration)


def _inject(name: str, args: list[str], configuration: dict[str, Any] | None) -> dict[str, Any]:
    current = drill(configuration)
    try:
        entry = current.inject(name, *args)
    except VaultdrError as exc:
        raise ActivityFailed(f"fault {name} failed: {exc}") from None
    return fault_summary(entry)


def wait_for_recovery(
    timeout: float = 120.0,
    require: list[str] | None = None,
    stable_for: float | None = None,
    configuration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Wait (at most ``timeout`` s) until the phases in ``require`` are reached after the
    last fault and reads, logins and writes have stayed up for ``stable_for`` seconds
    (default: ``objectives.stable_for`` in stack.yaml); returns the measured recovery
    (RTO, its phases and any flaps) from the timeline. With the write load running,
    ``writing`` is required whenever ``serving`` is."""
    current = drill(configuration)
    timeout = float(timeout)  # a ${variable} from the configuration may arrive as text
    if current.timeline is None:
        raise ActivityFailed("wait_for_recovery needs start_measuring first")
    window = float(stable_for) if stable_for is not None else None
    started = time.monotonic()
    recovery = current.wait_recovered(*(require or ()), timeout=timeout, stable_for=window)
    result = recovery.to_dict()
    if recovery.recovered and "healthy" in recovery.required:
        # Healthy on the timeline is unsealed + leader + reads; full health also needs every
        # node back as a raft voter (autopilot promotes a rejoined node once it is stable).
        fault = current.timeline.last_fault()
        left = max(5.0, timeout - (time.monotonic() - started))
        verdict = current.fully_healthy(left, interval=0.1)
        if not verdict.ok:
            raise ActivityFailed(f"not fully healthy within {timeout:.0f} s: {verdict.detail}")
        if fault is not None:
            result["voters"] = round(time.monotonic() - fault.mono, 3)
    if not recovery.recovered:
        raise ActivityFailed(
            f"not recovered within {timeout:.0f} s: never reached {', '.join(recovery.missing)}"
        )
    return result


def rollback_faults(configuration: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Undo every fault still in force (KMS access, frozen nodes, corrupt snapshots)."""
    current = drill(configuration)
    try:
        results = faults.rollback(current.env)
    except VaultdrError as exc:
        raise ActivityFailed(f"rollback failed: {exc}") from None
    return [{"fault": r.fault, "id": r.entry_id, "steps": r.steps} for r in results]


def ensure_app_secret(
    path: str = "secret/apps/web/config", configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Make sure the kv-v2 secret the app login check reads exists (a canary if absent).

    The vaultdr control calls it before the steady state is checked."""

    current = drill(configuration)
    mount, _, rest = path.partition("/")
    try:
        client = current.env.client(token=current.token)
        if client.read_kv(mount, rest) is not None:
            return {"path": path, "written": False}
        client.write_kv(mount, rest, {"vaultdr-canary": uuid.uuid4().hex})
    except VaultdrError as exc:
        raise ActivityFailed(f"cannot prepare {path}: {exc}") from None
    return {"path": path, "written": True}


def take_snapshot(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the snapshot agent once now (what its schedule does), so the drill knows its RPO base."""
    current = drill(configuration)
    try:
        record = current.env.snapshot_agent().take()
    except VaultdrError as exc:
        raise ActivityFailed(f"snapshot failed: {exc}") from None
    if current.timeline is not None:
        current.timeline.mark("snapshot-taken", key=record.key)
    return {"key": record.key, "sha256": record.sha256, "size": record.size}
