"""The agents inside the cluster: ``vaultdr agent snapshot|restore|configure`` in the ops chart's pods.

The same agent code as the local environment (:mod:`vaultdr.agents`), wired to
what the ops chart gives a pod: ``VAULTDR_VAULT_ADDR`` (the active service),
``VAULTDR_VAULT_CACERT``, ``VAULTDR_NODE_ADDRS`` (per-pod URLs in ordinal order),
``VAULTDR_STATEFULSET``, ``VAULTDR_NAMESPACE``, ``VAULTDR_SA_TOKEN_FILE`` (a
projected token with audience ``vault``), ``AWS_REGION`` and optionally
``AWS_ENDPOINT_URL``; AWS credentials come from boto3's default chain (IRSA on
eks, a Secret's env on kind), Kubernetes access from the pod's service account.

The watcher records each restore (snapshot key, sha256, age, phase timings; nothing
secret) as the StatefulSet's annotation ``vaultdr.io/last-restore``, where drills
read it from outside the cluster.

Health: the snapshot agent and the restore watcher beat a heartbeat file,
``$VAULTDR_STATE_DIR/heartbeat.json`` (:class:`Heartbeat`), whenever their loop makes
progress: at least every :data:`BEAT_EVERY` s while waiting for the next snapshot or
watch tick, before and after every snapshot, before a restore (which may take up to
:data:`RESTORE_BUDGET` s) and after it. ``vaultdr agent health --max-age S``
(:func:`check_health`, the ops chart's exec probes) fails when the last beat is older
than ``S`` (or than the budget the agent announced for its current work), so an agent
stuck in one snapshot or one API call is restarted, and a long snapshot interval is not
mistaken for a hang.

The restore target, in Kubernetes terms: *hold* a node = scale the StatefulSet
down so that only ordinal 0 runs (holding ordinal 0 itself deletes its pod, which
the StatefulSet restarts: the restore's "restart the first node"); *release* =
scale back to ``nodes``; *wipe* = delete the node's PVC and then its pod. Pods are
deleted gracefully (the chart's termination grace) and waited for until the old pod
is gone, so a new container never opens the raft database while the old one holds it.

Kubernetes access is the restore service account's Role in the ops chart
(templates/rbac.yaml): get and delete pods, patch the StatefulSet (its annotation) and
its scale, delete claims; nothing else. The snapshot and configure agents make no
Kubernetes API request.

Interlock beyond the restore's own: the watcher acts only when SSM holds the
break-glass root token of this cluster, i.e. after ``vaultdr up`` initialized it
once; an empty cluster being installed is not a loss.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultdr.agents.configure import SNAPSHOT_ROLE, KubernetesTarget, reconcile
from vaultdr.agents.restore import Restorer, RestoreRecord, RestoreSettings, cluster_is_empty
from vaultdr.agents.snapshot import (
    SnapshotAgent,
    SnapshotRecord,
    SnapshotSettings,
    sse_kms_key_id,
)
from vaultdr.aws import Aws, AwsTarget
from vaultdr.config import Stack
from vaultdr.envs.base import read_recovery_keys, read_root_token, ssm_path
from vaultdr.envs.kube.api import KubeApi
from vaultdr.errors import EXIT_NOT_GOOD, EXIT_OK, ConfigError, StackStateError, VaultdrError
from vaultdr.files import write_json_atomic
from vaultdr.polling import wait_for
from vaultdr.vault import VaultClient

log = logging.getLogger("vaultdr.agent")

#: The StatefulSet annotation the restore watcher records its last restore in (no secret).
RESTORE_ANNOTATION = "vaultdr.io/last-restore"
#: How long a deleted pod may take to go (the chart's termination grace, with room).
POD_GONE_TIMEOUT = 120.0
SERVICE_ACCOUNT_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
HEARTBEAT_FILE = "heartbeat.json"
#: An idle agent (waiting for its next snapshot or watch tick) beats at least this often.
BEAT_EVERY = 10.0
#: How long one restore may take before the health check calls the watcher hung.
RESTORE_BUDGET = 1800.0


def agent_work_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$VAULTDR_STATE_DIR`` (the ops chart sets /tmp/vaultdr), else <tmp>/vaultdr."""
    env = os.environ if environ is None else environ
    return Path(env.get("VAULTDR_STATE_DIR") or Path(tempfile.gettempdir()) / "vaultdr")


