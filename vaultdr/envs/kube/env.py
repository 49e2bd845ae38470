"""The kube environments: the stack on a real cluster, ``--env kind`` and ``--env eks``.

The nodes are the pods of the official OpenBao (or HashiCorp Vault) chart's
StatefulSet in ``kube.namespace``, named after the chart's fullname (``kube.release``
when it contains the chart's name, else ``<release>-openbao``; the values file's
``fullnameOverride`` wins: :func:`~vaultdr.envs.kube.deploy.chart_fullname`); each
pod's volume is its PVC ``data-<pod>``.
vaultdr reaches a node's API through a port-forward to the pod (``kube.access:
port-forward``, the default, from a laptop or CI) or through the chart's
internal service (``service``, from inside the cluster network).

Faults act through the Kubernetes API (and IAM for KMS), with these blast radii:

* kill-node / kill-leader: DELETE the pod without ``gracePeriodSeconds``, as an
  outage's eviction or a kubelet stops it: the pod's own termination grace applies
  (the chart's preStop, then SIGTERM), and the StatefulSet recreates it on the same
  PVC only once the old pod is gone, so the old container has let go of the raft
  database. force-delete-pod sends ``gracePeriodSeconds=0``: the pod object goes at
  once and its replacement may start while the old container still holds the data
  (OpenBao opens its bolt file with a 1 s lock timeout). The leader is the pod the engine's
  service registration labels active (``openbao-active=true``, ``vault-active=true``
  for HashiCorp Vault), confirmed with the engine's own ``sys/leader``.
* delete-volume: DELETE the PVC ``data-<pod>`` and *then* the pod. The
  ``kubernetes.io/pvc-protection`` finalizer holds the PVC until its pod is gone,
  so the StatefulSet recreates both, the volume empty. delete-all-volumes does
  that to every node (total loss).
* revoke-kms: an explicit IAM Deny of ``kms:Decrypt``/``kms:Encrypt`` as the
  inline policy ``vaultdr-revoke-kms`` on ``kube.seal_principal`` (the seal's IRSA
  role on eks, the seal's IAM user in the in-cluster emulator on kind), the same
  policy the local environment uses. It returns only once the deny is in force (IAM
  is eventually consistent): a KMS Decrypt with the seal principal's *own*
  credentials (kind: its Secret's keys; eks: the seal role through IRSA, as the
  server pod gets it) is refused. Undone by restore-kms / ``vaultdr rollback``,
  which are never refused.
* freeze-node / thaw-node: an exec in the pod's engine container (pods/exec) of
  ``kill -STOP $(pidof bao)`` / ``-CONT`` (``pidof vault`` for HashiCorp Vault). The
  engine is not PID 1 there: the official charts start it under ``/bin/sh -ec`` and
  their own preStop signals ``$(pidof bao)`` (openbao-helm 0.27.0 and vault-helm
  0.30.1, templates/server-statefulset.yaml); PID 1 would ignore a SIGSTOP sent from
  inside its PID namespace, so that case is refused. The frozen pod's uid is
  journaled (``frozen.json`` in the state directory) before the signal; thaw acts
  only on that same pod (a replaced pod was never frozen). Blast radius: one pod
  keeps its sockets and answers nothing until thawed, or until the kubelet replaces it.

Safety: every destructive fault first passes :meth:`KubeEnvironment.check_destructive`.
On kind, the current kube context must be the kind cluster's (``kind-<name>``).
On eks, the namespace must carry the annotation
``vaultdr.io/allow-destructive-faults: "true"`` *and* the command must name the
current context (``--i-know-this-breaks CONTEXT`` or ``$VAULTDR_I_KNOW_THIS_BREAKS``).
With ``dry_run`` the environment records every change it would make
(:attr:`KubeEnvironment.planned`) and sends no mutating request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from vaultdr import statedir
from vaultdr.agents.configure import KubernetesTarget
from vaultdr.agents.snapshot import sse_kms_key_id
from vaultdr.aws import Aws, AwsTarget
from vaultdr.config import Kube, Stack
from vaultdr.envs import common
from vaultdr.envs.base import NodeStatus, StackStatus
from vaultdr.envs.common import SA_AUDIENCE, EnvironmentBase
from vaultdr.envs.diagnostics import Diagnostics, DiagnosticsWriter
from vaultdr.envs.kube import deploy
from vaultdr.envs.kube.agents import RESTORE_ANNOTATION
from vaultdr.envs.kube.api import KubeApi, PortForwarder
from vaultdr.errors import ConfigError, FaultError, Refused, StackStateError, VaultdrError
from vaultdr.files import write_json_atomic
from vaultdr.polling import wait_for
from vaultdr.principals import REVOKE_KMS_POLICY, seal_alias
from vaultdr.vault import VaultClient, keep_alive_session

log = logging.getLogger("vaultdr.kube")

VAULT_PORT = 8200
ALLOW_ANNOTATION = "vaultdr.io/allow-destructive-faults"
CONFIRM_ENV_VAR = "VAULTDR_I_KNOW_THIS_BREAKS"
CONFIRM_FLAG = "--i-know-this-breaks"
#: Faults that change nothing or undo a change: never refused, never confirmed.
HARMLESS_FAULTS = frozenset({"restore-kms", "thaw-node"})
VOLUME_WAIT = 120.0
#: The ops chart's name: its pods' ``app.kubernetes.io/name`` label.
OPS_CHART_NAME = "vaultdr-ops"
#: Diagnostics keep, of each container's log, at most these last lines and bytes.
DIAGNOSTICS_TAIL_LINES = 2000
DIAGNOSTICS_LIMIT_BYTES = 256 * 1024
#: How often the nodes' CA is read again from a cert-manager-issued TLS Secret (seconds).
CA_REFRESH = 30.0


#: The state directory's record of the pods freeze-node stopped: node -> pod uid.
FROZEN_FILE = "frozen.json"
#: Exit codes of :func:`signal_script` (127 is the shell's own "command not found").
EXIT_NO_PIDOF, EXIT_NO_PROCESS, EXIT_PID_ONE = 127, 3, 4
_SIGNAL_FAILURES = {
    EXIT_NO_PIDOF: (
        "pidof is not in the container, so the {process} process cannot be found",
        "use an engine image with pidof (the official images have it), or kill-node instead",
    ),
    EXIT_NO_PROCESS: (
        "no {process} process runs in the container",
        "is the pod running the engine? kubectl -n {ns} logs {node}",
    ),
    EXIT_PID_ONE: (
        "{process} is PID 1 of the container: a SIGSTOP sent from inside its PID "
        "namespace is ignored",
        "run the engine under a shell as the official chart does, or use kill-node",
    ),
    -1: (
        "the command could not run (no sh in the container?)",
        "look at the pod's image: kubectl -n {ns} get pod {node} -o yaml",
    ),
}


def signal_script(process: str, signal_name: str) -> str:
    """The shell script freeze/thaw execs: signal every ``process`` that is not PID 1 and
    print their pids; exits 127/3/4 when pidof, the process or a non-PID-1 one is missing."""
    return (
        f"command -v pidof >/dev/null 2>&1 || {{ echo 'no pidof' >&2; exit {EXIT_NO_PIDOF}; }}; "
        f"pids=$(pidof {process}) || {{ echo 'no {process}' >&2; exit {EXIT_NO_PROCESS}; }}; "
        f"for pid in $pids; do [ \"$pid\" != 1 ] || {{ echo 'PID 1' >&2; exit {EXIT_PID_ONE}; }}; done; "
        f"kill -{signal_name} $pids && echo $pids"
    )


class DestructiveFaultRefused(Refused):
    """A destructive fault on a real cluster was not confirmed; nothing was changed."""


class SignalFailed(FaultError):
    """freeze-node/thaw-node could not signal the engine in its pod."""

    exit_code_in_pod: int = 0


def active_label(engine_kind: str) -> str:
    """The label the engine's Kubernetes service registration puts on the active pod."""
    return "vault-active" if engine_kind == "vault" else "openbao-active"


