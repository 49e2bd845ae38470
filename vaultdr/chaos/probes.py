"""Chaos Toolkit probes: each returns ``{"ok": bool, "detail": str, ...}``.

Use them with the tolerance ``{"type": "jsonpath", "path": "$.ok", "expect": true}``
so the journal keeps the reason next to the verdict.
"""

import time
from typing import Any

from vaultdr import checks
from vaultdr.chaos.session import DEFAULT_LOGIN, drill
from vaultdr.errors import VaultdrError

__all__ = [
    "all_nodes_unsealed",
    "cluster_healthy",
    "kubernetes_login_refused",
    "kubernetes_login_works",
    "leader_elected",
    "no_acknowledged_write_lost",
    "node_stays_sealed",
    "raft_voters",
    "reads_work",
    "recovered_within",
    "snapshot_fresh",
]


def _record(configuration: dict[str, Any] | None, result: checks.CheckResult) -> dict[str, Any]:
    return drill(configuration).record_check(result, time.time())


def cluster_healthy(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every node unsealed and a raft voter, exactly one active."""
    current = drill(configuration)
    return _record(configuration, checks.cluster_healthy(current.env, current.token))


def all_nodes_unsealed(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    return _record(configuration, checks.all_unsealed(drill(configuration).env))


def leader_elected(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    return _record(configuration, checks.leader_elected(drill(configuration).env))


def raft_voters(expected: int = 3, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    current = drill(configuration)
    return _record(configuration, checks.raft_voters(current.env, current.token, expected))


def reads_work(
    path: str = "secret/apps/web/config", configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A read of the kv-v2 secret ``path`` (``<mount>/<path>``) succeeds through the cluster."""
    current = drill(configuration)
    mount, _, rest = path.partition("/")
    try:
        found = current.env.client(token=current.token).with_timeout(3.0).read_kv(mount, rest)
        result = checks.CheckResult("reads-work", found is not None, f"read {path}")
    except VaultdrError as exc:
        result = checks.CheckResult("reads-work", False, exc.message)
    return _record(configuration, result)


def kubernetes_login_works(
    namespace: str = DEFAULT_LOGIN["namespace"],
    service_account: str = DEFAULT_LOGIN["service_account"],
    role: str = DEFAULT_LOGIN["role"],
    read: str = DEFAULT_LOGIN["read"],
    configuration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An app's service account logs in with kubernetes auth and reads its secret."""
    env = drill(configuration).env
    return _record(
        configuration,
        checks.kubernetes_login(
            env, namespace=namespace, service_account=service_account, role=role, read=read
        ),
    )


def kubernetes_login_refused(
    namespace: str = "apps",
    service_account: str = "intruder",
    role: str = "web",
    configuration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A service account the role does not bind is refused (ok when the login fails)."""
    env = drill(configuration).env
    login = checks.kubernetes_login(
        env, namespace=namespace, service_account=service_account, role=role
    )
    result = checks.CheckResult(
        "kubernetes-login-refused",
        not login.ok,
        f"{namespace}/{service_account} refused: {login.detail}"
        if not login.ok
        else f"{namespace}/{service_account} was let in by role {role}",
    )
    return _record(configuration, result)


def snapshot_fresh(
    max_age: float = 3600.0, configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The newest snapshot in S3 is younger than ``max_age`` seconds."""
    return _record(configuration, checks.snapshot_fresh(drill(configuration).env, max_age))


def node_stays_sealed(
    node: str, seconds: float = 8.0, configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``node`` answers sealed (or not at all) for ``seconds``: what a revoked KMS must cause.

    ``node`` is a name, an index, or the node the last fault targeted (``last-fault``)."""
    current = drill(configuration)
    seconds = float(seconds)
    if node == "last-fault" and current.faults and current.faults[-1]["nodes"]:
        node = current.faults[-1]["nodes"][0]
    deadline = time.monotonic() + seconds
    seen_sealed = False
    while time.monotonic() < deadline:
        try:
            status = current.env.client(node).with_timeout(2.0).read_seal_status()
        except VaultdrError:
            time.sleep(0.2)
            continue
        if status.get("sealed") is False:
            return _record(
                configuration,
                checks.CheckResult("node-stays-sealed", False, f"{node} unsealed itself"),
            )
        seen_sealed = seen_sealed or bool(status.get("sealed"))
        time.sleep(0.2)
    detail = (
        f"{node} stayed sealed for {seconds:.0f} s" if seen_sealed else f"{node} never answered"
    )
    return _record(configuration, checks.CheckResult("node-stays-sealed", seen_sealed, detail))


def no_acknowledged_write_lost(configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stop the write ledger and read back every acknowledged write.

    After a restore from a snapshot, writes acknowledged after the snapshot was taken
    are the measured RPO (reported, not failed)."""
    current = drill(configuration)
    if current.ledger is None:
        return _record(
            configuration,
            checks.CheckResult("no-acknowledged-write-lost", True, "no write load running"),
        )
    try:  # after a restore from a snapshot, the snapshot's time is the RPO base
        report = current.verify_ledger(after_restore=True)
    except VaultdrError as exc:
        return _record(
            configuration, checks.CheckResult("no-acknowledged-write-lost", False, exc.message)
        )
    data = report.to_dict()
    detail = f"{data['acknowledged']} acknowledged writes, {len(data['lost'])} lost"
    if report.snapshot_taken_at is not None:
        detail += f"; RPO {data['rpo_writes']} writes / {data['rpo_seconds']:.1f} s (restore)"
    answer = _record(
        configuration, checks.CheckResult("no-acknowledged-write-lost", report.ok, detail)
    )
    return {**answer, "ledger": data}


def recovered_within(
    objective: float, phase: str = "rto", configuration: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The measured ``phase`` after the last fault (``rto`` by default, or ``unsealed``,
    ``leader``, ``healthy``...) is within ``objective`` seconds."""
    current = drill(configuration)
    objective = float(objective)
    recovery = current.recovery or (current.timeline.measure() if current.timeline else None)
    data = recovery.to_dict() if recovery else {}
    value = data.get(phase)
    label = "RTO" if phase == "rto" else phase
    if value is None:
        result = checks.CheckResult("recovered-within", False, f"no {label} was measured")
    else:
        result = checks.CheckResult(
            "recovered-within",
            float(value) <= objective,
            f"{label} {float(value):.2f} s (objective {objective:.0f} s)",
        )
    return {**_record(configuration, result), "recovery": data or None}