class Heartbeat:
    """The agent's heartbeat file: when its loop last made progress, and at what.

    Each beat records the UTC time, ``time.monotonic()`` (the same clock for every
    process of the container, so the health probe's age survives a wall-clock step),
    the pid, the activity and, for work that may run long, its budget in seconds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def beat(self, activity: str, *, budget: float | None = None) -> None:
        record: dict[str, Any] = {
            "utc": dt.datetime.now(dt.UTC).isoformat(),
            "monotonic": time.monotonic(),
            "pid": os.getpid(),
            "activity": activity,
        }
        if budget is not None:
            record["budget"] = budget
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, record)
        except OSError as exc:  # a full /tmp must not end the loop; the probe will say so
            log.warning("cannot write the heartbeat %s: %s", self.path, exc.strerror or exc)


class BeatingStop(threading.Event):
    """The agent's stop event: every wait on it beats the heartbeat (``waiting``) at least
    every ``every`` s, so a loop idle until its next tick stays healthy."""

    def __init__(self, heartbeat: Heartbeat, *, every: float = BEAT_EVERY) -> None:
        super().__init__()
        self.heartbeat = heartbeat
        self.every = every

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.heartbeat.beat("waiting")
            left = self.every if deadline is None else min(self.every, deadline - time.monotonic())
            if super().wait(max(0.0, left)):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False


def heartbeat_age(record: Mapping[str, Any], *, now: float | None = None) -> float:
    """Seconds since the beat ``record`` (by the monotonic clock)."""
    return (time.monotonic() if now is None else now) - float(record["monotonic"])


def check_health(path: Path, *, max_age: float) -> tuple[int, str]:
    """``vaultdr agent health``: (exit code, one line). 0 when the heartbeat is at most
    ``max_age`` s old (or within the budget the agent gave its current work); 1 when it
    is stale, missing or unreadable."""
    try:
        record = json.loads(path.read_text())
        age = heartbeat_age(record)
        activity = str(record.get("activity", "?"))
        limit = max(max_age, float(record.get("budget") or 0.0))
    except FileNotFoundError:
        return EXIT_NOT_GOOD, f"unhealthy: no heartbeat at {path} (the agent has not started)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return (
            EXIT_NOT_GOOD,
            f"unhealthy: the heartbeat {path} is unreadable ({type(exc).__name__})",
        )
    if not (math.isfinite(age) and math.isfinite(limit)) or age < 0:
        # A beat from another boot (the monotonic clock restarted) or a broken record.
        return EXIT_NOT_GOOD, f"unhealthy: the heartbeat {path} is not from this boot"
    if age > limit:
        return (
            EXIT_NOT_GOOD,
            f"unhealthy: no progress for {age:.0f} s ({activity}; limit {limit:.0f} s)",
        )
    return EXIT_OK, f"healthy: last progress {age:.0f} s ago ({activity})"


@dataclass(frozen=True)
class PodSettings:
    """What the ops chart passes an agent pod in its environment."""

    vault_addr: str
    ca_file: Path | None
    node_addrs: list[str]
    statefulset: str
    namespace: str
    sa_token_file: Path
    region: str
    aws_endpoint: str | None
    work_dir: Path

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> PodSettings:
        env = dict(os.environ if environ is None else environ)
        missing = [
            name
            for name in ("VAULTDR_VAULT_ADDR", "VAULTDR_NODE_ADDRS", "VAULTDR_STATEFULSET")
            if not env.get(name)
        ]
        if missing:
            raise ConfigError(
                f"the agent's pod has no {', '.join(missing)} in its environment",
                hint="run it from the vaultdr-ops chart, which sets them",
            )
        cacert = env.get("VAULTDR_VAULT_CACERT")
        return cls(
            vault_addr=env["VAULTDR_VAULT_ADDR"],
            ca_file=Path(cacert) if cacert else None,
            node_addrs=[a.strip() for a in env["VAULTDR_NODE_ADDRS"].split(",") if a.strip()],
            statefulset=env["VAULTDR_STATEFULSET"],
            namespace=env.get("VAULTDR_NAMESPACE", "vaultdr"),
            sa_token_file=Path(env.get("VAULTDR_SA_TOKEN_FILE", "/var/run/secrets/vaultdr/token")),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            aws_endpoint=env.get("AWS_ENDPOINT_URL") or None,
            work_dir=agent_work_dir(env),
        )

    def aws(self) -> Aws:
        return Aws(AwsTarget(self.region, self.aws_endpoint))


class PodRestoreTarget:
    """:class:`vaultdr.agents.restore.RestoreTarget` from inside the cluster."""

    def __init__(self, pod: PodSettings, stack: Stack, api: KubeApi, aws: Aws) -> None:
        self.pod = pod
        self.stack = stack
        self.api = api
        self.aws = aws

    def node_names(self) -> list[str]:
        return [f"{self.pod.statefulset}-{i}" for i in range(len(self.pod.node_addrs))]

    def node_client(self, name: str, *, token: str | None = None) -> VaultClient:
        address = self.pod.node_addrs[self.node_names().index(name)]
        return VaultClient(address, ca_file=self.pod.ca_file, token=token)

    def hold_node(self, name: str) -> None:
        """Ordinal 0: restart it, i.e. delete its pod gracefully and wait until the old pod is
        gone (the StatefulSet then starts a new one on the same claim; a force delete could
        start it while the old container still holds the raft database). Any other: scale
        the StatefulSet down to ordinal 0 and wait until the pod is gone."""
        ns = self.pod.namespace
        if name == self.node_names()[0]:
            self._delete_and_wait(name)
            return
        self.api.scale_statefulset(ns, self.pod.statefulset, 1)
        if not wait_for(lambda: self.api.read_pod(ns, name) is None, timeout=POD_GONE_TIMEOUT):
            raise StackStateError(
                f"pod {ns}/{name} was still there {POD_GONE_TIMEOUT:.0f} s after the scale-down",
                hint=f"look at it: kubectl -n {ns} describe pod {name}",
            )

    def release_node(self, name: str) -> None:
        if name != self.node_names()[0]:
            self.api.scale_statefulset(self.pod.namespace, self.pod.statefulset, self.stack.nodes)

    def wipe_node(self, name: str) -> None:
        """Delete the node's claim, then its pod (gracefully, waiting until it is gone): the
        claim goes with the pod and the StatefulSet brings the node back empty."""
        self.api.delete_pvc(self.pod.namespace, f"data-{name}")
        self._delete_and_wait(name)

    def _delete_and_wait(self, name: str) -> None:
        ns = self.pod.namespace
        before = self.api.read_pod(ns, name)
        self.api.delete_pod(ns, name)
        if before is not None and not self.api.wait_pod_gone(
            ns, name, before.uid, timeout=POD_GONE_TIMEOUT
        ):
            raise StackStateError(
                f"pod {ns}/{name} was still terminating {POD_GONE_TIMEOUT:.0f} s after its delete",
                hint=f"look at it: kubectl -n {ns} describe pod {name}",
            )

    def break_glass(self) -> tuple[str, list[str]]:
        cluster = self.stack.cluster
        return read_root_token(self.aws, cluster), read_recovery_keys(self.aws, cluster)

    def ca_pem(self) -> str:
        return self.pod.ca_file.read_text() if self.pod.ca_file else ""

    def configure(self) -> int:
        return configure_once(self.pod, self.stack, self.aws)


def kubernetes_target(stack: Stack) -> KubernetesTarget:
    """The cluster's API for the kubernetes auth method: the nodes review logins with their
    own service account's token (bound to ``system:auth-delegator`` by the ops chart)."""
    ca = SERVICE_ACCOUNT_CA.read_text() if SERVICE_ACCOUNT_CA.exists() else ""
    return KubernetesTarget(
        host="https://kubernetes.default.svc",
        ca_pem=ca,
        reviewer_jwt="",
        issuer=stack.kubernetes.issuer,
        local_jwt=True,
    )