def seal_principal_kind(principal: str) -> tuple[str, str]:
    """("role" | "user", name) of an IAM role/user ARN or a bare IAM user name."""
    if principal.startswith("arn:"):
        resource = principal.split(":", 5)[-1]
        kind, _, path = resource.partition("/")
        if kind in ("role", "user") and path:
            return kind, path.rsplit("/", 1)[-1]
        raise ConfigError(
            f"kube.seal_principal {principal!r} is neither an IAM role nor an IAM user ARN",
            hint="use the seal's IRSA role ARN (eks) or the seal's IAM user name (kind)",
        )
    return "user", principal


class KubeEnvironment(EnvironmentBase):
    """The stack in ``kube.namespace`` of a real cluster; see the module docstring.
    :class:`~vaultdr.envs.kube.clusters.KindEnvironment` and
    :class:`~vaultdr.envs.kube.clusters.EksEnvironment` add each cluster's safety rule."""

    name = "kube"

    def __init__(
        self,
        state_dir: Path,
        stack: Stack,
        *,
        stack_file: str = "",
        api: KubeApi | None = None,
        kubeconfig: str | None = None,
        confirm_context: str | None = None,
        dry_run: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.stack = stack
        self.stack_file = stack_file
        self.kube: Kube = stack.kube or Kube()
        self.kubeconfig = kubeconfig
        self.confirm_context = (
            confirm_context if confirm_context is not None else os.environ.get(CONFIRM_ENV_VAR)
        )
        self.dry_run = dry_run
        self.planned: list[str] = []
        self._api = api
        self._forwarders: dict[tuple[str, int], PortForwarder] = {}
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()
        self._allowed = False
        self._aws: dict[str, Aws] = {}
        self._fullname: str | None = None
        self._ca_lock = threading.Lock()
        self._ca_read_at = 0.0

    # --- plumbing ---------------------------------------------------------------------------
    @property
    def api(self) -> KubeApi:
        if self._api is None:
            self._api = KubeApi.from_kubeconfig(
                context=self.kube.context, kubeconfig=self.kubeconfig
            )
        return self._api

    @property
    def namespace(self) -> str:
        return self.kube.namespace

    def current_context(self) -> str | None:
        return self.api.context

    def stack_config(self) -> Stack:
        return self.stack

    def cluster_name(self) -> str:
        return self.stack.cluster

    def events_file(self) -> Path | None:
        """None: the pods' events stay in the cluster; the timeline polls the nodes."""
        return None

    def agent_status(self) -> dict[str, str]:
        """Empty: the in-cluster agents (the ops chart's CronJob and restore watcher) are
        not looked at from here."""
        return {}

    def close(self) -> None:
        """Close the kept-alive connections and stop the port-forwards this environment opened."""
        with self._lock:
            forwarders, self._forwarders = list(self._forwarders.values()), {}
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        for forwarder in forwarders:
            forwarder.close()

    def _change(self, description: str) -> bool:
        """Record a change; True when it is to be made (False in a dry run)."""
        self.planned.append(description)
        if self.dry_run:
            log.info("dry run: would %s", description)
        return not self.dry_run

    # --- nodes and addresses ----------------------------------------------------------------
    def node_names(self) -> list[str]:
        """The StatefulSet's pods, ``<fullname>-0`` .. ``<fullname>-N-1``."""
        return [f"{self.statefulset()}-{i}" for i in range(self.stack.nodes)]

    def node_addresses(self) -> list[str]:
        return [self.node_address(n) for n in self.node_names()]

    def statefulset(self) -> str:
        """The official chart's fullname (:func:`~vaultdr.envs.kube.deploy.chart_fullname`),
        which names the StatefulSet, its pods and services; read once."""
        if self._fullname is None:
            self._fullname = deploy.chart_fullname(self)
        return self._fullname

    def pod_selector(self) -> str:
        """The server pods' labels: the chart sets ``app.kubernetes.io/instance`` to the
        release name (not the fullname) and ``component: server``."""
        return f"app.kubernetes.io/instance={self.kube.release},component=server"

    def node_address(self, node: str) -> str:
        """The URL of ``node``'s API: a port-forward on 127.0.0.1, or the internal service."""
        if self.kube.access == "service":
            fullname, ns = self.statefulset(), self.namespace
            return f"https://{node}.{fullname}-internal.{ns}.svc:{VAULT_PORT}"
        return f"https://127.0.0.1:{self._forward(node, VAULT_PORT)}"

    def _forward(self, pod: str, port: int) -> int:
        with self._lock:
            forwarder = self._forwarders.get((pod, port))
            if forwarder is None:
                forwarder = PortForwarder(self.api, self.namespace, pod, port)
                self._forwarders[(pod, port)] = forwarder
            return forwarder.local_port

    def ca_file(self) -> Path:
        """The CA of the nodes' TLS: written by ``up``, else read from the TLS Secret.

        When cert-manager issues the Secret (``kube.tls_source: cert-manager``, or ``up``
        found a Secret cert-manager manages) the CA is read from the Secret again at most
        every :data:`CA_REFRESH` seconds and the file replaced (atomically) when it changed,
        so a rotation by cert-manager does not leave the drills trusting an old CA."""
        if self.kube.tls_source == "cert-manager" or deploy.tls_from_cert_manager(self):
            return self._ca_from_secret(self.state_dir / "ca" / "cluster-ca.pem")
        path = self.state_dir / "ca" / "ca.pem"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self._read_secret_ca())
        return path

    def _read_secret_ca(self) -> str:
        data = self.api.read_secret_data(self.namespace, self.kube.tls_secret)
        if not data.get("ca.crt"):
            raise StackStateError(
                f"secret {self.namespace}/{self.kube.tls_secret} has no ca.crt",
                hint="run `vaultdr up` for this environment, which creates it (with "
                "cert-manager: use an Issuer that fills ca.crt, e.g. the ops chart's own CA)",
            )
        return data["ca.crt"]

    def _ca_from_secret(self, path: Path) -> Path:
        with self._ca_lock:
            now = time.monotonic()
            if path.exists() and now - self._ca_read_at < CA_REFRESH:
                return path
            ca = self._read_secret_ca()
            if not path.exists() or path.read_text() != ca:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(ca)
                tmp.replace(path)
                log.info("the nodes' CA (secret %s) is new: re-read", self.kube.tls_secret)
            self._ca_read_at = now
            return path

    def client(self, node: str | None = None, *, token: str | None = None) -> VaultClient:
        """A client of ``node`` (the leader when None) on the node's kept-alive connections."""
        name = node or self.leader() or self.node_names()[0]
        return self._client(name, token=token)

    def _client(self, node: str, *, token: str | None = None, timeout: float = 10.0) -> VaultClient:
        address, ca_file = self.node_address(node), self.ca_file()
        with self._lock:
            session = self._sessions.get(address)
            if session is None:
                session = self._sessions[address] = keep_alive_session(ca_file)
        return VaultClient(address, ca_file=ca_file, token=token, timeout=timeout, session=session)

    def leader(self) -> str | None:
        """The pod labelled active, confirmed by its own ``sys/leader``; else whoever says is_self."""
        label = active_label(self.stack.engine.kind)
        labelled = self.api.list_pods(self.namespace, f"{self.pod_selector()},{label}=true")
        for pod in labelled:
            if pod.name in self.node_names() and not pod.deleting and self._is_self(pod.name):
                return pod.name
        names = self.node_names()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            answers = list(pool.map(self._is_self, names))
        return next((n for n, yes in zip(names, answers, strict=True) if yes), None)

    def _is_self(self, node: str) -> bool:
        try:
            return bool(self._client(node, timeout=2.0).read_leader().get("is_self"))
        except VaultdrError:
            return False

    # --- AWS, service accounts, break-glass -----------------------------------------------------
    def aws(self, principal: str = "admin") -> Aws:
        """AWS as ``principal`` (admin, seal, snapshot, restore, configure): the default chain on eks, the
        emulator's keys (from their Secrets) on kind."""
        with self._lock:
            found = self._aws.get(principal)
        if found is None:
            found = Aws(self._aws_target(principal))
            with self._lock:
                self._aws[principal] = found
        return found

    def _aws_target(self, principal: str) -> AwsTarget:
        """boto3's default chain (IRSA, profile, environment) for every principal."""
        return AwsTarget(region=self.stack.region, endpoint_url=self.kube.aws_endpoint)

    def service_account_token(
        self, namespace: str, name: str, *, audiences: list[str] | None = None, ttl: int = 3600
    ) -> str:
        """A token for ``namespace/name`` from the TokenRequest API (audience ``vault``)."""
        return self.api.request_token(
            namespace, name, audiences=audiences or [SA_AUDIENCE], ttl_seconds=ttl
        )

    def kubernetes_target(self, stack: Stack | None = None) -> KubernetesTarget:
        """The cluster's own API as the kubernetes auth method must see it, from inside.

        The nodes review logins with their own service account's token (the ops chart
        binds it to ``system:auth-delegator``), so no long-lived reviewer token is made.
        """
        ca = self.api.read_configmap_data(self.namespace, "kube-root-ca.crt").get("ca.crt", "")
        return KubernetesTarget(
            host="https://kubernetes.default.svc",
            ca_pem=ca,
            reviewer_jwt="",
            issuer=(stack or self.stack).kubernetes.issuer,
            local_jwt=True,
        )

    def cluster_id(self) -> str | None:
        try:
            return str(self.client().read_health().get("cluster_id", "")) or None
        except VaultdrError:
            return None

    def snapshot_location(self) -> tuple[str, str]:
        return self.stack.snapshots.bucket, self.stack.snapshots.prefix

    def last_restore(self) -> dict[str, Any] | None:
        """The in-cluster restore watcher's last record (the StatefulSet's annotation)."""
        annotations = self.api.read_statefulset_annotations(self.namespace, self.statefulset())
        raw = annotations.get(RESTORE_ANNOTATION)
        try:
            return dict(json.loads(raw)) if raw else None
        except ValueError:
            return None

    def kms_key_id(self) -> str:
        return self.kube.kms_key_id or seal_alias(self.stack.cluster)

    def snapshot_kms_key_id(self) -> str:
        """The snapshots' SSE-KMS key, as the in-cluster snapshot agent picks it."""
        return sse_kms_key_id(self.stack)

    # --- status -------------------------------------------------------------------------------
    def status(self, *, quick: bool = False) -> StackStatus:
        pods = {p.name: p for p in self.api.list_pods(self.namespace, self.pod_selector())}
        voters = self.read_voters()
        nodes = [self._node_status(name, pods, voters) for name in self.node_names()]
        extras: dict[str, Any] = {
            "context": self.current_context(),
            "namespace": self.namespace,
            "state_dir": str(self.state_dir),
        }
        kms: bool | None = None
        if not quick and self.stack.seal.type == "awskms":
            try:
                kms = self.aws("seal").key_reachable(self.kms_key_id())
                extras["kms_access"] = "revoked" if self.kms_revoked() else "allowed"
            except VaultdrError:
                kms, extras["kms_access"] = False, "unknown"
        return StackStatus(
            environment=self.name,
            cluster=self.stack.cluster,
            seal=self.stack.seal.type,
            kms_reachable=kms,
            nodes=nodes,
            extras=extras,
        )

    def _node_status(self, name: str, pods: dict[str, Any], voters: dict[str, bool]) -> NodeStatus:
        pod = pods.get(name)
        running = bool(pod and pod.phase == "Running" and not pod.deleting)
        address = self.node_address(name)
        if not running:
            return NodeStatus(name, address, False, error="pod not running")
        return self.probe_node(name, address, running=running, voters=voters)

    # --- safety ----------------------------------------------------------------------------------
    def check_destructive(self, fault: str) -> None:
        """Raise :class:`DestructiveFaultRefused` unless this cluster may be broken on purpose.

        A dry run changes nothing, so it is not refused (it says when the fault would be)."""
        if fault in HARMLESS_FAULTS or self._allowed or self.dry_run:
            return
        self._check_destructive(fault)
        self._allowed = True

    def _check_destructive(self, fault: str) -> None:
        context = self.current_context()
        expected = self.kube.context
        if expected and context != expected:
            raise DestructiveFaultRefused(
                f"refusing {fault}: the current kube context is {context!r}, "
                f"but stack.yaml's kube.context is {expected!r}",
                hint=f"switch to it (`kubectl config use-context {expected}`) or fix kube.context",
            )

    # --- fault primitives ------------------------------------------------------------------------
    def kill_node(self, node: str) -> None:
        """DELETE the node's pod gracefully (its own termination grace); the StatefulSet
        recreates it once the old pod is gone."""
        self.check_destructive("kill-node")
        self._delete_pod(node)

    def force_delete_node(self, node: str) -> None:
        """DELETE the node's pod with gracePeriodSeconds=0: the object goes at once, the
        StatefulSet starts the replacement while the old container may still run."""
        self.check_destructive("force-delete-pod")
        self._delete_pod(node, force=True)

    def _delete_pod(self, node: str, *, force: bool = False) -> None:
        how = "gracePeriodSeconds=0: force" if force else "graceful: the pod's termination grace"
        if self._change(f"delete pod {self.namespace}/{node} ({how})"):
            self.api.delete_pod(self.namespace, node, grace_seconds=0 if force else None)

    def kill_nodes(self, names: list[str]) -> None:
        """DELETE several pods at the same moment (each with its termination grace)."""
        self.check_destructive("kill-nodes")
        self._at_once(self._delete_pod, names)

    def _at_once(self, action: Callable[[str], None], names: list[str]) -> None:
        if self.dry_run:
            for name in names:
                action(name)
            return
        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            list(pool.map(action, names))

    def pvc_name(self, node: str) -> str:
        """The pod's claim from the chart's ``volumeClaimTemplates`` entry ``data``:
        ``data-<pod>`` (the StatefulSet controller names claims ``<template>-<pod>``)."""
        return f"data-{node}"

    def delete_volume(self, node: str) -> None:
        """DELETE PVC ``data-<pod>``, then the pod; wait until the old PVC is really gone."""
        self.check_destructive("delete-volume")
        self._delete_volumes([node])

    def delete_all_volumes(self) -> None:
        """Total loss: every PVC, then every pod; the StatefulSet brings them all back empty."""
        self.check_destructive("delete-all-volumes")
        self._delete_volumes(self.node_names())

    def _delete_volumes(self, nodes: list[str]) -> None:
        ns = self.namespace
        old = {} if self.dry_run else {n: self.api.read_pvc(ns, self.pvc_name(n)) for n in nodes}
        for node in nodes:
            if self._change(f"delete pvc {ns}/{self.pvc_name(node)}"):
                self.api.delete_pvc(ns, self.pvc_name(node))
        self._at_once(self._delete_pod, nodes)
        if self.dry_run:
            return
        for node in nodes:
            before = old[node]
            if before is not None:
                self._wait_pvc_replaced(node, before.uid)

    def _wait_pvc_replaced(self, node: str, old_uid: str) -> None:
        """Wait until ``data-<node>`` is no longer the old claim; a pod the StatefulSet
        recreated while the old claim was still terminating is deleted once more."""
        ns, claim = self.namespace, self.pvc_name(node)

        def replaced() -> bool:
            pvc = self.api.read_pvc(ns, claim)
            return pvc is None or pvc.uid != old_uid

        if not wait_for(replaced, timeout=VOLUME_WAIT, interval=0.5):
            raise StackStateError(
                f"pvc {ns}/{claim} was still not deleted after {VOLUME_WAIT:.0f} s",
                hint=f"look at its finalizers: `kubectl -n {ns} get pvc {claim} -o yaml`",
            )
        time.sleep(0.5)
        pod = self.api.read_pod(ns, node)
        if self.api.read_pvc(ns, claim) is None and pod is not None and pod.phase == "Pending":
            self.api.delete_pod(ns, node)

    def release_nodes(self, names: list[str]) -> None:
        """Scale the StatefulSet back to ``nodes`` replicas if a hold left it smaller."""
        spec, _ = self.api.read_statefulset_replicas(self.namespace, self.statefulset())
        if spec < self.stack.nodes and self._change(
            f"scale statefulset {self.namespace}/{self.statefulset()} to {self.stack.nodes}"
        ):
            self.api.scale_statefulset(self.namespace, self.statefulset(), self.stack.nodes)

    def freeze_node(self, node: str) -> tuple[int, int]:
        """SIGSTOP the engine's process in the node's pod by exec; (its pid in the pod, 0).

        The pod's uid is journaled first, so that thaw (or the rollback) finds it even if
        this process dies right after the signal."""
        self.check_destructive("freeze-node")
        pod = self.api.read_pod(self.namespace, node)
        if pod is None or pod.phase != "Running" or pod.deleting:
            raise StackStateError(
                f"pod {self.namespace}/{node} is not running: there is nothing to freeze",
                hint=f"wait until it runs: kubectl -n {self.namespace} get pod {node}",
            )
        process = self._engine_process()
        if not self._change(
            f"exec in pod {self.namespace}/{node}: kill -STOP $(pidof {process}) "
            "(thaw-node or rollback sends SIGCONT)"
        ):
            return 0, 0
        self._journal_frozen(node, pod.uid)
        try:
            pids = self._signal_engine(node, "STOP")
        except SignalFailed:
            self._journal_frozen(node, None)  # the script stops before `kill` on every failure
            raise
        return pids[0], 0

    def thaw_node(self, node: str, pid: int | None = None, start_time: int | None = None) -> bool:
        """SIGCONT the engine in the pod freeze-node stopped, by exec; False when there is
        no such freeze or that pod is gone (its replacement was never frozen)."""
        uid = self._frozen().get(node)
        if uid is None:
            return False
        pod = self.api.read_pod(self.namespace, node)
        if pod is None or pod.uid != uid:
            self._journal_frozen(node, None)
            return False
        if not self._change(
            f"exec in pod {self.namespace}/{node}: kill -CONT $(pidof {self._engine_process()})"
        ):
            return True
        try:
            self._signal_engine(node, "CONT")
        except SignalFailed as exc:
            if exc.exit_code_in_pod != EXIT_NO_PROCESS:
                raise
            self._journal_frozen(node, None)
            return False
        self._journal_frozen(node, None)
        return True

    def _engine_process(self) -> str:
        """The engine's process (and container) name: ``bao``/``openbao`` or ``vault``."""
        return "vault" if self.stack.engine.kind == "vault" else "bao"

    def _signal_engine(self, node: str, signal_name: str) -> list[int]:
        process = self._engine_process()
        container = "vault" if process == "vault" else "openbao"
        result = self.api.exec_in_pod(
            self.namespace,
            node,
            ["sh", "-c", signal_script(process, signal_name)],
            container=container,
        )
        where = f"the {container} container of {self.namespace}/{node}"
        if result.exit_code == 0:
            return [int(p) for p in result.stdout.split() if p.isdigit()] or [0]
        problem, hint = _SIGNAL_FAILURES.get(
            result.exit_code,
            (
                f"kill -{signal_name} failed (exit code {result.exit_code}: "
                f"{(result.stderr or result.error).strip()[:200]})",
                f"look at the pod: kubectl -n {self.namespace} describe pod {node}",
            ),
        )
        error = SignalFailed(
            f"freeze-node/thaw-node in {where}: {problem.format(process=process)}",
            hint=hint.format(ns=self.namespace, node=node),
        )
        error.exit_code_in_pod = result.exit_code
        raise error

    def _frozen_file(self) -> Path:
        return self.state_dir / FROZEN_FILE

    def _frozen(self) -> dict[str, str]:
        try:
            return {str(k): str(v) for k, v in json.loads(self._frozen_file().read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _journal_frozen(self, node: str, uid: str | None) -> None:
        """Record (or, with None, forget) the uid of the pod frozen for ``node``."""
        with self._lock:
            frozen = self._frozen()
            if uid is None:
                frozen.pop(node, None)
            else:
                frozen[node] = uid
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_json_atomic(self._frozen_file(), frozen)

    def revoke_kms(self) -> None:
        """Attach the explicit Deny of kms:Decrypt/kms:Encrypt to the seal's principal, and
        return once the seal's own credentials are refused a Decrypt."""
        self.check_destructive("revoke-kms")
        kind, name = self._seal_principal()
        if self._change(
            f"attach IAM {kind} policy {REVOKE_KMS_POLICY} (Deny kms:Decrypt, kms:Encrypt) to {name}"
        ):
            # Then wait, as the seal itself, until the deny is in force (IAM is eventually
            # consistent): a node restarted before that could still unseal.
            common.revoke_kms(
                self.aws(),
                name,
                kind=kind,
                seal=self.aws("seal"),
                key_id=self.kms_key_id(),
                timeout=common.REVOKE_WAIT,
            )

    def restore_kms(self) -> None:
        """Remove the Deny (idempotent; never refused: it is the rollback)."""
        kind, name = self._seal_principal()
        if self._change(f"remove IAM {kind} policy {REVOKE_KMS_POLICY} from {name}"):
            common.restore_kms(self.aws(), name, kind=kind)

    def kms_revoked(self) -> bool:
        kind, name = self._seal_principal()
        return common.kms_revoked(self.aws(), name, kind=kind)

    def _seal_principal(self) -> tuple[str, str]:
        if self.stack.seal.type != "awskms":
            raise ConfigError(
                f"revoke-kms on {self.name} needs seal.type awskms (it is {self.stack.seal.type})",
                hint="the transit seal's revoke is local-only",
            )
        if not self.kube.seal_principal:
            raise ConfigError(
                "kube.seal_principal is not set: revoke-kms does not know whose KMS access to deny",
                hint="set it in stack.yaml: the seal's IRSA role ARN (eks) or IAM user (kind)",
            )
        return seal_principal_kind(self.kube.seal_principal)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Within the block every primitive records the request it would send, and sends
        none (the fault catalogue's dry run: the same code, only recorded)."""
        was, self.dry_run, self.planned = self.dry_run, True, []
        try:
            yield self.planned
        finally:
            self.dry_run = was

    def refusal(self, fault: str) -> str | None:
        """Why ``fault`` would be refused here without a dry run, or None."""
        if fault in HARMLESS_FAULTS:
            return None
        try:
            self._check_destructive(fault)
        except DestructiveFaultRefused as exc:
            return f"(without the dry run this would be refused: {exc.message}; {exc.hint})"
        except VaultdrError as exc:
            return f"(whether it would be refused is unknown: {exc.message})"
        return None

    # --- up / down ---------------------------------------------------------------------------------
    def up(self) -> StackStatus:
        deploy.deploy(self)
        return self.status()

    def down(self, *, keep_data: bool = False) -> None:
        deploy.teardown(self, keep_data=keep_data)

    def plan_up(self) -> list[str]:
        """Every step of ``up``, command lines included; runs none."""
        return deploy.run_plan(deploy.plan_up(self), dry_run=True)

    def plan_down(self, *, keep_data: bool = False) -> list[str]:
        """Every step of ``down``, command lines included; runs none."""
        return deploy.run_plan(deploy.plan_down(self, keep_data=keep_data), dry_run=True)

    @contextlib.contextmanager
    def claimed_for_up(self) -> Iterator[None]:
        """The state directory claimed as vaultdr's and locked while ``up`` runs (``up``
        itself does neither: a drill's features call it under the drill's lock)."""
        statedir.claim(self.state_dir, what="state directory", purpose=f"{self.name} stack")
        with statedir.locked(self.state_dir, command="up"):
            yield

    # --- diagnostics -------------------------------------------------------------------------------
    def agent_selector(self) -> str:
        """The ops chart's agent pods (snapshot, restore, configure): the selector labels of
        environments/chart/vaultdr-ops/templates/_helpers.tpl (``vaultdr-ops.selectorLabels``)."""
        return f"app.kubernetes.io/name={OPS_CHART_NAME},app.kubernetes.io/instance={self.kube.ops_release}"

    def diagnostics(self, dest: Path, *, known_secrets: Sequence[str] = ()) -> Diagnostics:
        """What a failed drill keeps of the cluster, into ``dest``: each server pod's and ops
        agent's log (the current container and, where one restarted, the previous: the
        last :data:`DIAGNOSTICS_TAIL_LINES` lines, at most :data:`DIAGNOSTICS_LIMIT_BYTES`),
        the namespace's events oldest first, and the StatefulSet, PVC and pod status.

        Read only. Every text is redacted (``known_secrets`` and anything shaped like a
        secret); what cannot be read is noted in the result (and ``errors.txt``), never
        raised: diagnostics never change a drill's verdict."""
        writer = DiagnosticsWriter(dest, known_secrets=known_secrets)
        ns, api = self.namespace, self.api
        with self._collecting(writer, "events"):
            writer.text("events.txt", _events_text(ns, api.list_events(ns)))
        with self._collecting(writer, "statefulset"):
            writer.json("statefulset.json", api.read_statefulset_status(ns, self.statefulset()))
        with self._collecting(writer, "pvcs"):
            writer.json("pvcs.json", api.list_pvcs(ns))
        for group, selector in (("server", self.pod_selector()), ("agents", self.agent_selector())):
            with self._collecting(writer, f"{group} pods"):
                self._pod_diagnostics(writer, group, selector)
        return writer.finish()

    @contextlib.contextmanager
    def _collecting(self, writer: DiagnosticsWriter, what: str) -> Iterator[None]:
        """Within the block a failure is noted as ``what`` could not be collected."""
        try:
            yield
        except VaultdrError as exc:
            writer.error(what, exc.message)
        except Exception as exc:  # noqa: BLE001 - diagnostics never fail a drill
            writer.error(what, f"{type(exc).__name__}: {exc}")

    def _pod_diagnostics(self, writer: DiagnosticsWriter, group: str, selector: str) -> None:
        """``<group>/pods.json`` and ``<group>/<pod>/<container>[.previous].log``."""
        ns = self.namespace
        pods = self.api.list_pod_statuses(ns, selector)
        writer.json(f"{group}/pods.json", pods)
        for pod in pods:
            for container in [*pod["init_containers"], *pod["containers"]]:
                for previous in (False, True):
                    name = f"{group}/{pod['name']}/{container}{'.previous' if previous else ''}.log"
                    with self._collecting(writer, f"log {name}"):
                        self._pod_log(writer, name, pod["name"], container, previous=previous)

    def _pod_log(
        self, writer: DiagnosticsWriter, name: str, pod: str, container: str, *, previous: bool
    ) -> None:
        if writer.out_of_time(f"log {name}"):
            return
        text = self.api.read_pod_log(
            self.namespace,
            pod,
            container=container,
            previous=previous,
            tail_lines=DIAGNOSTICS_TAIL_LINES,
            limit_bytes=DIAGNOSTICS_LIMIT_BYTES,
        )
        if text is not None:
            writer.text(name, text)
        elif not previous:
            writer.error(f"log {name}", "the container has not started (400 BadRequest)")


def _events_text(namespace: str, events: list[dict[str, Any]]) -> str:
    """The events as ``kubectl get events --sort-by`` would show them, one a line."""
    lines = [f"# events of namespace {namespace}, oldest first ({len(events)})"]
    for e in events:
        count = f" (x{e['count']})" if e.get("count") and e["count"] > 1 else ""
        lines.append(
            f"{e['time'] or '-'}  {e['type'] or '-':<8} {e['reason'] or '-':<20} "
            f"{e['object']}  [{e['source'] or '-'}]{count}  {e['message']}"
        )
    return "\n".join(lines) + "\n"
