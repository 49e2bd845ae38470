"""A fake Kubernetes API over real HTTP on 127.0.0.1, for the kube environment's tests.

It holds complete, realistic objects (pods of a StatefulSet with their labels,
conditions and container statuses; PVCs with the ``kubernetes.io/pvc-protection``
finalizer; the StatefulSet; namespaces with annotations; Secrets, ConfigMaps,
Services, ServiceAccounts, RBAC objects) so the strict generated client accepts
every answer, and records every request (method, path, query, body, user) in order.

It refuses what a real API server refuses. Each behaviour is taken from the
Kubernetes source (github.com/kubernetes/kubernetes, path named at the code):

* **Authentication**: a request carries a bearer token. The kubeconfig's token
  is the cluster admin (kind's ``kubernetes-admin``, group ``kubeadm:cluster-admins``
  bound to ``cluster-admin``); a token minted by TokenRequest is its service
  account's, valid while that account exists with the same uid and the token has
  not expired; any other token is a 401.
* **Authorization**: every request is checked by RBAC against the Roles,
  RoleBindings, ClusterRoles and ClusterRoleBindings in the store (load the ops
  chart's with :mod:`tests.kube_rbac`); a denied one is a 403 with the real message.
* **Admission** (NamespaceLifecycle): creating in a namespace that does not exist
  is a 404, in a Terminating one a 403.
* **TokenRequest** for a service account that does not exist is a 404; an
  ``expirationSeconds`` under 10 minutes is a 422.
* **Graceful deletion**: a pod DELETE without ``gracePeriodSeconds`` uses the pod's
  ``terminationGracePeriodSeconds``; the pod stays (``deletionTimestamp`` set)
  for that long or until its container exits, then goes. ``gracePeriodSeconds=0``
  removes it at once (a force delete).
* **Controllers**, run on every request and by a reaper thread: pvc-protection
  lets a claim go only when no pod uses it; the StatefulSet controller recreates
  a missing pod (after the old one is really gone), creates a missing claim only
  when it creates the pod, and does not create a pod whose claim is terminating;
  the namespace controller empties a Terminating namespace, then removes it.

Time: pods' grace is whole seconds (``termination_grace``, 1 s by default here);
:meth:`FakeCluster.advance` makes time pass at once. Hooks
(``on_pod_started``, ``on_pod_stopping``, ``on_pod_gone``) let a fake kubelet run
real processes behind the pods; they are called outside the cluster's lock.

* **Service-account tokens as the real issuer makes them** (optional,
  :meth:`FakeCluster.use_token_authority`): RS256 JWTs with the claims
  pkg/serviceaccount/claims.go puts in them (``iss``, ``sub``, ``aud``, ``exp``,
  ``kubernetes.io.namespace``, ``kubernetes.io.serviceaccount.{name,uid}``), signed by
  :class:`vaultdr.envs.local.kubeapi.tokens.TokenAuthority`; **TokenReview** (POST
  /apis/authentication.k8s.io/v1/tokenreviews, RBAC ``create tokenreviews``, i.e. the
  ``system:auth-delegator`` ClusterRole) answers as pkg/registry/authentication/
  tokenreview/storage.go does; and the **root CA publisher** puts ``kube-root-ca.crt``
  into every namespace (pkg/controller/certificates/rootcacertpublisher/publisher.go).
* **TLS** (:meth:`FakeKubeApi.serve_tls`): the same API on a second, HTTPS listener, as
  ``https://kubernetes.default.svc`` (a certificate from a test CA for that name and
  127.0.0.1), for in-cluster clients, which only speak HTTPS.

Not modelled: watches, resourceVersion conflicts, server-side apply, the
port-forward's own authorization (its websocket is served as before).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import hashlib
import json
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from vaultdr.envs.local.kubeapi.store import ServiceAccount
from vaultdr.envs.local.kubeapi.tokens import TokenAuthority

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The kubeconfig's token: kind's cluster admin.
ADMIN_TOKEN = "fake-admin-token"
ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "kubeadm:cluster-admins"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
#: pkg/apis/authentication/validation/validation.go MinTokenAgeSec.
MIN_TOKEN_SECONDS = 10 * 60
#: kube-apiserver's --api-audiences as kind sets them (its --service-account-issuer).
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


def _now() -> str:
    return _stamp(dt.datetime.now(dt.UTC))


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(name: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": str(uuid.uuid4()),
        "resourceVersion": "1",
        "creationTimestamp": _now(),
    }
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    #: Who sent it (the authenticated user name), "" when unauthenticated.
    user: str = ""
    #: The status code of the answer (0 until answered; for the routes that record it).
    code: int = 0

    @property
    def mutating(self) -> bool:
        return self.method in MUTATING


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Attributes:
    """What RBAC decides on: staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go
    (RequestInfoFactory.NewRequestInfo)."""

    verb: str
    group: str
    namespace: str
    resource: str
    subresource: str
    name: str

    @property
    def combined(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


class ApiError(Exception):
    """An answer that is a Status object."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    """k8s.io/apimachinery/pkg/api/errors NewNotFound: '<resource>[.group] "<name>" not found'."""
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(
        404, "NotFound", f'{qualified} "{name}" not found', name=name, group=group, kind=resource
    )


def forbidden(resource: str, name: str, group: str, why: str) -> ApiError:
    """apimachinery errors.NewForbidden: '<resource>[.group] ["<name>" ]is forbidden: <why>'."""
    qualified = f"{resource}.{group}" if group else resource
    subject = f'{qualified} "{name}"' if name else qualified
    return ApiError(
        403, "Forbidden", f"{subject} is forbidden: {why}", name=name, group=group, kind=resource
    )


@dataclass
class FakeCluster:
    """The objects and the request log; the HTTP handler reads and changes them under ``lock``."""

    namespace: str = "vaultdr"
    release: str = "openbao"
    replicas: int = 3
    active_label: str = "openbao-active"
    leader: int = 0
    #: The pods' spec.terminationGracePeriodSeconds (the chart's is 10; short here).
    termination_grace: int = 1
    #: How long the namespace controller takes to empty a Terminating namespace.
    namespace_finalize_seconds: float = 0.2
    #: The service accounts populate() creates in ``namespace``.
    service_accounts: tuple[str, ...] = (
        "openbao",
        "vaultdr-snapshot",
        "vaultdr-restore",
        "vaultdr-configure",
        "web",
    )
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: Where a port-forward to a pod really goes: pod name -> (host, port) on loopback.
    forward_to: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: What each container logged: (pod, container) -> text; the previous container's
    #: under ``previous_logs`` (set by :meth:`restart_container`).
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    previous_logs: dict[tuple[str, str], str] = field(default_factory=dict)
    #: When set, GET of a pod's log and of events answers this status (a failing API).
    diagnostics_failure: int | None = None
    #: Minted tokens: token -> (namespace, service account, its uid, expiry as epoch seconds).
    tokens: dict[str, tuple[str, str, str, float]] = field(default_factory=dict)
    #: What the controllers did or refused to do, in words (for assertions).
    controller_log: list[str] = field(default_factory=list)
    #: A fake kubelet's hooks: (namespace, pod name, pod) when a pod is created;
    #: (namespace, pod name, grace seconds) when its deletion starts; (namespace,
    #: pod name) when the object is gone.
    on_pod_started: Callable[[str, str, dict[str, Any]], None] | None = None
    on_pod_stopping: Callable[[str, str, int], None] | None = None
    on_pod_gone: Callable[[str, str], None] | None = None
    _skew: float = 0.0
    _pod_deadlines: dict[tuple[str, str], float] = field(default_factory=dict)
    _ns_deadlines: dict[str, float] = field(default_factory=dict)
    _pending: list[Callable[[], None]] = field(default_factory=list)
    #: The kind cluster whose nodes the API lists (None: nodes that are not kind's).
    kind_cluster: str | None = "vaultdr"
    #: What a pods/exec runs in: pod name -> the PATH the command is found on (a
    #: directory the test fills: ``sh``, ``pidof``); a pod absent here has no tools at all.
    exec_path: dict[str, str] = field(default_factory=dict)
    #: Every pods/exec: {"pod", "container", "command"}, in order.
    execs: list[dict[str, Any]] = field(default_factory=list)
    #: Signs service-account tokens as JWTs when set (:meth:`use_token_authority`).
    authority: TokenAuthority | None = None
    #: The audiences each minted token was issued for.
    token_audiences: dict[str, list[str]] = field(default_factory=dict)
    #: The cluster CA the root CA publisher puts into every namespace (PEM), when set.
    root_ca_pem: str = ""

    def __post_init__(self) -> None:
        self._bootstrap_rbac()

    # --- building objects -----------------------------------------------------------------------
    def populate(self, *, annotations: dict[str, str] | None = None) -> None:
        ns = self.namespace
        self.add_namespace(ns, annotations=annotations)
        self.put("statefulsets", ns, self.release, self.statefulset())
        for i in range(self.replicas):
            self.put("persistentvolumeclaims", ns, f"data-{self.pod_name(i)}", self.pvc(i))
            self.put("pods", ns, self.pod_name(i), self.pod(i))
        self.put(
            "configmaps",
            ns,
            "kube-root-ca.crt",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta("kube-root-ca.crt", ns),
                "data": {
                    "ca.crt": "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
                },
            },
        )
        self.add_nodes()
        for sa in self.service_accounts:
            self.add_service_account(ns, sa)

    def add_namespace(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A Namespace as the API server stores it (pkg/registry/core/namespace/strategy.go
        PrepareForCreate: the ``kubernetes`` finalizer, phase Active; the
        ``kubernetes.io/metadata.name`` label is added by the NamespaceDefaultLabelName
        defaulting in pkg/apis/core/v1/defaults.go)."""
        obj = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": _meta(
                name,
                None,
                labels={**(labels or {}), "kubernetes.io/metadata.name": name},
                annotations=dict(annotations or {}),
            ),
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }
        self.put("namespaces", "", name, obj)
        if self.root_ca_pem:
            self._publish_root_ca(name)
        return obj

    def _publish_root_ca(self, namespace: str) -> None:
        """pkg/controller/certificates/rootcacertpublisher/publisher.go: every namespace gets
        the ConfigMap ``kube-root-ca.crt`` with the cluster CA under ``ca.crt``."""
        self.put(
            "configmaps",
            namespace,
            "kube-root-ca.crt",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta("kube-root-ca.crt", namespace),
                "data": {"ca.crt": self.root_ca_pem},
            },
        )

    def use_token_authority(self, authority: TokenAuthority) -> None:
        """Mint RS256 JWTs signed by ``authority`` from now on (TokenRequest, kubelet tokens)."""
        self.authority = authority

    def add_service_account(
        self, namespace: str, name: str, *, labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        obj = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(name, namespace, labels=dict(labels or {})),
        }
        self.put("serviceaccounts", namespace, name, obj)
        return obj

    def add_nodes(self, workers: int = 3) -> None:
        """The cluster's nodes as kind v0.29.0 makes them (cluster-scoped, namespace "").

        Real source: kubernetes-sigs/kind pkg/cluster/internal/providers/common/namer.go
        (``<cluster>-control-plane``, ``<cluster>-worker``, ``-worker2``...),
        pkg/cluster/internal/kubeadm/config.go (kubelet ``provider-id:
        kind://<provider>/<cluster>/<node>``) and kubeadm's control-plane role label.
        With ``kind_cluster`` None the nodes are an EKS cluster's (``aws:///...``)."""
        names = ["control-plane"] + [f"worker{i + 1 if i else ''}" for i in range(workers)]
        for role in names:
            cluster = self.kind_cluster
            name = f"{cluster}-{role}" if cluster else f"ip-10-0-0-{len(role)}.ec2.internal"
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
            if role == "control-plane" and cluster:
                labels["node-role.kubernetes.io/control-plane"] = ""
            provider = (
                f"kind://docker/{cluster}/{name}"
                if cluster
                else f"aws:///us-east-1a/i-{uuid.uuid4().hex[:17]}"
            )
            self.put(
                "nodes",
                "",
                name,
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": _meta(name, None, labels=labels),
                    "spec": {"providerID": provider, "podCIDR": "10.244.0.0/24"},
                    "status": {
                        "conditions": [
                            {"type": "Ready", "status": "True", "reason": "KubeletReady"}
                        ],
                        "nodeInfo": {
                            "kubeletVersion": "v1.33.1",
                            "containerRuntimeVersion": "containerd://2.1.1",
                            "architecture": "amd64",
                            "bootID": "",
                            "kernelVersion": "6.8.0",
                            "kubeProxyVersion": "",
                            "machineID": "",
                            "operatingSystem": "linux",
                            "osImage": "Debian GNU/Linux 12 (bookworm)",
                            "systemUUID": "",
                        },
                    },
                },
            )

    def pod_name(self, i: int) -> str:
        return f"{self.release}-{i}"

    def labels(self, i: int) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "openbao",
            "app.kubernetes.io/instance": self.release,
            "component": "server",
            "helm.sh/chart": "openbao-0.27.0",
            "controller-revision-hash": f"{self.release}-5d8f7c9b6",
            "statefulset.kubernetes.io/pod-name": self.pod_name(i),
            "apps.kubernetes.io/pod-index": str(i),
            self.active_label: "true" if i == self.leader else "false",
            "openbao-initialized": "true",
            "openbao-sealed": "false",
        }

    def pod(self, i: int) -> dict[str, Any]:
        name, ns, now = self.pod_name(i), self.namespace, _now()
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": _meta(
                name,
                ns,
                generateName=f"{self.release}-",
                labels=self.labels(i),
                ownerReferences=[
                    {
                        "apiVersion": "apps/v1",
                        "kind": "StatefulSet",
                        "name": self.release,
                        "uid": self.objects.get(("statefulsets", ns, self.release), {})
                        .get("metadata", {})
                        .get("uid", str(uuid.uuid4())),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            ),
            "spec": {
                "containers": [
                    {
                        "name": "openbao",
                        "image": "quay.io/openbao/openbao:2.6.2",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-ec"],
                        "args": ["bao server -config=/tmp/storageconfig.hcl"],
                        "ports": [
                            {"containerPort": 8200, "name": "http", "protocol": "TCP"},
                            {"containerPort": 8201, "name": "https-internal", "protocol": "TCP"},
                        ],
                        "volumeMounts": [{"name": "data", "mountPath": "/openbao/data"}],
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }
                ],
                "volumes": [
                    {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}"}}
                ],
                "hostname": name,
                "subdomain": f"{self.release}-internal",
                "serviceAccountName": self.release,
                "nodeName": "vaultdr-control-plane",
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": self.termination_grace,
                "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler",
            },
            "status": {
                "phase": "Running",
                "podIP": f"10.244.0.{10 + i}",
                "hostIP": "172.18.0.2",
                "startTime": now,
                "qosClass": "BestEffort",
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": now}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": "openbao",
                        "image": "quay.io/openbao/openbao:2.6.2",
                        "imageID": "quay.io/openbao/openbao@sha256:" + "0" * 64,
                        "containerID": "containerd://" + uuid.uuid4().hex,
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                ],
            },
        }

    def pod_from_template(self, i: int) -> dict[str, Any]:
        """:meth:`pod` with the stored StatefulSet's pod template when it has a full one (as
        ``helm install`` creates it): the pod spec is the template's (pkg/controller/
        statefulset/stateful_set_utils.go newStatefulSetPod: the template, then the identity
        ``hostname``/``subdomain`` and the claim volumes), its labels the template's plus the
        controller's."""
        pod = self.pod(i)
        sts = self.get("statefulsets", self.namespace, self.release) or {}
        template = (sts.get("spec") or {}).get("template") or {}
        spec = template.get("spec") or {}
        if "terminationGracePeriodSeconds" not in spec:
            return pod
        name = self.pod_name(i)
        claims = [
            {
                "name": t["metadata"]["name"],
                "persistentVolumeClaim": {"claimName": f"{t['metadata']['name']}-{name}"},
            }
            for t in (sts["spec"].get("volumeClaimTemplates") or [])
        ]
        pod["spec"] = {
            **copy.deepcopy(spec),
            "volumes": [*copy.deepcopy(spec.get("volumes") or []), *claims],
            "hostname": name,
            "subdomain": sts["spec"].get("serviceName", ""),
            "nodeName": pod["spec"]["nodeName"],
        }
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update(
            {
                "controller-revision-hash": pod["metadata"]["labels"]["controller-revision-hash"],
                "statefulset.kubernetes.io/pod-name": name,
                "apps.kubernetes.io/pod-index": str(i),
            }
        )
        pod["metadata"]["labels"] = labels
        pod["metadata"]["ownerReferences"][0]["uid"] = sts["metadata"]["uid"]
        return pod

    def pvc(self, i: int) -> dict[str, Any]:
        name = f"data-{self.pod_name(i)}"
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(
                name,
                self.namespace,
                labels={
                    "app.kubernetes.io/name": "openbao",
                    "app.kubernetes.io/instance": self.release,
                    "component": "server",
                },
                annotations={"pv.kubernetes.io/bind-completed": "yes"},
                finalizers=["kubernetes.io/pvc-protection"],
            ),
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "standard",
                "volumeMode": "Filesystem",
                "volumeName": f"pvc-{uuid.uuid4()}",
            },
            "status": {
                "phase": "Bound",
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Gi"},
            },
        }

    def statefulset(self) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(
                self.release,
                self.namespace,
                generation=1,
                labels={"app.kubernetes.io/instance": self.release},
            ),
            "spec": {
                "replicas": self.replicas,
                "serviceName": f"{self.release}-internal",
                "podManagementPolicy": "Parallel",
                "selector": {
                    "matchLabels": {
                        "app.kubernetes.io/instance": self.release,
                        "component": "server",
                    }
                },
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/instance": self.release}},
                    "spec": {"containers": [{"name": "openbao", "image": "openbao:2.6.2"}]},
                },
                "updateStrategy": {"type": "OnDelete"},
            },
            "status": {
                "replicas": self.replicas,
                "readyReplicas": self.replicas,
                "currentReplicas": self.replicas,
                "updatedReplicas": self.replicas,
                "availableReplicas": self.replicas,
                "observedGeneration": 1,
                "collisionCount": 0,
            },
        }

    def add_secret(self, name: str, data: dict[str, str]) -> None:
        self.put(
            "secrets",
            self.namespace,
            name,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": _meta(name, self.namespace),
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
            },
        )

    def store_written(self, kind: str, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A created or replaced Secret/ConfigMap as the API server stores it (a Secret's
        ``stringData`` merged into ``data``, base64-encoded); returns it.

        Real source: kubernetes pkg/apis/core/v1/conversion.go
        (Convert_v1_Secret_To_core_Secret merges stringData over data; it is write-only)."""
        obj = copy.deepcopy(body)
        meta = obj.get("metadata") or {}
        obj["metadata"] = _meta(name, ns, labels=dict(meta.get("labels") or {}))
        if kind == "secrets":
            data = dict(obj.get("data") or {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
        self.put(kind, ns, name, obj)
        return obj

    def secret_data(self, name: str) -> dict[str, str]:
        """A Secret's data, decoded (for assertions)."""
        obj = self.get("secrets", self.namespace, name)
        assert obj is not None, f"no secret {name}"
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}

    # --- store ---------------------------------------------------------------------------------
    def put(self, kind: str, ns: str, name: str, obj: dict[str, Any]) -> None:
        self.objects[(kind, ns, name)] = obj

    def get(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, ns, name))

    def of_kind(self, kind: str, ns: str | None = None) -> list[dict[str, Any]]:
        return [
            obj
            for (k, o_ns, _), obj in sorted(self.objects.items())
            if k == kind and (ns is None or o_ns == ns)
        ]

    def mutations(self) -> list[tuple[str, str]]:
        """(method, path) of every mutating request, in order."""
        return [(r.method, r.path) for r in self.requests if r.mutating]

    def uid(self, kind: str, name: str) -> str:
        obj = self.get(kind, self.namespace, name)
        return str(obj["metadata"]["uid"]) if obj else ""

    # --- time -----------------------------------------------------------------------------------
    def now(self) -> float:
        """The cluster's clock (monotonic seconds), which :meth:`advance` moves on."""
        return time.monotonic() + self._skew

    def advance(self, seconds: float) -> None:
        """Make ``seconds`` pass at once: graceful deletions due by then complete."""
        with self.lock:
            self._skew += seconds
        self.tick()

    def tick(self) -> None:
        """Run the controllers once (the reaper thread and every request do)."""
        with self.lock:
            self.reconcile()
        self.fire_hooks()

    def container_exited(self, ns: str, name: str) -> None:
        """The fake kubelet says the pod's container has exited: a terminating pod goes now
        (pkg/kubelet/status/status_manager.go deletes it once its containers stopped)."""
        with self.lock:
            if (ns, name) in self._pod_deadlines:
                self._pod_deadlines[(ns, name)] = self.now()
            self.reconcile()
        self.fire_hooks()

    def fire_hooks(self) -> None:
        """Call the queued kubelet hooks, outside the lock, in order."""
        with self.lock:
            pending, self._pending = self._pending, []
        for hook in pending:
            hook()

    def _queue(self, hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is not None:
            self._pending.append(lambda: hook(*args))

    # --- authentication and RBAC ----------------------------------------------------------------
    def _bootstrap_rbac(self) -> None:
        """The API server's bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/
        policy.go: cluster-admin, system:auth-delegator) and kind's admin binding
        (kubeadm's ClusterRoleBinding kubeadm:cluster-admins, cmd/kubeadm/app/phases/kubeconfig)."""
        self.put_rbac(
            {
                "kind": "ClusterRole",
                "metadata": {"name": "cluster-admin"},
                "rules": [
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]},
                ],
            }
        )
        self.put_rbac(
            {
                "kind": "ClusterRole",
                "metadata": {"name": "system:auth-delegator"},
                "rules": [
                    {
                        "apiGroups": ["authentication.k8s.io"],
                        "resources": ["tokenreviews"],
                        "verbs": ["create"],
                    },
                    {
                        "apiGroups": ["authorization.k8s.io"],
                        "resources": ["subjectaccessreviews"],
                        "verbs": ["create"],
                    },
                ],
            }
        )
        self.put_rbac(
            {
                "kind": "ClusterRoleBinding",
                "metadata": {"name": ADMIN_GROUP},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": ADMIN_GROUP}
                ],
            }
        )

    def put_rbac(self, obj: dict[str, Any]) -> None:
        """Store a Role, RoleBinding, ClusterRole or ClusterRoleBinding (as rendered)."""
        kind = {
            "Role": "roles",
            "RoleBinding": "rolebindings",
            "ClusterRole": "clusterroles",
            "ClusterRoleBinding": "clusterrolebindings",
        }[obj["kind"]]
        meta = obj["metadata"]
        ns = str(meta.get("namespace") or "") if kind in ("roles", "rolebindings") else ""
        self.put(kind, ns, str(meta["name"]), copy.deepcopy(obj))

    def mint_token(
        self, ns: str, name: str, *, seconds: int = 3600, audiences: list[str] | None = None
    ) -> str:
        """A token of service account ``ns/name`` (what TokenRequest, or the kubelet's projected
        token, gives a pod). The account must exist. With :attr:`authority` it is a signed
        JWT (pkg/serviceaccount/claims.go), else an opaque string."""
        sa = self.get("serviceaccounts", ns, name)
        if sa is None:
            raise not_found("serviceaccounts", name)
        uid = str(sa["metadata"]["uid"])
        auds = list(audiences or [API_AUDIENCE])
        if self.authority is not None:
            token, _ = self.authority.issue(ServiceAccount(ns, name, uid), auds, seconds)
        else:
            token = "eyJhbGciOiJSUzI1NiJ9.fake-sa-token-" + uuid.uuid4().hex
        self.tokens[token] = (ns, name, uid, time.time() + seconds)
        self.token_audiences[token] = auds
        return token

    def review_token(self, token: str, audiences: list[str]) -> dict[str, Any]:
        """A TokenReview's status, as pkg/registry/authentication/tokenreview/storage.go
        (Create) answers: the request's audiences, else the API server's own; the service
        account token authenticator (pkg/serviceaccount/jwt.go, claims.go) accepts a token
        of an existing account with the same uid, unexpired, whose audiences overlap."""
        wanted = audiences or [API_AUDIENCE]
        minted = self.tokens.get(token)
        failure: dict[str, Any] = {"authenticated": False, "user": {}, "audiences": []}
        if minted is None:
            return {
                **failure,
                "error": "[invalid bearer token, square/go-jose: error in cryptographic primitive]",
            }
        ns, name, uid, expires = minted
        if time.time() >= expires:
            return {**failure, "error": "[invalid bearer token, token has expired]"}
        overlap = [a for a in wanted if a in self.token_audiences.get(token, [])]
        if not overlap:
            return {
                **failure,
                "error": "[invalid bearer token, token audiences is invalid for the target audiences]",
            }
        sa = self.get("serviceaccounts", ns, name)
        if sa is None or sa["metadata"]["uid"] != uid:
            return {
                **failure,
                "error": "[invalid bearer token, service account has been deleted or recreated]",
            }
        return {
            "authenticated": True,
            "user": {
                "username": f"system:serviceaccount:{ns}:{name}",
                "uid": uid,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{ns}",
                    "system:authenticated",
                ],
            },
            "audiences": overlap,
        }

    def authenticate(self, authorization: str | None) -> User | None:
        """The user of a request; None for a token the server does not accept (401).

        No token is ``system:anonymous`` (anonymous auth is on in kind). A service
        account's token is valid only while the account exists with the uid the token
        was minted for, until it expires (pkg/serviceaccount/claims.go validator.Validate)."""
        if not authorization:
            return User("system:anonymous", ("system:unauthenticated",))
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        if token == ADMIN_TOKEN:
            return User(ADMIN_USER, (ADMIN_GROUP, "system:authenticated"))
        minted = self.tokens.get(token)
        if minted is None:
            return None
        ns, name, uid, expires = minted
        sa = self.get("serviceaccounts", ns, name)
        if sa is None or sa["metadata"]["uid"] != uid or time.time() >= expires:
            return None
        return User(
            f"system:serviceaccount:{ns}:{name}",
            ("system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"),
        )

    def authorize(self, user: User, attrs: Attributes) -> bool:
        """RBAC as plugin/pkg/auth/authorizer/rbac/rbac.go decides: any rule of a role bound
        to the user (cluster-wide, or in the request's namespace) that allows the request."""
        for rules in self._bound_rules(user, attrs.namespace):
            if any(_rule_allows(rule, attrs) for rule in rules):
                return True
        return False

    def _bound_rules(self, user: User, namespace: str) -> list[list[dict[str, Any]]]:
        found: list[list[dict[str, Any]]] = []
        for binding in self.of_kind("clusterrolebindings"):
            if _binds(binding, user, ""):
                found.append(self._role_rules(binding["roleRef"], ""))
        if namespace:
            for binding in self.of_kind("rolebindings", namespace):
                if _binds(binding, user, namespace):
                    found.append(self._role_rules(binding["roleRef"], namespace))
        return found

    def _role_rules(self, ref: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        if ref["kind"] == "ClusterRole":
            role = self.get("clusterroles", "", ref["name"])
        else:
            role = self.get("roles", namespace, ref["name"])
        return list((role or {}).get("rules") or [])

    # --- namespaces -----------------------------------------------------------------------------
    def namespace_phase(self, name: str) -> str | None:
        obj = self.get("namespaces", "", name)
        return None if obj is None else str(obj["status"]["phase"])

    def admit(self, attrs: Attributes) -> None:
        """NamespaceLifecycle (staging/src/k8s.io/apiserver/pkg/admission/plugin/namespace/
        lifecycle/admission.go): deletes always pass; create/update in a namespace that
        does not exist is its 404; a create in a Terminating one is a 403."""
        if attrs.verb not in ("create", "update", "patch") or not attrs.namespace:
            return
        if attrs.resource == "namespaces":
            return
        phase = self.namespace_phase(attrs.namespace)
        if phase is None:
            raise not_found("namespaces", attrs.namespace)
        if attrs.verb == "create" and phase == "Terminating":
            raise forbidden(
                attrs.resource,
                attrs.name,
                attrs.group,
                f"unable to create new content in namespace {attrs.namespace} "
                "because it is being terminated",
            )

    def delete_namespace(self, name: str) -> dict[str, Any]:
        """pkg/registry/core/namespace/storage/storage.go REST.Delete: the first delete sets
        deletionTimestamp and phase Terminating; another while its finalizers are pending
        is a 409 Conflict. The namespace controller empties it, then it goes."""
        obj = self.get("namespaces", "", name)
        if obj is None:
            raise not_found("namespaces", name)
        if obj["metadata"].get("deletionTimestamp"):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on namespaces "{name}": The system is ensuring '
                "all content is removed from this namespace.  Upon completion, this namespace "
                "will automatically be purged by the system.",
                name=name,
                kind="namespaces",
            )
        obj["metadata"]["deletionTimestamp"] = _now()
        obj["status"]["phase"] = "Terminating"
        self._ns_deadlines[name] = self.now() + self.namespace_finalize_seconds
        return copy.deepcopy(obj)

    def _finalize_namespaces(self) -> None:
        """pkg/controller/namespace/deletion/namespaced_resources_deleter.go: delete every
        object in the namespace, then drop the ``kubernetes`` finalizer (it is gone)."""
        for name, deadline in list(self._ns_deadlines.items()):
            if self.now() < deadline:
                continue
            for key in [k for k in self.objects if k[1] == name and k[0] != "namespaces"]:
                if key[0] == "pods":
                    self._queue(self.on_pod_gone, name, key[2])
                    self._pod_deadlines.pop((name, key[2]), None)
                del self.objects[key]
            self.objects.pop(("namespaces", "", name), None)
            del self._ns_deadlines[name]
            for token, (ns, *_rest) in list(self.tokens.items()):
                if ns == name:
                    del self.tokens[token]

    # --- pods: graceful deletion ----------------------------------------------------------------
    def delete_pod(self, ns: str, name: str, grace: int | None = None) -> dict[str, Any] | None:
        """DELETE of a pod. ``grace`` None: the pod's own terminationGracePeriodSeconds.

        pkg/registry/core/pod/strategy.go CheckGracefulDelete: the given period, else the
        pod's spec.terminationGracePeriodSeconds; 0 when the pod is not scheduled or has
        terminated; a negative one is 1. k8s.io/apiserver pkg/registry/rest/delete.go
        BeforeDelete: a period > 0 only sets deletionTimestamp (now + period) and
        deletionGracePeriodSeconds, a second delete may only shorten it; 0 removes the
        object at once (a force delete)."""
        pod = self.get("pods", ns, name)
        if pod is None:
            return None
        spec, status = pod["spec"], pod.get("status") or {}
        period = int(grace if grace is not None else spec.get("terminationGracePeriodSeconds") or 0)
        if not spec.get("nodeName") or status.get("phase") in ("Failed", "Succeeded"):
            period = 0
        if period < 0:
            period = 1
        meta = pod["metadata"]
        remaining = self._pod_deadlines.get((ns, name))
        if period == 0:
            answer = copy.deepcopy(pod)
            answer["metadata"].setdefault("deletionTimestamp", _now())
            answer["metadata"]["deletionGracePeriodSeconds"] = 0
            self._remove_pod(ns, name)
            return answer
        if remaining is None or self.now() + period < remaining:
            moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=period)
            meta["deletionTimestamp"] = _stamp(moment)
            meta["deletionGracePeriodSeconds"] = period
            self._pod_deadlines[(ns, name)] = self.now() + period
            self._queue(self.on_pod_stopping, ns, name, period)
        return copy.deepcopy(pod)

    def _remove_pod(self, ns: str, name: str) -> None:
        self.objects.pop(("pods", ns, name), None)
        self._pod_deadlines.pop((ns, name), None)
        self._queue(self.on_pod_gone, ns, name)

    def _reap_pods(self) -> None:
        """The kubelet: a pod whose grace period is over (or whose container exited) goes."""
        for (ns, name), deadline in list(self._pod_deadlines.items()):
            if self.now() >= deadline:
                self._remove_pod(ns, name)

    # --- persistent volume claims ---------------------------------------------------------------
    def pod_uses(self, ns: str, claim: str) -> bool:
        """pkg/controller/volume/pvcprotection/pvc_protection_controller.go podUsesPVC: a pod
        uses the claim until it is gone (or force-deleted: podIsShutDown)."""
        for pod in self.of_kind("pods", ns):
            if pod["metadata"].get("deletionGracePeriodSeconds") == 0:
                continue
            for volume in pod["spec"].get("volumes", []):
                if volume.get("persistentVolumeClaim", {}).get("claimName") == claim:
                    return True
        return False

    def delete_pvc(self, ns: str, name: str) -> dict[str, Any] | None:
        """DELETE of a claim: with finalizers it only gets deletionTimestamp (k8s.io/apiserver
        pkg/registry/generic/registry/store.go: an object with finalizers is not removed);
        without, it goes at once."""
        pvc = self.get("persistentvolumeclaims", ns, name)
        if pvc is None:
            return None
        pvc["metadata"].setdefault("deletionTimestamp", _now())
        pvc["metadata"]["deletionGracePeriodSeconds"] = 0
        answer = copy.deepcopy(pvc)
        self._protect_claims()
        return answer

    def remove_finalizer(self, kind: str, ns: str, name: str, finalizer: str) -> None:
        """What another controller does when it is done with an object it holds."""
        with self.lock:
            obj = self.get(kind, ns, name)
            if obj is not None:
                held = obj["metadata"].get("finalizers") or []
                obj["metadata"]["finalizers"] = [f for f in held if f != finalizer]
            self.reconcile()
        self.fire_hooks()

    def _protect_claims(self) -> None:
        """pvcprotection: drop the finalizer of a deleted claim no pod uses; an object being
        deleted whose finalizers are all gone is removed (store.go)."""
        for (kind, ns, name), pvc in list(self.objects.items()):
            meta = pvc["metadata"]
            if kind != "persistentvolumeclaims" or not meta.get("deletionTimestamp"):
                continue
            finalizers = list(meta.get("finalizers") or [])
            if PVC_PROTECTION in finalizers and not self.pod_uses(ns, name):
                finalizers.remove(PVC_PROTECTION)
                meta["finalizers"] = finalizers
            if not finalizers:
                del self.objects[(kind, ns, name)]

    # --- the StatefulSet controller -------------------------------------------------------------
    def scale(self, ns: str, replicas: int) -> None:
        """After a scale: the StatefulSet controller deletes ordinals past ``replicas``
        (gracefully) and creates missing ones below (their claims are kept)."""
        self._reconcile_statefulsets()

    def recreate(self, ns: str, name: str) -> None:
        """The StatefulSet controller for one ordinal (see :meth:`_reconcile_statefulsets`)."""
        index = int(name.rsplit("-", 1)[1])
        sts = self.get("statefulsets", ns, self.release)
        if sts is None or index >= int(sts["spec"]["replicas"]) or self.get("pods", ns, name):
            return
        if self.namespace_phase(ns) != "Active":
            return
        claim = f"data-{name}"
        pvc = self.get("persistentvolumeclaims", ns, claim)
        if pvc is not None and pvc["metadata"].get("deletionTimestamp"):
            # pkg/controller/statefulset/stateful_pod_control.go createPersistentVolumeClaims:
            # "pvc %s is being deleted" fails CreateStatefulPod; the controller retries.
            self.controller_log.append(
                f"create Pod {name} in StatefulSet {self.release} failed: pvc {claim} is being deleted"
            )
            return
        if pvc is None:  # created only together with its pod (CreateStatefulPod)
            self.put("persistentvolumeclaims", ns, claim, self.pvc(index))
            self.controller_log.append(f"create Claim {claim} in StatefulSet {self.release}")
        pod = self.pod_from_template(index)
        if self.active_label in pod["metadata"]["labels"]:
            pod["metadata"]["labels"][self.active_label] = "false"
        self.put("pods", ns, name, pod)
        self.controller_log.append(f"create Pod {name} in StatefulSet {self.release}")
        self._queue(self.on_pod_started, ns, name, copy.deepcopy(pod))

    def _reconcile_statefulsets(self) -> None:
        """pkg/controller/statefulset/stateful_set_control.go (Parallel pod management): every
        ordinal below replicas gets a pod, created only once the old pod object is gone
        (a terminating pod is waited for); ordinals past replicas are deleted."""
        for (kind, ns, name), sts in list(self.objects.items()):
            if kind != "statefulsets" or name != self.release:
                continue
            replicas = int(sts["spec"]["replicas"])
            for i in range(replicas):
                self.recreate(ns, self.pod_name(i))
            for pod in self.of_kind("pods", ns):
                pod_name = str(pod["metadata"]["name"])
                index = pod_name.rsplit("-", 1)[-1]
                if (
                    pod_name.startswith(f"{self.release}-")
                    and index.isdigit()
                    and int(index) >= replicas
                    and not pod["metadata"].get("deletionTimestamp")
                ):
                    self.delete_pod(ns, pod_name)

    def reconcile(self) -> None:
        """Every controller once, under the lock: the kubelet, pvc-protection, the
        StatefulSet controller, the namespace controller."""
        self._reap_pods()
        self._protect_claims()
        self._finalize_namespaces()
        self._reconcile_statefulsets()
        self._protect_claims()

    # --- logs and events (diagnostics) ---------------------------------------------------------
    def restart_container(self, pod: str, container: str, previous_log: str) -> None:
        """The kubelet restarted ``container`` of ``pod``: restartCount + 1, the old
        container in ``lastState.terminated`` (with its containerID, which a
        ``previous=true`` log request needs), its log kept as the previous one."""
        obj = self.get("pods", self.namespace, pod)
        assert obj is not None, f"no pod {pod}"
        for status in obj["status"]["containerStatuses"]:
            if status["name"] == container:
                status["restartCount"] += 1
                status["lastState"] = {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "startedAt": _now(),
                        "finishedAt": _now(),
                        "containerID": status["containerID"],
                    }
                }
                status["containerID"] = "containerd://" + uuid.uuid4().hex
        self.previous_logs[(pod, container)] = previous_log

    def add_event(
        self,
        name: str,
        *,
        kind: str,
        obj: str,
        reason: str,
        message: str,
        at: str,
        type_: str = "Normal",
    ) -> None:
        """A core/v1 Event about ``kind/obj`` last seen ``at`` (RFC 3339)."""
        self.put(
            "events",
            self.namespace,
            name,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": _meta(name, self.namespace),
                "involvedObject": {"kind": kind, "name": obj, "namespace": self.namespace},
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": at,
                "lastTimestamp": at,
                "source": {"component": "kubelet" if kind == "Pod" else "statefulset-controller"},
                "reportingComponent": "",
                "reportingInstance": "",
            },
        )