def configure_once(pod: PodSettings, stack: Stack, aws: Aws) -> int:
    """Reconcile the configuration through the active service; the number of changes."""
    root = read_root_token(aws, stack.cluster)
    client = VaultClient(pod.vault_addr, ca_file=pod.ca_file, token=root)
    changes = reconcile(client, stack, kubernetes=kubernetes_target(stack))
    for change in changes:
        log.info("configure: %s", change)
    return len(changes)


def run_configure(stack: Stack, *, timeout: float = 600.0) -> int:
    """``vaultdr agent configure``: wait until the cluster serves, reconcile once; exit code."""
    pod = PodSettings.from_environ()
    aws = pod.aws()
    outcome: list[int] = []

    def attempt() -> bool:
        try:
            outcome.append(configure_once(pod, stack, aws))
        except VaultdrError as exc:
            log.warning("configure not yet possible: %s", exc.message)
            return False
        return True

    if not wait_for(attempt, timeout=timeout, interval=5.0):
        log.error("configure did not succeed within %.0f s", timeout)
        return 1
    log.info("configure made %d change(s)", outcome[-1])
    return 0


class BeatingSnapshotAgent(SnapshotAgent):
    """The snapshot agent beating its heartbeat before and after each snapshot."""

    heartbeat: Heartbeat | None = None

    def run_once(self) -> SnapshotRecord | None:
        if self.heartbeat is None:
            return super().run_once()
        self.heartbeat.beat("snapshot")
        try:
            return super().run_once()
        finally:
            self.heartbeat.beat("snapshot done")


