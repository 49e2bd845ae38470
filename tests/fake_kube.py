"""A fake Kubernetes API over real HTTP on 127.0.0.1, for the kube environment's tests.

It holds complete, realistic objects (pods of a StatefulSet with their labels,
conditions and container statuses; PVCs with the ``kubernetes.io/pvc-protection``
finalizer; the StatefulSet; namespaces with annotations; Secrets, ConfigMaps,
Services, ServiceAccounts) so the strict generated client accepts every answer,
and records every request (method, path, query, body) in order.

Semantics it mimics, because the faults depend on them:

* DELETE of a PVC whose pod still exists only sets ``deletionTimestamp`` (the
  protection finalizer); the PVC goes when its pod is deleted.
* DELETE of a pod returns the pod; the StatefulSet controller then recreates it
  (new uid) and, if its claim is gone, a new empty PVC (new uid).
* Errors are ``Status`` objects with the right code and reason.
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
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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

    @property
    def mutating(self) -> bool:
        return self.method in MUTATING


@dataclass
class FakeCluster:
    """The objects and the request log; the HTTP handler reads and changes them under ``lock``."""

    namespace: str = "vaultdr"
    release: str = "openbao"
    replicas: int = 3
    active_label: str = "openbao-active"
    leader: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[Request] = field(default_factory=list)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    #: Where a port-forward to a pod really goes: pod name -> (host, port) on loopback.
    forward_to: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: The kind cluster whose nodes the API lists (None: nodes that are not kind's).
    kind_cluster: str | None = "vaultdr"
    #: What a pods/exec runs in: pod name -> the PATH the command is found on (a
    #: directory the test fills: ``sh``, ``pidof``); a pod absent here has no tools at all.
    exec_path: dict[str, str] = field(default_factory=dict)
    #: Every pods/exec: {"pod", "container", "command"}, in order.
    execs: list[dict[str, Any]] = field(default_factory=list)

    # --- building objects -----------------------------------------------------------------------
    def populate(self, *, annotations: dict[str, str] | None = None) -> None:
        ns = self.namespace
        self.put(
            "namespaces",
            "",
            ns,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": _meta(
                    ns,
                    None,
                    labels={"kubernetes.io/metadata.name": ns},
                    annotations=dict(annotations or {}),
                ),
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )
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
        for sa in ("openbao", "vaultdr-snapshot", "web"):
            self.put(
                "serviceaccounts",
                ns,
                sa,
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(sa, ns)},
            )

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
                "terminationGracePeriodSeconds": 10,
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

    def mutations(self) -> list[tuple[str, str]]:
        """(method, path) of every mutating request, in order."""
        return [(r.method, r.path) for r in self.requests if r.mutating]

    def uid(self, kind: str, name: str) -> str:
        obj = self.get(kind, self.namespace, name)
        return str(obj["metadata"]["uid"]) if obj else ""

    # --- behaviour ------------------------------------------------------------------------------
    def pod_uses(self, ns: str, claim: str) -> bool:
        for (kind, pod_ns, _), pod in self.objects.items():
            if kind != "pods" or pod_ns != ns:
                continue
            for volume in pod["spec"].get("volumes", []):
                if volume.get("persistentVolumeClaim", {}).get("claimName") == claim:
                    return True
        return False

    def delete_pvc(self, ns: str, name: str) -> dict[str, Any] | None:
        pvc = self.get("persistentvolumeclaims", ns, name)
        if pvc is None:
            return None
        pvc = copy.deepcopy(pvc)
        pvc["metadata"].setdefault("deletionTimestamp", _now())
        pvc["metadata"]["deletionGracePeriodSeconds"] = 0
        if self.pod_uses(ns, name):
            self.put("persistentvolumeclaims", ns, name, pvc)  # held by pvc-protection
        else:
            del self.objects[("persistentvolumeclaims", ns, name)]
        return pvc

    def delete_pod(self, ns: str, name: str) -> dict[str, Any] | None:
        pod = self.objects.pop(("pods", ns, name), None)
        if pod is None:
            return None
        pod = copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = _now()
        pod["metadata"]["deletionGracePeriodSeconds"] = 0
        # The pvc-protection controller lets go of claims no pod uses any more.
        for (kind, pvc_ns, pvc_name), pvc in list(self.objects.items()):
            held = kind == "persistentvolumeclaims" and pvc["metadata"].get("deletionTimestamp")
            if held and not self.pod_uses(pvc_ns, pvc_name):
                del self.objects[(kind, pvc_ns, pvc_name)]
        self.recreate(ns, name)
        return pod

    def scale(self, ns: str, replicas: int) -> None:
        """The StatefulSet controller after a scale: ordinals past ``replicas`` go, missing ones
        below come back (their claims are kept, as a StatefulSet keeps them)."""
        for i in range(max(replicas, self.replicas)):
            name = self.pod_name(i)
            if i >= replicas:
                self.objects.pop(("pods", ns, name), None)
            elif self.get("pods", ns, name) is None:
                self.recreate(ns, name)

    def recreate(self, ns: str, name: str) -> None:
        """The StatefulSet controller: a missing pod of an ordinal within replicas comes back."""
        index = int(name.rsplit("-", 1)[1])
        sts = self.get("statefulsets", ns, self.release)
        if sts is None or index >= int(sts["spec"]["replicas"]):
            return
        claim = f"data-{name}"
        if self.get("persistentvolumeclaims", ns, claim) is None:
            self.put("persistentvolumeclaims", ns, claim, self.pvc(index))
        pod = self.pod(index)
        pod["metadata"]["labels"][self.active_label] = "false"
        self.put("pods", ns, name, pod)


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
#: return AllowCreateOnUpdate() == false. Other kinds are not writable here at all.
_WRITABLE = frozenset({"secrets", "configmaps"})

_KINDS = {
    "pods": "Pod",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "statefulsets": "StatefulSet",
}


#: Kinds a manifest (``kubectl apply``-style, as ``KubeApi.create_from_manifest`` posts
#: them) may create here, by API prefix: stored as posted, 409 AlreadyExists when the
#: name exists (k8s.io/apiserver pkg/registry/generic/registry/store.go, Create).
_MANIFEST_KINDS = {
    ("api", "v1"): {"serviceaccounts": "ServiceAccount", "services": "Service"},
    ("apis", "apps", "v1"): {"deployments": "Deployment"},
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
        for prefix, kinds in _MANIFEST_KINDS.items():
            n = len(prefix)
            rest = seg[n:]
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
        if self._upgrade_extra(parts):
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        cluster = self.cluster
        with cluster.lock:
            cluster.requests.append(Request(self.command, parts.path, parse_qs(parts.query), body))
            extra = self._route_extra(parts.path.strip("/").split("/"), body)
            code, answer = extra or self._route(
                parts.path.strip("/").split("/"), parse_qs(parts.query), body
            )
        self._send(code, answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

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
        upstream = socket.create_connection(target)
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

    def _route(
        self, seg: list[str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, dict[str, Any]]:
        c = self.cluster
        if seg[:2] == ["api", "v1"]:
            rest = seg[2:]
        elif seg[:3] == ["apis", "apps", "v1"]:
            rest = seg[3:]
        else:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if rest[:1] == ["namespaces"] and len(rest) == 2:
            ns_obj = c.get("namespaces", "", rest[1])
            if ns_obj is None:
                return 404, _status(404, "NotFound", f'namespaces "{rest[1]}" not found')
            return 200, ns_obj
        if rest[:1] != ["namespaces"] or len(rest) < 3:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        ns, kind = rest[1], rest[2]
        if len(rest) == 3 and self.command == "GET":
            selector = (query.get("labelSelector") or [""])[0]
            items = [
                o
                for (k, o_ns, _), o in sorted(c.objects.items())
                if k == kind
                and o_ns == ns
                and _matches(o["metadata"].get("labels") or {}, selector)
            ]
            api_version = "apps/v1" if kind == "statefulsets" else "v1"
            return 200, {
                "apiVersion": api_version,
                "kind": f"{_KINDS.get(kind, 'Object')}List",
                "metadata": {"resourceVersion": "100"},
                "items": items,
            }
        if len(rest) == 3 and self.command == "POST" and kind in _WRITABLE:
            name = str(body["metadata"]["name"])
            if c.get(kind, ns, name) is not None:
                return 409, _status(409, "AlreadyExists", f'{kind} "{name}" already exists')
            return 201, c.store_written(kind, ns, name, body)
        name = rest[3] if len(rest) > 3 else ""
        sub = rest[4] if len(rest) > 4 else ""
        obj = c.get(kind, ns, name)
        if obj is None:
            return 404, _status(
                404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": kind}
            )
        if self.command == "GET" and not sub:
            return 200, obj
        if self.command == "PUT" and kind in _WRITABLE and not sub:
            return 200, c.store_written(kind, ns, name, body)
        if self.command == "DELETE" and kind == "pods":
            return 200, c.delete_pod(ns, name) or obj
        if self.command == "DELETE" and kind == "persistentvolumeclaims":
            return 200, c.delete_pvc(ns, name) or obj
        if self.command == "PATCH" and kind == "statefulsets" and sub == "scale":
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
        if self.command == "POST" and kind == "serviceaccounts" and sub == "token":
            seconds = int(body["spec"].get("expirationSeconds") or 3600)
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
            return 201, {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
                "spec": {
                    "audiences": body["spec"]["audiences"],
                    "expirationSeconds": seconds,
                    "boundObjectRef": None,
                },
                "status": {
                    "token": "eyJhbGciOiJSUzI1NiJ9.fake-sa-token-" + uuid.uuid4().hex,
                    "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            }
        return 405, _status(405, "MethodNotAllowed", f"{self.command} {self.path} is not supported")


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
    """The fake cluster served on 127.0.0.1:<free port>, with a kubeconfig pointing at it."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        handler = type("Handler", (_Handler,), {"cluster": cluster})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def write_kubeconfig(self, path: Path, context: str) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": context, "user": {"token": "fake-admin-token"}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
