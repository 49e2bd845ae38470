"""Probes: is the stack in the state a drill expects? Each answers with a verdict and why.

A check never raises for a bad answer from the stack: an unreachable node, a
sealed node or a refused login is a failed check with the reason in
``detail``, so a drill can report it. Nothing secret goes into ``detail``.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from vaultdr.agents.snapshot import list_snapshots
from vaultdr.envs.base import Environment
from vaultdr.errors import VaultdrError

PROBE_TIMEOUT = 3.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _node_states(env: Environment) -> dict[str, dict[str, Any] | str]:
    """Each node's seal status, or the error that kept it from answering."""

    def one(name: str) -> dict[str, Any] | str:
        try:
            return env.client(name).with_timeout(PROBE_TIMEOUT).read_seal_status()
        except VaultdrError as exc:
            return exc.message

    names = env.node_names()
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def all_unsealed(env: Environment) -> CheckResult:
    """Every node answers, initialized and unsealed."""
    bad = []
    for name, state in _node_states(env).items():
        if isinstance(state, str):
            bad.append(f"{name} unreachable")
        elif not state.get("initialized"):
            bad.append(f"{name} uninitialized")
        elif state.get("sealed"):
            bad.append(f"{name} sealed")
    return CheckResult("all-unsealed", not bad, "; ".join(bad) or "every node unsealed")


def sealed_nodes(env: Environment) -> list[str]:
    """Nodes that answer and say they are sealed."""
    return [
        name
        for name, state in _node_states(env).items()
        if isinstance(state, dict) and state.get("sealed")
    ]


def leader_elected(env: Environment) -> CheckResult:
    leader = env.leader()
    return CheckResult(
        "leader-elected", leader is not None, f"active node {leader}" if leader else "no leader"
    )


def raft_voters(env: Environment, token: str, expected: int | None = None) -> CheckResult:
    """Every node is a raft voter (autopilot's view from the active node)."""
    want = expected if expected is not None else len(env.node_names())
    try:
        servers = env.client(token=token).with_timeout(PROBE_TIMEOUT).read_raft_configuration()
    except VaultdrError as exc:
        return CheckResult("raft-voters", False, exc.message)
    voters = [s.get("node_id") for s in servers if s.get("voter")]
    return CheckResult(
        "raft-voters",
        len(voters) >= want,
        f"{len(voters)} of {want} voters: {', '.join(map(str, voters))}",
    )


def cluster_healthy(env: Environment, token: str) -> CheckResult:
    """Every node unsealed, exactly one active, every node a raft voter."""
    for check in (all_unsealed(env), leader_elected(env), raft_voters(env, token)):
        if not check.ok:
            return CheckResult("cluster-healthy", False, f"{check.name}: {check.detail}")
    return CheckResult("cluster-healthy", True, "unsealed, one active, all voters")


def kubernetes_login(
    env: Environment,
    *,
    namespace: str,
    service_account: str,
    role: str,
    read: str | None = None,
    audience: str = "vault",
    mount: str = "kubernetes",
) -> CheckResult:
    """A projected service-account token logs in with kubernetes auth and reads ``read``.

    ``read`` is ``<kv mount>/<path>`` of a kv-v2 secret (``secret/apps/web/config``).
    """
    name = f"kubernetes-login {namespace}/{service_account}"
    try:
        jwt = env.service_account_token(namespace, service_account, audiences=[audience])
        client = env.client().with_timeout(PROBE_TIMEOUT)
        token = client.login_kubernetes(role=role, jwt=jwt, mount=mount)
        if read:
            kv_mount, _, path = read.partition("/")
            if client.with_token(token).read_kv(kv_mount, path) is None:
                return CheckResult(name, False, f"logged in, but {read} is absent")
    except VaultdrError as exc:
        return CheckResult(name, False, exc.message)
    return CheckResult(
        name, True, f"role {role}: logged in" + (f" and read {read}" if read else "")
    )


def snapshot_fresh(env: Environment, max_age: float) -> CheckResult:
    """The newest snapshot of this cluster in S3 is younger than ``max_age`` seconds."""
    bucket, prefix = env.snapshot_location()
    try:
        found = list_snapshots(env.aws("admin"), bucket, prefix, env.cluster_id())
    except VaultdrError as exc:
        return CheckResult("snapshot-fresh", False, exc.message)
    if not found:
        return CheckResult("snapshot-fresh", False, f"no snapshot in s3://{bucket}/{prefix}")
    age = (dt.datetime.now(dt.UTC) - found[0].taken_at).total_seconds()
    return CheckResult(
        "snapshot-fresh",
        age <= max_age,
        f"newest {found[0].key} is {age:.0f} s old (limit {max_age:.0f} s)",
    )


def data_intact(env: Environment, token: str, expected: dict[str, dict[str, Any]]) -> CheckResult:
    """Each ``<mount>/<path>`` kv-v2 secret in ``expected`` reads back with exactly that data."""
    client = env.client(token=token).with_timeout(PROBE_TIMEOUT)
    wrong = []
    try:
        for where, data in expected.items():
            mount, _, path = where.partition("/")
            if client.read_kv(mount, path) != data:
                wrong.append(where)
    except VaultdrError as exc:
        return CheckResult("data-intact", False, exc.message)
    detail = f"{len(expected) - len(wrong)} of {len(expected)} secrets intact"
    if wrong:
        detail += f"; wrong or missing: {', '.join(wrong[:10])}"
    return CheckResult("data-intact", not wrong, detail)