def snapshot_agent(pod: PodSettings, stack: Stack) -> SnapshotAgent:
    auth = stack.configure.auth.kubernetes
    settings = SnapshotSettings(
        cluster=stack.cluster,
        addresses=pod.node_addrs,
        ca_file=pod.ca_file,
        bucket=stack.snapshots.bucket,
        prefix=stack.snapshots.prefix,
        retain_last=stack.snapshots.retain.last,
        retain_daily=stack.snapshots.retain.daily,
        kms_key_id=sse_kms_key_id(stack),
        role=SNAPSHOT_ROLE,
        auth_mount=auth.path if auth else "kubernetes",
        status_file=pod.work_dir / "snapshot.json",
        work_dir=pod.work_dir / "tmp",
    )

    def jwt_source() -> str:
        return pod.sa_token_file.read_text().strip()

    agent = BeatingSnapshotAgent(settings, aws=pod.aws(), jwt_source=jwt_source)
    agent.heartbeat = Heartbeat(pod.work_dir / HEARTBEAT_FILE)
    return agent


def _stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    stop = threading.Event() if stop is None else stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_snapshot(stack: Stack) -> int:
    """``vaultdr agent snapshot``: a snapshot every ``snapshots.interval`` until SIGTERM."""
    pod = PodSettings.from_environ()
    heartbeat = Heartbeat(pod.work_dir / HEARTBEAT_FILE)
    heartbeat.beat("starting")
    stop = _stop_on_signals(BeatingStop(heartbeat))
    snapshot_agent(pod, stack).run_forever(stop, stack.snapshots.interval)
    return 0


def restore_settings(pod: PodSettings, stack: Stack) -> RestoreSettings:
    return RestoreSettings(
        bucket=stack.snapshots.bucket,
        prefix=stack.snapshots.prefix,
        max_age=stack.restore.max_age,
        recovery_shares=stack.init.recovery_shares,
        recovery_threshold=stack.init.recovery_threshold,
        expected_cluster_id=None,
        work_dir=pod.work_dir / "restore",
        stabilization=stack.raft.autopilot_stabilization,
    )


def run_restore_watcher(stack: Stack) -> int:
    """``vaultdr agent restore``: restore by itself when every node answers empty twice."""
    pod, api = PodSettings.from_environ(), KubeApi.in_cluster()
    aws = pod.aws()
    target = PodRestoreTarget(pod, stack, api, aws)
    heartbeat = Heartbeat(pod.work_dir / HEARTBEAT_FILE)
    heartbeat.beat("starting")
    stop = _stop_on_signals(BeatingStop(heartbeat))
    empty = 0
    while not stop.wait(stack.restore.watch_interval):
        empty = empty + 1 if cluster_is_empty(target) else 0
        if empty < 2:
            continue
        empty = 0
        if not aws.parameter_exists(ssm_path(stack.cluster, "root-token")):
            log.info("empty cluster, but no break-glass material yet: not a loss, no restore")
            continue
        log.warning("every node is empty: restoring from the newest good snapshot")
        heartbeat.beat("restore", budget=RESTORE_BUDGET)
        try:
            record = Restorer(target, aws, restore_settings(pod, stack)).run()
            if isinstance(record, RestoreRecord):
                log.warning("auto-restore finished in %.1f s", record.total_seconds)
                api.annotate_statefulset(
                    pod.namespace, pod.statefulset, RESTORE_ANNOTATION, json.dumps(record.to_dict())
                )
        except VaultdrError as exc:
            log.error("auto-restore failed: %s", exc.message)
            stop.wait(15.0)
    return 0