def _binds(binding: dict[str, Any], user: User, namespace: str) -> bool:
    """plugin/pkg/auth/authorizer/rbac/subject_locator.go appliesToUser."""
    for subject in binding.get("subjects") or []:
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "User" and name == user.name:
            return True
        if kind == "Group" and name in user.groups:
            return True
        if kind == "ServiceAccount":
            sa_ns = subject.get("namespace") or namespace
            if user.name == f"system:serviceaccount:{sa_ns}:{name}":
                return True
    return False


def _rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    """pkg/apis/rbac/v1/evaluation_helpers.go: VerbMatches, APIGroupMatches,
    ResourceMatches (``*``, ``resource/subresource``, ``*/subresource``), ResourceNameMatches."""
    verbs = rule.get("verbs") or []
    groups = rule.get("apiGroups")
    resources = rule.get("resources") or []
    if groups is None:  # a nonResourceURLs rule
        return False
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if "*" not in groups and attrs.group not in groups:
        return False
    wanted = {attrs.combined, "*"}
    if attrs.subresource:
        wanted.add(f"*/{attrs.subresource}")
    if not wanted & set(resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def request_attributes(method: str, seg: list[str], query: dict[str, list[str]]) -> Attributes:
    """staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go: the verb (GET of one
    = get, of a collection = list, POST = create, PUT = update, PATCH = patch, DELETE of one
    = delete, of a collection = deletecollection), group, namespace, resource/subresource."""
    if seg[:1] == ["api"]:
        group, rest = "", seg[2:]
    else:
        group, rest = seg[1], seg[3:]
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2:
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    verb = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
    }.get(method, "")
    if method == "GET":
        verb = "get" if name else ("watch" if query.get("watch") else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    return Attributes(verb, group, namespace, resource, subresource, name)


def _status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


#: What may be created (POST) and replaced (PUT) whole. As the real API server does
#: (k8s.io/apiserver pkg/registry/generic/registry/store.go): Create of an existing name
#: is 409 AlreadyExists; Update of a missing one is 404 NotFound, because the Secret and
#: ConfigMap strategies (pkg/registry/core/secret/strategy.go, .../configmap/strategy.go)
#: return AllowCreateOnUpdate() == false. ServiceAccounts may be created and deleted.
_WRITABLE = frozenset({"secrets", "configmaps"})

_KINDS = {
    "pods": "Pod",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "statefulsets": "StatefulSet",
    "namespaces": "Namespace",
}


def _grace(query: dict[str, list[str]], body: Any) -> int | None:
    """gracePeriodSeconds of a DELETE: the DeleteOptions body, else the query parameter."""
    if isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
        return int(body["gracePeriodSeconds"])
    if query.get("gracePeriodSeconds"):
        return int(query["gracePeriodSeconds"][0])
    return None


#: Kinds a manifest (``kubectl apply``-style, as ``KubeApi.create_from_manifest`` posts
#: them) may create here, by API prefix: stored as posted, 409 AlreadyExists when the
#: name exists (k8s.io/apiserver pkg/registry/generic/registry/store.go, Create).
_MANIFEST_KINDS = {
    # (ServiceAccounts are the namespaced routes' own: they carry the tokens' uid.)
    ("api", "v1"): {"services": "Service"},
    ("apis", "apps", "v1"): {"deployments": "Deployment", "statefulsets": "StatefulSet"},
    ("apis", "rbac.authorization.k8s.io", "v1"): {"roles": "Role", "rolebindings": "RoleBinding"},
    ("apis", "batch", "v1"): {"jobs": "Job"},
}


class _ExtraRoutes(BaseHTTPRequestHandler):
    """Cluster-scoped nodes, manifest objects and the pods/exec websocket, beside the
    namespaced routes of :class:`_Handler`."""

    cluster: FakeCluster

    def _route_extra(self, seg: list[str], body: Any) -> tuple[int, dict[str, Any]] | None:
        """The answer of a route served here, or None (the request is :meth:`_route`'s)."""
        c = self.cluster
        if seg[:3] == ["api", "v1", "nodes"] and self.command == "GET":
            if len(seg) == 3:
                items = [o for (k, _, _), o in sorted(c.objects.items()) if k == "nodes"]
                return 200, {
                    "apiVersion": "v1",
                    "kind": "NodeList",
                    "metadata": {"resourceVersion": "100"},
                    "items": items,
                }
            node = c.get("nodes", "", seg[3])
            if node is None:
                return 404, _status(404, "NotFound", f'nodes "{seg[3]}" not found')
            return 200, node
        if (
            seg == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]
            and self.command == "POST"
        ):
            spec = (body or {}).get("spec") or {}
            status = c.review_token(str(spec.get("token") or ""), list(spec.get("audiences") or []))
            return 201, {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "metadata": {"creationTimestamp": None},
                # pkg/registry/authentication/tokenreview/storage.go returns the posted
                # object, its spec (token included) as sent, with the status filled in.
                "spec": spec,
                "status": status,
            }
        if (
            seg[:3] == ["apis", "rbac.authorization.k8s.io", "v1"]
            and len(seg) == 4
            and seg[3] in ("clusterroles", "clusterrolebindings")
            and self.command == "POST"
        ):
            name = str(body["metadata"]["name"])
            if c.get(seg[3], "", name) is not None:
                return 409, _status(409, "AlreadyExists", f'{seg[3]} "{name}" already exists')
            c.put_rbac(body)
            return 201, body
        for prefix, kinds in _MANIFEST_KINDS.items():
            n = len(prefix)
            rest = seg[n:]
            if (
                tuple(seg[:n]) == prefix
                and self.command == "DELETE"
                and len(rest) == 4
                and rest[0] == "namespaces"
                and rest[2] in kinds
            ):
                found = c.objects.pop((rest[2], rest[1], rest[3]), None)
                if found is None:
                    return 404, _status(404, "NotFound", f'{rest[2]} "{rest[3]}" not found')
                return 200, found
            if (
                tuple(seg[:n]) == prefix
                and self.command == "POST"
                and len(rest) == 3
                and rest[0] == "namespaces"
                and rest[2] in kinds
            ):
                kind, name = rest[2], str(body["metadata"]["name"])
                if c.get(kind, rest[1], name) is not None:
                    return 409, _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
                obj = copy.deepcopy(body)
                obj["metadata"] = {**obj["metadata"], **_meta(name, rest[1])}
                c.put(kind, rest[1], name, obj)
                return 201, obj
        return None

    def _upgrade_extra(self, parts: Any) -> bool:
        """Serve a pods/exec websocket; True when this request was one."""
        seg = parts.path.strip("/").split("/")
        if not (
            len(seg) == 7
            and seg[:3] == ["api", "v1", "namespaces"]
            and seg[4] == "pods"
            and seg[6] == "exec"
            and self.headers.get("Upgrade", "").lower() == "websocket"
        ):
            return False
        query = parse_qs(parts.query)
        ns, pod_name = seg[3], seg[5]
        command = query.get("command", [])
        with self.cluster.lock:
            self.cluster.requests.append(Request(self.command, parts.path, query, None))
            pod = self.cluster.get("pods", ns, pod_name)
        if pod is None:
            self._send_plain(404, _status(404, "NotFound", f'pods "{pod_name}" not found'))
            return True
        names = [c["name"] for c in pod["spec"]["containers"]]
        container = (query.get("container") or [names[0]])[0]
        if container not in names:
            # pkg/registry/core/pod/strategy.go (ExecLocation -> validateContainer).
            message = f"container {container} is not valid for pod {pod_name}"
            self._send_plain(400, _status(400, "BadRequest", message))
            return True
        with self.cluster.lock:
            self.cluster.execs.append({"pod": pod_name, "container": container, "command": command})
        self._exec(pod_name, command)
        return True

    def _send_plain(self, code: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _exec(self, pod_name: str, command: list[str]) -> None:
        """Run ``command`` with the pod's PATH and answer on the channel protocol.

        Real sources: k8s.io/apiserver pkg/util/wsstream/conn.go (a binary frame's first
        byte is its channel: 1 stdout, 2 stderr, 3 error) and the kubelet's
        pkg/kubelet/cri/streaming/remotecommand (exec.go ServeExec, httpstream.go
        v4WriteStatusFunc): at the end, on the error channel, a Status JSON, ``Success``,
        or ``Failure`` with reason ``NonZeroExitCode`` and the exit code as the message
        of the ``ExitCode`` cause; a command that cannot start is an InternalError."""
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        protocol = "v4.channel.k8s.io" if "v4.channel.k8s.io" in offered else offered[-1]
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        path = self.cluster.exec_path.get(pod_name) or str(Path("/nonexistent-fake-kube-bin"))
        status: dict[str, Any] = {"metadata": {}, "status": "Success"}
        try:
            done = subprocess.run(
                command, env={"PATH": path}, capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            out, err = b"", b""
            status = _status(500, "InternalError", f"error executing command in container: {exc}")
        else:
            out, err = done.stdout, done.stderr
            if done.returncode != 0:
                status = {
                    "metadata": {},
                    "status": "Failure",
                    "message": "command terminated with non-zero exit code: error executing "
                    f"command {command}, exit code {done.returncode}",
                    "reason": "NonZeroExitCode",
                    "details": {
                        "causes": [{"reason": "ExitCode", "message": str(done.returncode)}]
                    },
                }
        client = self.connection
        with contextlib.suppress(OSError):
            if out:
                client.sendall(_ws_frame(b"\x01" + out))
            if err:
                client.sendall(_ws_frame(b"\x02" + err))
            client.sendall(_ws_frame(b"\x03" + json.dumps(status).encode()))
            client.sendall(_ws_frame(b"", opcode=0x8))


class _Handler(_ExtraRoutes):
    cluster: FakeCluster

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, obj: dict[str, Any]) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        if (
            parts.path.endswith("/portforward")
            and self.headers.get("Upgrade", "").lower() == "websocket"
        ):
            with self.cluster.lock:
                self.cluster.requests.append(
                    Request(self.command, parts.path, parse_qs(parts.query), None)
                )
            self._port_forward(parts.path.split("/")[-2], int(parse_qs(parts.query)["ports"][0]))
            return
        if self.command == "GET" and self._diagnostics(parts.path, parse_qs(parts.query)):
            return
        if self._upgrade_extra(parts):
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        cluster = self.cluster
        query = parse_qs(parts.query)
        seg = parts.path.strip("/").split("/")
        with cluster.lock:
            user = cluster.authenticate(self.headers.get("Authorization"))
            request = Request(self.command, parts.path, query, body, user.name if user else "")
            cluster.requests.append(request)
            try:
                code, answer = self._serve(user, seg, query, body)
            except ApiError as exc:
                code, answer = exc.code, _status(exc.code, exc.reason, exc.message, exc.details)
            request.code = code
            cluster.reconcile()
        cluster.fire_hooks()
        self._send(code, answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _serve(
        self, user: User | None, seg: list[str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, dict[str, Any]]:
        """Authentication, authorization, admission, then the storage: the order of the real
        handler chain (staging/src/k8s.io/apiserver/pkg/server/config.go DefaultBuildHandlerChain)."""
        if user is None:
            # staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
            raise ApiError(401, "Unauthorized", "Unauthorized")
        if not (seg[:2] == ["api", "v1"] or (seg[:1] == ["apis"] and len(seg) >= 3)):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        attrs = request_attributes(self.command, seg, query)
        if not self.cluster.authorize(user, attrs):
            # responsewriters/errors.go forbiddenMessage, wrapped by errors.NewForbidden.
            raise forbidden(
                attrs.resource,
                attrs.name,
                attrs.group,
                f'User "{user.name}" cannot {attrs.verb} resource "{attrs.combined}" in API '
                + (
                    f'group "{attrs.group}" in the namespace "{attrs.namespace}"'
                    if attrs.namespace
                    else f'group "{attrs.group}" at the cluster scope'
                ),
            )
        self.cluster.admit(attrs)
        extra = self._route_extra(seg, body)
        return extra or self._route(attrs, seg, query, body)

    # --- port-forward: the websocket protocol (channel 0 data, 1 errors) -------------------------
    def _port_forward(self, pod: str, port: int) -> None:
        target = self.cluster.forward_to.get(pod)
        if target is None:
            self._send(404, _status(404, "NotFound", f'pods "{pod}" not found'))
            return
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        protocol = self.headers.get("Sec-WebSocket-Protocol", "").split(",")[-1].strip()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        client = self.connection
        if target[0] == "reset":
            # forward_to[pod] = ("reset", N): the pod dies during the first frames. N of the
            # two port frames are sent, then the connection is reset (RST, not FIN), which
            # websocket-client raises as ConnectionResetError.
            for channel in range(target[1]):
                client.sendall(_ws_frame(bytes([channel, port % 256, port // 256])))
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        upstream = socket.create_connection(target)
        # The API server and the kubelet are Go: Nagle is off on every TCP connection.
        for end in (client, upstream):
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lock = threading.Lock()

        def send_frame(payload: bytes) -> None:
            with lock:
                client.sendall(_ws_frame(payload))

        port_bytes = bytes([port % 256, port // 256])
        send_frame(b"\x00" + port_bytes)
        send_frame(b"\x01" + port_bytes)

        def upstream_to_client() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    send_frame(b"\x00" + data)
            with contextlib.suppress(OSError), lock:
                client.sendall(_ws_frame(b"", opcode=0x8))

        threading.Thread(target=upstream_to_client, daemon=True).start()
        with contextlib.suppress(OSError, ConnectionError):
            while (frame := _ws_read(client)) is not None:
                opcode, payload = frame
                if opcode == 0x8:
                    break
                if opcode == 0x2 and payload[:1] == b"\x00" and len(payload) > 1:
                    upstream.sendall(payload[1:])
        with contextlib.suppress(OSError):
            upstream.close()

    # --- pod logs and events: read-only, what the diagnostics of a failed drill read ------------
    def _diagnostics(self, path: str, query: dict[str, list[str]]) -> bool:
        """GET .../pods/NAME/log and GET .../events; False for any other request."""
        seg = path.strip("/").split("/")
        is_log = (
            len(seg) == 7
            and seg[:3] == ["api", "v1", "namespaces"]
            and seg[4::2] == ["pods", "log"]
        )
        is_events = len(seg) == 5 and seg[:3] == ["api", "v1", "namespaces"] and seg[4] == "events"
        if not (is_log or is_events):
            return False
        c = self.cluster
        with c.lock:
            c.requests.append(Request("GET", path, query, None))
            failure = c.diagnostics_failure
            if failure is not None:
                self._send(failure, _status(failure, "InternalError", "an error on the server"))
            elif is_events:
                self._send(200, self._events(seg[3]))
            else:
                self._pod_log(seg[3], seg[5], query)
        return True

    def _events(self, ns: str) -> dict[str, Any]:
        items = [
            o
            for (k, o_ns, _), o in sorted(self.cluster.objects.items())
            if k == "events" and o_ns == ns
        ]
        return {
            "apiVersion": "v1",
            "kind": "EventList",
            "metadata": {"resourceVersion": "100"},
            "items": items,
        }

    def _pod_log(self, ns: str, name: str, query: dict[str, list[str]]) -> None:
        """As the API server and kubelet answer a log request:

        * no such pod: 404 NotFound;
        * a container the pod does not have: 400 BadRequest ``container C is not valid for
          pod P`` (kubernetes pkg/registry/core/pod/strategy.go, LogLocation);
        * ``previous=true`` for a container whose ``lastState.terminated`` has no
          containerID (it never restarted): 400 BadRequest ``previous terminated container
          "C" in pod "P" not found`` (kubernetes pkg/kubelet/kubelet_pods.go,
          validateContainerLogStatus; pkg/kubelet/server/server.go getContainerLogs
          answers the error as 400, which the API server passes on);
        * else the text (``text/plain``, pkg/registry/core/pod/rest/log.go), the last
          ``tailLines`` lines, then at most ``limitBytes`` bytes of them.
        """
        pod = self.cluster.get("pods", ns, name)
        if pod is None:
            self._send(
                404,
                _status(
                    404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"}
                ),
            )
            return
        containers = [ct["name"] for ct in pod["spec"]["containers"]]
        container = (query.get("container") or [containers[0]])[0]
        if container not in containers:
            self._send(
                400,
                _status(400, "BadRequest", f"container {container} is not valid for pod {name}"),
            )
            return
        previous = (query.get("previous") or ["false"])[0] == "true"
        if previous:
            status = next(s for s in pod["status"]["containerStatuses"] if s["name"] == container)
            terminated = (status.get("lastState") or {}).get("terminated") or {}
            if not terminated.get("containerID"):
                message = f'previous terminated container "{container}" in pod "{name}" not found'
                self._send(400, _status(400, "BadRequest", message))
                return
        logs = self.cluster.previous_logs if previous else self.cluster.logs
        text = logs.get((name, container), "")
        if "tailLines" in query:
            lines = text.splitlines(keepends=True)
            text = (
                "".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else ""
            )
        data = text.encode()
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"][0])]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(
        self, attrs: Attributes, seg: list[str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, dict[str, Any]]:
        c, verb, kind = self.cluster, attrs.verb, attrs.resource
        ns, name, sub = attrs.namespace, attrs.name, attrs.subresource
        if kind == "namespaces":
            return self._namespaces(verb, name, body)
        if not ns:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if verb == "list":
            selector = (query.get("labelSelector") or [""])[0]
            items = [
                o
                for o in c.of_kind(kind, ns)
                if _matches(o["metadata"].get("labels") or {}, selector)
            ]
            return 200, {
                "apiVersion": "apps/v1" if kind == "statefulsets" else "v1",
                "kind": f"{_KINDS.get(kind, 'Object')}List",
                "metadata": {"resourceVersion": "100"},
                "items": items,
            }
        if verb == "create" and not name:
            return self._create(kind, ns, body)
        obj = c.get(kind, ns, name)
        if obj is None:
            raise not_found(kind, name, attrs.group)
        if verb == "get" and not sub:
            return 200, obj
        if verb == "update" and kind in _WRITABLE and not sub:
            return 200, c.store_written(kind, ns, name, body)
        if verb == "delete" and kind == "pods":
            return 200, c.delete_pod(ns, name, _grace(query, body)) or obj
        if verb == "delete" and kind == "persistentvolumeclaims":
            return 200, c.delete_pvc(ns, name) or obj
        if verb == "delete" and kind == "serviceaccounts":
            del c.objects[(kind, ns, name)]
            return 200, obj
        if verb == "patch" and kind == "pods" and not sub and isinstance(body, list):
            return 200, _json_patch_metadata(obj, body)
        if verb == "patch" and kind == "statefulsets" and not sub:
            meta = (body or {}).get("metadata") or {}
            for key in ("annotations", "labels"):
                if meta.get(key):
                    obj["metadata"].setdefault(key, {}).update(meta[key])
            return 200, obj
        if verb == "patch" and kind == "statefulsets" and sub == "scale":
            replicas = int(body["spec"]["replicas"])
            obj["spec"]["replicas"] = replicas
            c.scale(ns, replicas)
            return 200, {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": _meta(name, ns),
                "spec": {"replicas": replicas},
                "status": {"replicas": replicas, "selector": "app.kubernetes.io/instance=openbao"},
            }
        if verb == "create" and kind == "serviceaccounts" and sub == "token":
            return self._token_request(ns, name, body)
        raise ApiError(
            405, "MethodNotAllowed", f"{self.command} {self.path} is not supported by the fake"
        )

    def _namespaces(self, verb: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        c = self.cluster
        if verb == "list":
            return 200, {
                "apiVersion": "v1",
                "kind": "NamespaceList",
                "metadata": {"resourceVersion": "100"},
                "items": c.of_kind("namespaces"),
            }
        if verb == "create" and not name:
            meta = (body or {}).get("metadata") or {}
            new = str(meta.get("name") or "")
            if c.get("namespaces", "", new) is not None:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'namespaces "{new}" already exists',
                    name=new,
                    kind="namespaces",
                )
            created = c.add_namespace(
                new, labels=meta.get("labels"), annotations=meta.get("annotations")
            )
            return 201, created
        obj = c.get("namespaces", "", name)
        if obj is None:
            raise not_found("namespaces", name)
        if verb == "get":
            return 200, obj
        if verb == "delete":
            return 200, c.delete_namespace(name)
        raise ApiError(405, "MethodNotAllowed", f"{self.command} {self.path} is not supported")

    def _create(self, kind: str, ns: str, body: Any) -> tuple[int, dict[str, Any]]:
        """POST to a collection: 409 AlreadyExists for a taken name (registry/store.go Create)."""
        c = self.cluster
        meta = (body or {}).get("metadata") or {}
        name = str(meta.get("name") or "")
        if kind not in _WRITABLE and kind != "serviceaccounts":
            raise ApiError(405, "MethodNotAllowed", f"creating {kind} is not supported by the fake")
        if c.get(kind, ns, name) is not None:
            raise ApiError(
                409, "AlreadyExists", f'{kind} "{name}" already exists', name=name, kind=kind
            )
        if kind == "serviceaccounts":
            return 201, c.add_service_account(ns, name, labels=meta.get("labels"))
        return 201, c.store_written(kind, ns, name, body)

    def _token_request(self, ns: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        """pkg/registry/core/serviceaccount/storage/token.go TokenREST.Create: the service
        account is looked up first (its 404), then the request is validated
        (pkg/apis/authentication/validation/validation.go ValidateTokenRequest: at least
        10 minutes, at most 2^32 s: a 422 Invalid); expirationSeconds defaults to 3600
        (pkg/apis/authentication/v1/defaults.go)."""
        c = self.cluster
        if c.get("serviceaccounts", ns, name) is None:
            raise not_found("serviceaccounts", name)
        spec = (body or {}).get("spec") or {}
        seconds = int(spec.get("expirationSeconds") or 3600)
        problem = None
        if seconds < MIN_TOKEN_SECONDS:
            problem = "may not specify a duration less than 10 minutes"
        elif seconds > 1 << 32:
            problem = "may not specify a duration larger than 2^32 seconds"
        if problem:
            cause = f"Invalid value: {seconds}: {problem}"
            raise ApiError(
                422,
                "Invalid",
                f'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: {cause}',
                group="authentication.k8s.io",
                kind="TokenRequest",
                causes=[
                    {
                        "reason": "FieldValueInvalid",
                        "message": cause,
                        "field": "spec.expirationSeconds",
                    }
                ],
            )
        audiences = list(spec.get("audiences") or [API_AUDIENCE])
        token = c.mint_token(ns, name, seconds=seconds, audiences=audiences)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        return 201, {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": _now()},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": None},
            "status": {"token": token, "expirationTimestamp": _stamp(expires)},
        }


def _json_patch_metadata(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """An RFC 6902 JSON patch (``application/json-patch+json``) of ``/metadata/labels`` or
    ``/metadata/annotations`` (and keys in them, ``~1`` for "/"): what OpenBao's service
    registration sends (openbao internal/serviceregistration/kubernetes/client/client.go
    PatchPod; retry_handler.go patches ``/metadata/labels`` and ``/metadata/labels/<key>``)."""
    for op in ops:
        path = str(op.get("path") or "").split("/")[1:]
        if path[:1] != ["metadata"] or len(path) < 2 or path[1] not in ("labels", "annotations"):
            raise ApiError(422, "Invalid", f"the fake patches metadata only, not {op.get('path')}")
        meta = obj["metadata"]
        if len(path) == 2:
            if op["op"] in ("add", "replace"):
                meta[path[1]] = dict(op.get("value") or {})
            continue
        key = path[2].replace("~1", "/").replace("~0", "~")
        target = meta.setdefault(path[1], {})
        if op["op"] in ("add", "replace"):
            target[key] = str(op.get("value"))
        elif op["op"] == "remove":
            target.pop(key, None)
    meta = obj["metadata"]
    meta["resourceVersion"] = str(int(meta.get("resourceVersion") or "1") + 1)
    return obj


def _ws_frame(payload: bytes, *, opcode: int = 0x2) -> bytes:
    """A server-to-client websocket frame (unmasked)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _ws_read(sock: socket.socket) -> tuple[int, bytes] | None:
    """One client-to-server frame (masked), or None at the end of the stream."""
    try:
        first, second = _read_exactly(sock, 2)
    except ConnectionError:
        return None
    n = second & 0x7F
    if n == 126:
        n = struct.unpack(">H", _read_exactly(sock, 2))[0]
    elif n == 127:
        n = struct.unpack(">Q", _read_exactly(sock, 8))[0]
    mask = _read_exactly(sock, 4) if second & 0x80 else b"\0\0\0\0"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(_read_exactly(sock, n)))
    return first & 0x0F, payload


class FakeKubeApi:
    """The fake cluster served on 127.0.0.1:<free port>, with a kubeconfig pointing at it, and
    the reaper thread that runs its controllers (graceful deletions end on time)."""

    def __init__(self, cluster: FakeCluster, *, reap_interval: float = 0.05) -> None:
        self.cluster = cluster
        handler = type("Handler", (_Handler,), {"cluster": cluster})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._stop = threading.Event()
        self._tls_servers: list[ThreadingHTTPServer] = []
        self._reaper = threading.Thread(
            target=self._reap, args=(reap_interval,), name="fake-kube reaper", daemon=True
        )
        self._reaper.start()

    def _reap(self, interval: float) -> None:
        while not self._stop.wait(interval):
            # A test may change ``objects`` without the lock; the next round sees it settled.
            with contextlib.suppress(RuntimeError):
                self.cluster.tick()

    def serve_tls(self, cert_file: Path, key_file: Path) -> int:
        """Serve the same API over HTTPS on 127.0.0.1 too (the in-cluster address,
        ``https://kubernetes.default.svc``); its port."""
        import ssl

        handler = type("TlsHandler", (_Handler,), {"cluster": self.cluster})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_file), str(key_file))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._tls_servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return int(server.server_address[1])

    def write_kubeconfig(self, path: Path, context: str, *, token: str = ADMIN_TOKEN) -> Path:
        """A kubeconfig for ``context``: the cluster admin, or the user of ``token``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": token}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def stop(self) -> None:
        self._stop.set()
        for server in [self.server, *self._tls_servers]:
            server.shutdown()
            server.server_close()
        self._reaper.join(timeout=5)
