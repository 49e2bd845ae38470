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
    #: What each container logged: (pod, container) -> text; the previous container's
    #: under ``previous_logs`` (set by :meth:`restart_container`).
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    previous_logs: dict[tuple[str, str], str] = field(default_factory=dict)
    #: When set, GET of a pod's log and of events answers this status (a failing API).
    diagnostics_failure: int | None = None

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
        for sa in ("openbao", "vaultdr-snapshot", "web"):
            self.put(
                "serviceaccounts",
                ns,
                sa,
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(sa, ns)},
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


class _Handler(BaseHTTPRequestHandler):
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
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        cluster = self.cluster
        with cluster.lock:
            cluster.requests.append(Request(self.command, parts.path, parse_qs(parts.query), body))
            code, answer = self._route(
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
