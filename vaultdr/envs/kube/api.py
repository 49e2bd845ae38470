"""The one wrapper around the official ``kubernetes`` client: the calls vaultdr makes, and nothing else.

Every other module reaches a cluster through :class:`KubeApi`; this is the only
module that imports ``kubernetes``. Each method is one API request (or one
listing), named ``verb_noun``, and its docstring names the request it sends.

Errors: a refused or failed request raises :class:`~vaultdr.errors.KubeApiError`
naming the verb, the object and the HTTP status, with a hint for the usual
causes (RBAC, a wrong context, an object that does not exist).

Hazards:

* A TokenRequest answer and a Secret's data are secrets: they are returned to the
  caller only, never logged or put into an error. Errors carry the status and the
  API's ``reason``, never the response body.
* Deleting a PVC while its pod runs only marks it (the ``kubernetes.io/pvc-protection``
  finalizer holds it until the pod is gone): callers that want a node to come back
  empty must delete the PVC first and *then* the pod.
* Port-forwarding goes through the API server's websocket; each local connection
  is carried by its own websocket (one stream per port, no per-stream close in the
  protocol), so a killed pod breaks only the connections to it. The websocket is
  built here, not with ``kubernetes.stream.portforward``: that one has no connect
  timeout and swaps ``call_api`` on the shared ApiClient while it runs, which a REST
  call from another thread would go through.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import certifi
import kubernetes.client
import kubernetes.config
import kubernetes.stream
import kubernetes.utils
import urllib3.exceptions
import websocket as _websocket
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import ws_client

from vaultdr.errors import KubeApiError

log = logging.getLogger("vaultdr.kube")

T = TypeVar("T")

#: ``kubernetes.config``'s loaders are untyped; the models are read as Any below.
_config: Any = kubernetes.config
#: Likewise the websocket helpers of ``kubernetes.stream`` (URL and proxy options).
_ws_client: Any = ws_client

#: A request that never got an answer: urllib3's errors (a refused connection ends as
#: MaxRetryError, which is *not* an OSError), sockets', and a bad answer's ValueError.
_TRANSPORT_ERRORS = (OSError, ValueError, urllib3.exceptions.HTTPError)

#: How long one API request may take (connect, read) before it fails.
REQUEST_TIMEOUT = (5.0, 30.0)

#: (connect, read) of a port-forward websocket; see :meth:`KubeApi.open_port_forward`.
FORWARD_TIMEOUT = (5.0, 10.0)

#: The port-forward websocket subprotocol of the kubelet: two channels per port, data
#: then error (kubernetes staging/src/k8s.io/kubelet/pkg/cri/streaming/portforward/websocket.go,
#: ``v4BinaryWebsocketProtocol``; the client's default v5 protocol is exec's, not port-forward's).
PORT_FORWARD_PROTOCOL = "v4.channel.k8s.io"
_DATA, _ERROR = 0, 1

#: Websockets a forwarder keeps open ahead of new connections, and how long one may wait.
READY_STREAMS = 1
READY_MAX_AGE = 5.0
#: How long :meth:`PortForwarder.close` waits for its accept thread to end.
ACCEPT_JOIN_TIMEOUT = 2.0

_HINTS = {
    401: "the credentials of this kube context were refused: log in again",
    403: "RBAC forbids it: the kube context's user needs this permission in the namespace",
    404: "it does not exist: is the stack installed (`vaultdr up --env ...`) in this namespace?",
    409: "it changed meanwhile: try again",
}


@dataclass(frozen=True)
class PodInfo:
    """What vaultdr needs of a pod: nothing secret."""

    name: str
    uid: str
    labels: dict[str, str]
    phase: str
    ready: bool
    deleting: bool
    node_name: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class NamespaceInfo:
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    phase: str


@dataclass(frozen=True)
class ExecResult:
    """The end of a command run in a pod's container: its exit code and output."""

    exit_code: int
    stdout: str
    stderr: str
    #: The API's message when the command could not run at all (no such executable).
    error: str = ""


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    provider_id: str


@dataclass(frozen=True)
class PvcInfo:
    name: str
    uid: str
    phase: str
    deleting: bool
    finalizers: list[str] = field(default_factory=list)


def kube_contexts(kubeconfig: str | None = None) -> tuple[list[str], str | None]:
    """The context names of the kubeconfig and the current one (``~/.kube/config`` or $KUBECONFIG)."""
    try:
        contexts, active = _config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError) as exc:
        raise KubeApiError(
            f"cannot read the kubeconfig ({type(exc).__name__}: {exc})",
            hint="point $KUBECONFIG at a kubeconfig, or create the cluster first",
        ) from None
    names = [str(c["name"]) for c in contexts or []]
    return names, (str(active["name"]) if active else None)


class KubeApi:
    """Calls to one cluster, through a kube context (default: the current one) or in-cluster."""

    def __init__(self, api_client: Any, *, context: str | None) -> None:
        self._api = api_client
        self.context = context
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)

    @classmethod
    def from_kubeconfig(
        cls, *, context: str | None = None, kubeconfig: str | None = None
    ) -> KubeApi:
        """A client for ``context`` of the kubeconfig (the current context when None)."""
        names, active = kube_contexts(kubeconfig)
        chosen = context or active
        if chosen is None or chosen not in names:
            raise KubeApiError(
                f"kube context {chosen!r} is not in the kubeconfig (contexts: {', '.join(names) or 'none'})",
                hint="create the cluster (`vaultdr up --env kind`) or select the context "
                "(`kubectl config use-context NAME`)",
            )
        try:
            client = _config.new_client_from_config(
                config_file=kubeconfig, context=chosen, persist_config=False
            )
        except (ConfigException, OSError) as exc:
            raise KubeApiError(
                f"cannot load kube context {chosen!r} ({type(exc).__name__}: {exc})",
                hint="check the kubeconfig entry of that context",
            ) from None
        return cls(client, context=chosen)

    @classmethod
    def in_cluster(cls) -> KubeApi:
        """A client with the pod's own service account (the agents in the cluster)."""
        configuration = kubernetes.client.Configuration()
        try:
            _config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise KubeApiError(
                f"not running in a pod ({exc})",
                hint="`vaultdr agent` runs inside the cluster; use the other commands outside",
            ) from None
        return cls(kubernetes.client.ApiClient(configuration), context=None)

    @property
    def host(self) -> str:
        return str(self._api.configuration.host)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._api.close()

    # --- plumbing ----------------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except ApiException as exc:
            raise self._refused(what, exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable(what, exc) from None

    def _optional(self, what: str, call: Callable[[], T]) -> T | None:
        """Like _call, but a 404 (no such object) is None."""
        try:
            return call()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._refused(what, exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable(what, exc) from None

    def _refused(self, what: str, exc: ApiException) -> KubeApiError:
        status = int(exc.status or 0)
        return KubeApiError(
            f"{what} failed: {status} {exc.reason or ''}".rstrip(),
            hint=_HINTS.get(status, f"the Kubernetes API at {self.host} refused it"),
        )

    def _unreachable(self, what: str, exc: BaseException) -> KubeApiError:
        return KubeApiError(
            f"{what} failed: cannot talk to the Kubernetes API at {self.host} ({type(exc).__name__})",
            hint="is the cluster up, and is this the right kube context?",
        )

    # --- namespaces ---------------------------------------------------------------------
    def read_namespace_annotations(self, namespace: str) -> dict[str, str]:
        """GET /api/v1/namespaces/{namespace}: its annotations."""
        ns: Any = self._call(
            f"read namespace {namespace}",
            lambda: self.core.read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT),
        )
        return dict(ns.metadata.annotations or {})

    # --- pods ---------------------------------------------------------------------------
    def list_pods(self, namespace: str, selector: str) -> list[PodInfo]:
        """GET /api/v1/namespaces/{namespace}/pods?labelSelector=..."""
        pods: Any = self._call(
            f"list pods {selector!r} in {namespace}",
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return sorted((_pod_info(p) for p in pods.items), key=lambda p: p.name)

    def read_pod(self, namespace: str, name: str) -> PodInfo | None:
        """GET /api/v1/namespaces/{namespace}/pods/{name}; None when there is none."""
        pod: Any = self._optional(
            f"read pod {namespace}/{name}",
            lambda: self.core.read_namespaced_pod(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        if pod is None:
            return None
        return _pod_info(pod)

    def delete_pod(self, namespace: str, name: str, *, grace_seconds: int | None = None) -> None:
        """DELETE /api/v1/namespaces/{namespace}/pods/{name}; gone already is fine.

        Without ``grace_seconds`` no gracePeriodSeconds is sent: the pod's own
        terminationGracePeriodSeconds applies, as when a kubelet or an outage stops it
        (the pod stays, terminating, until its container has exited). ``0`` is a force
        delete: the object goes at once while its container may still be running."""
        body = kubernetes.client.V1DeleteOptions(grace_period_seconds=grace_seconds)
        kwargs: dict[str, Any] = {}
        if grace_seconds is not None:
            kwargs["grace_period_seconds"] = grace_seconds
        self._delete(
            f"delete pod {namespace}/{name}",
            lambda: self.core.delete_namespaced_pod(
                name, namespace, body=body, _request_timeout=REQUEST_TIMEOUT, **kwargs
            ),
        )

    def wait_pod_gone(self, namespace: str, name: str, uid: str, *, timeout: float) -> bool:
        """Poll GET .../pods/{name} until the pod with ``uid`` is gone (absent, or replaced by
        a pod with another uid); False when it is still there after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            pod = self.read_pod(namespace, name)
            if pod is None or pod.uid != uid:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    # --- persistent volume claims ---------------------------------------------------------
    def read_pvc(self, namespace: str, name: str) -> PvcInfo | None:
        """GET /api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}; None when absent."""
        pvc: Any = self._optional(
            f"read pvc {namespace}/{name}",
            lambda: self.core.read_namespaced_persistent_volume_claim(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        if pvc is None:
            return None
        return PvcInfo(
            name=str(pvc.metadata.name),
            uid=str(pvc.metadata.uid or ""),
            phase=str((pvc.status.phase if pvc.status else None) or "Unknown"),
            deleting=pvc.metadata.deletion_timestamp is not None,
            finalizers=list(pvc.metadata.finalizers or []),
        )

    def delete_pvc(self, namespace: str, name: str) -> None:
        """DELETE /api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}; gone already is fine."""
        self._delete(
            f"delete pvc {namespace}/{name}",
            lambda: self.core.delete_namespaced_persistent_volume_claim(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def _delete(self, what: str, call: Callable[[], Any]) -> None:
        self._optional(what, call)

    # --- statefulsets ---------------------------------------------------------------------
    def read_statefulset_replicas(self, namespace: str, name: str) -> tuple[int, int]:
        """GET /apis/apps/v1/namespaces/{namespace}/statefulsets/{name}: (spec, ready) replicas."""
        sts: Any = self._call(
            f"read statefulset {namespace}/{name}",
            lambda: self.apps.read_namespaced_stateful_set(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        spec = int(sts.spec.replicas if sts.spec.replicas is not None else 1)
        ready = int((sts.status.ready_replicas if sts.status else 0) or 0)
        return spec, ready

    def scale_statefulset(self, namespace: str, name: str, replicas: int) -> None:
        """PATCH /apis/apps/v1/namespaces/{namespace}/statefulsets/{name}/scale (merge patch)."""
        self._call(
            f"scale statefulset {namespace}/{name} to {replicas}",
            lambda: self.apps.patch_namespaced_stateful_set_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    def read_statefulset_annotations(self, namespace: str, name: str) -> dict[str, str]:
        """GET /apis/apps/v1/namespaces/{namespace}/statefulsets/{name}: its annotations."""
        sts: Any = self._call(
            f"read statefulset {namespace}/{name}",
            lambda: self.apps.read_namespaced_stateful_set(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return dict(sts.metadata.annotations or {})

    def annotate_statefulset(self, namespace: str, name: str, key: str, value: str) -> None:
        """PATCH /apis/apps/v1/namespaces/{namespace}/statefulsets/{name} (merge patch of one
        annotation; the pod template is untouched, so no pod restarts)."""
        self._call(
            f"annotate statefulset {namespace}/{name}",
            lambda: self.apps.patch_namespaced_stateful_set(
                name,
                namespace,
                {"metadata": {"annotations": {key: value}}},
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )

    # --- service accounts, secrets ----------------------------------------------------------
    def request_token(
        self, namespace: str, name: str, *, audiences: list[str], ttl_seconds: int
    ) -> str:
        """POST /api/v1/namespaces/{namespace}/serviceaccounts/{name}/token (TokenRequest)."""
        body = kubernetes.client.AuthenticationV1TokenRequest(
            api_version="authentication.k8s.io/v1",
            kind="TokenRequest",
            spec=kubernetes.client.V1TokenRequestSpec(
                audiences=list(audiences), expiration_seconds=int(ttl_seconds)
            ),
        )
        answer: Any = self._call(
            f"request a token for service account {namespace}/{name}",
            lambda: self.core.create_namespaced_service_account_token(
                name, namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return str(answer.status.token)

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """GET /api/v1/namespaces/{namespace}/secrets/{name}: its data, decoded (keep it secret)."""
        secret: Any = self._call(
            f"read secret {namespace}/{name}",
            lambda: self.core.read_namespaced_secret(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        data = secret.data or {}
        return {str(k): base64.b64decode(v).decode() for k, v in data.items()}

    def read_configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        """GET /api/v1/namespaces/{namespace}/configmaps/{name}: its data."""
        cm: Any = self._call(
            f"read configmap {namespace}/{name}",
            lambda: self.core.read_namespaced_config_map(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return {str(k): str(v) for k, v in (cm.data or {}).items()}

    def read_service_selector(self, namespace: str, name: str) -> str:
        """GET /api/v1/namespaces/{namespace}/services/{name}: its pod selector as a label selector."""
        svc: Any = self._call(
            f"read service {namespace}/{name}",
            lambda: self.core.read_namespaced_service(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        selector = dict(svc.spec.selector or {})
        return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))

    def read_namespace(self, namespace: str) -> NamespaceInfo | None:
        """GET /api/v1/namespaces/{namespace}; None when there is none."""
        ns: Any = self._optional(
            f"read namespace {namespace}",
            lambda: self.core.read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT),
        )
        if ns is None:
            return None
        return NamespaceInfo(
            name=str(ns.metadata.name),
            labels=dict(ns.metadata.labels or {}),
            annotations=dict(ns.metadata.annotations or {}),
            phase=str((ns.status.phase if ns.status else None) or "Active"),
        )

    def create_namespace(
        self, namespace: str, *, labels: dict[str, str], annotations: dict[str, str]
    ) -> None:
        """POST /api/v1/namespaces (409 when it exists already)."""
        body = kubernetes.client.V1Namespace(
            api_version="v1",
            kind="Namespace",
            metadata=kubernetes.client.V1ObjectMeta(
                name=namespace, labels=dict(labels), annotations=dict(annotations)
            ),
        )
        self._call(
            f"create namespace {namespace}",
            lambda: self.core.create_namespace(body, _request_timeout=REQUEST_TIMEOUT),
        )

    def delete_namespace(self, namespace: str) -> None:
        """DELETE /api/v1/namespaces/{namespace} (it turns Terminating, then goes with all it
        holds); gone already is fine."""
        self._delete(
            f"delete namespace {namespace}",
            lambda: self.core.delete_namespace(namespace, _request_timeout=REQUEST_TIMEOUT),
        )

    def service_account_exists(self, namespace: str, name: str) -> bool:
        """GET /api/v1/namespaces/{namespace}/serviceaccounts/{name}: whether it exists."""
        found = self._optional(
            f"read service account {namespace}/{name}",
            lambda: self.core.read_namespaced_service_account(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return found is not None

    def create_service_account(self, namespace: str, name: str, *, labels: dict[str, str]) -> None:
        """POST /api/v1/namespaces/{namespace}/serviceaccounts (409 when it exists already)."""
        body = kubernetes.client.V1ServiceAccount(
            api_version="v1",
            kind="ServiceAccount",
            metadata=kubernetes.client.V1ObjectMeta(name=name, labels=dict(labels)),
        )
        self._call(
            f"create service account {namespace}/{name}",
            lambda: self.core.create_namespaced_service_account(
                namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def delete_service_account(self, namespace: str, name: str) -> None:
        """DELETE /api/v1/namespaces/{namespace}/serviceaccounts/{name}; gone already is fine."""
        self._delete(
            f"delete service account {namespace}/{name}",
            lambda: self.core.delete_namespaced_service_account(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def ensure_namespace(self, namespace: str) -> bool:
        """POST /api/v1/namespaces unless it exists; True when it was created now."""
        found = self._optional(
            f"read namespace {namespace}",
            lambda: self.core.read_namespace(namespace, _request_timeout=REQUEST_TIMEOUT),
        )
        if found is not None:
            return False
        body = kubernetes.client.V1Namespace(
            api_version="v1",
            kind="Namespace",
            metadata=kubernetes.client.V1ObjectMeta(
                name=namespace, labels={"app.kubernetes.io/managed-by": "vaultdr"}
            ),
        )
        self._call(
            f"create namespace {namespace}",
            lambda: self.core.create_namespace(body, _request_timeout=REQUEST_TIMEOUT),
        )
        return True

    def apply_secret(self, namespace: str, name: str, data: dict[str, bytes]) -> None:
        """POST (or PUT when it exists) /api/v1/namespaces/{namespace}/secrets[/{name}]."""
        body = kubernetes.client.V1Secret(
            api_version="v1",
            kind="Secret",
            type="Opaque",
            metadata=kubernetes.client.V1ObjectMeta(
                name=name, labels={"app.kubernetes.io/managed-by": "vaultdr"}
            ),
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        )
        exists = self._optional(
            f"read secret {namespace}/{name}",
            lambda: self.core.read_namespaced_secret(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        if exists is None:
            self._call(
                f"create secret {namespace}/{name}",
                lambda: self.core.create_namespaced_secret(
                    namespace, body, _request_timeout=REQUEST_TIMEOUT
                ),
            )
        else:
            self._call(
                f"replace secret {namespace}/{name}",
                lambda: self.core.replace_namespaced_secret(
                    name, namespace, body, _request_timeout=REQUEST_TIMEOUT
                ),
            )

    def write_secret(
        self, namespace: str, name: str, data: dict[str, str], *, labels: dict[str, str]
    ) -> None:
        """POST /api/v1/namespaces/{namespace}/secrets, or PUT .../secrets/{name} when it
        exists (409): needs create and update on Secrets, never get. ``data`` is secret."""
        body = kubernetes.client.V1Secret(
            api_version="v1",
            kind="Secret",
            type="Opaque",
            metadata=kubernetes.client.V1ObjectMeta(name=name, labels=labels),
            string_data=data,
        )
        self._create_or_replace(
            f"secret {namespace}/{name}",
            lambda: self.core.create_namespaced_secret(
                namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
            lambda: self.core.replace_namespaced_secret(
                name, namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def write_configmap(
        self, namespace: str, name: str, data: dict[str, str], *, labels: dict[str, str]
    ) -> None:
        """POST /api/v1/namespaces/{namespace}/configmaps, or PUT .../configmaps/{name}
        when it exists (409): needs create and update on ConfigMaps, never get."""
        body = kubernetes.client.V1ConfigMap(
            api_version="v1",
            kind="ConfigMap",
            metadata=kubernetes.client.V1ObjectMeta(name=name, labels=labels),
            data=data,
        )
        self._create_or_replace(
            f"configmap {namespace}/{name}",
            lambda: self.core.create_namespaced_config_map(
                namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
            lambda: self.core.replace_namespaced_config_map(
                name, namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
        )

    def _create_or_replace(
        self, what: str, create: Callable[[], Any], replace: Callable[[], Any]
    ) -> None:
        try:
            create()
        except ApiException as exc:
            if exc.status != 409:
                raise self._refused(f"create {what}", exc) from None
            self._call(f"replace {what}", replace)
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable(f"create {what}", exc) from None

    def create_from_manifest(
        self, path: str, namespace: str, *, images: Mapping[str, str] | None = None
    ) -> None:
        """POST every object of a YAML manifest; objects that exist already are left as they are.

        ``images`` maps an image repository (the part before the tag) to the image its
        containers and init containers run instead (:func:`replace_images`)."""
        utils: Any = kubernetes.utils
        try:
            if images:
                objects = replace_images(_manifest_objects(path), images)
                utils.create_from_yaml(self._api, yaml_objects=objects, namespace=namespace)
            else:
                utils.create_from_yaml(self._api, path, namespace=namespace)
        except utils.FailToCreateError as exc:
            other = [e for e in exc.api_exceptions if e.status != 409]
            if other:
                raise self._refused(f"create the objects of {path}", other[0]) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(f"create the objects of {path}", exc) from None
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise KubeApiError(
                f"cannot apply {path} ({type(exc).__name__})",
                hint="check that the manifest exists and is valid YAML",
            ) from None

    # --- nodes ---------------------------------------------------------------------------------
    def read_node(self, name: str) -> NodeInfo | None:
        """GET /api/v1/nodes/{name} (cluster-scoped); None when there is none."""
        node: Any = self._optional(
            f"read node {name}",
            lambda: self.core.read_node(name, _request_timeout=REQUEST_TIMEOUT),
        )
        if node is None:
            return None
        return NodeInfo(
            name=str(node.metadata.name),
            labels=dict(node.metadata.labels or {}),
            provider_id=str((node.spec.provider_id if node.spec else None) or ""),
        )

    # --- exec ----------------------------------------------------------------------------------
    def exec_in_pod(
        self,
        namespace: str,
        pod: str,
        command: list[str],
        *,
        container: str | None = None,
        timeout: float = 30.0,
    ) -> ExecResult:
        """GET /api/v1/namespaces/{namespace}/pods/{pod}/exec?command=... (websocket,
        channel protocol): run ``command`` in the container, no stdin, no tty.

        The exit code comes from the error channel (3): a ``Status`` of ``Success``, or
        ``Failure`` whose ``NonZeroExitCode`` cause carries the code (the kubelet's
        remotecommand ServeExec); another failure (the command could not start) is
        exit code -1 with the API's message. A separate ApiClient carries the stream,
        because ``kubernetes.stream.stream`` swaps its client's request method while it
        connects and other threads use this one."""
        api_client: Any = kubernetes.client.ApiClient(self._api.configuration)
        core = kubernetes.client.CoreV1Api(api_client)
        kwargs: dict[str, Any] = {"container": container} if container else {}
        try:
            ws: Any = kubernetes.stream.stream(
                core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=command,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
                **kwargs,
            )
            ws.run_forever(timeout=timeout)
            stdout, stderr = str(ws.read_stdout() or ""), str(ws.read_stderr() or "")
            error = str(ws.read_channel(3) or "")
            open_still = ws.is_open()
            ws.close()
        except ApiException as exc:
            raise self._exec_refused(namespace, pod, exc) from None
        except (OSError, ValueError) as exc:
            raise self._unreachable(f"exec in pod {namespace}/{pod}", exc) from None
        finally:
            with contextlib.suppress(Exception):
                api_client.close()
        if open_still:
            raise KubeApiError(
                f"exec in pod {namespace}/{pod} did not finish within {timeout:.0f} s",
                hint="the container may be overloaded; try again",
            )
        return _exec_result(stdout, stderr, error)

    def _exec_refused(self, namespace: str, pod: str, exc: ApiException) -> KubeApiError:
        """The websocket client reports a refused upgrade as status 0 and the handshake
        line ("Handshake status 404 Not Found -+-+- {headers} ...") as the reason."""
        reason = str(exc.reason or "")
        match = re.search(r"Handshake status (\d{3})( [^-]*)?", reason)
        status = int(exc.status or 0) or (int(match.group(1)) if match else 0)
        said = f"{match.group(1)}{(match.group(2) or '').rstrip()}" if match else str(status)
        hints = {**_HINTS, 400: "the container is not in the pod: is it the engine's pod?"}
        return KubeApiError(
            f"exec in pod {namespace}/{pod} failed: {said}",
            hint=hints.get(status, f"the Kubernetes API at {self.host} refused it"),
        )

    # --- port-forwarding -----------------------------------------------------------------------
    def open_port_forward(
        self,
        namespace: str,
        pod: str,
        port: int,
        *,
        timeout: tuple[float, float] = FORWARD_TIMEOUT,
    ) -> PodStream:
        """GET /api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports=PORT, upgraded to a
        websocket (``v4.channel.k8s.io``): one TCP stream to the pod's port.

        ``timeout`` is (connect, read): the TCP connect, TLS and upgrade must each answer
        within ``connect``; the pod's first frames and every frame once begun within
        ``read``. A failure is a :class:`PortForwardError`, never a hang."""
        what = f"port-forward to {namespace}/{pod}:{port}"
        connect, read = timeout
        # The request the generated connect_get_namespaced_pod_portforward would send,
        # auth included (an exec plugin's token is refreshed here), without sending it.
        _, url, headers, _, _ = self._api.param_serialize(
            method="GET",
            resource_path=f"/api/v1/namespaces/{namespace}/pods/{pod}/portforward",
            query_params=[("ports", str(port))],
            header_params={},
            auth_settings=["BearerToken"],
        )
        try:
            ws = _connect_websocket(self._api.configuration, url, headers, connect)
        except _websocket.WebSocketBadStatusException as exc:
            status = int(exc.status_code)
            raise PortForwardError(
                f"{what} failed: {status} {exc.status_message or ''}".rstrip(),
                hint=_HINTS.get(status, f"the Kubernetes API at {self.host} refused it"),
            ) from None
        except (TimeoutError, _websocket.WebSocketTimeoutException):
            raise PortForwardError(
                f"{what} failed: the Kubernetes API at {self.host} did not answer the "
                f"websocket upgrade within {connect:g} s",
                hint="is the cluster up and the API server reachable from here?",
            ) from None
        except (OSError, _websocket.WebSocketException, ValueError) as exc:
            raise PortForwardError(
                f"{what} failed: cannot talk to the Kubernetes API at {self.host} "
                f"({type(exc).__name__})",
                hint="is the cluster up, and is this the right kube context?",
            ) from None
        return PodStream(ws, port, what=what, read_timeout=read)

    def read_pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
        limit_bytes: int | None = None,
    ) -> str | None:
        """GET /api/v1/namespaces/{namespace}/pods/{name}/log?container=&previous=&tailLines=&limitBytes=

        The log as text; None when the kubelet has none to give, which the API server
        answers 400 BadRequest: with ``previous``, a container that never restarted
        (kubernetes pkg/kubelet/kubelet_pods.go, validateContainerLogStatus:
        ``previous terminated container "C" in pod "P" not found``); without it, a
        container still waiting to start. Logs can quote anything: redact before keeping."""
        what = f"read the {'previous ' if previous else ''}log of pod {namespace}/{name}"
        try:
            text = self.core.read_namespaced_pod_log(
                name,
                namespace,
                container=container,
                previous=previous,
                tail_lines=tail_lines,
                limit_bytes=limit_bytes,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 400:
                return None
            raise self._refused(what, exc) from None
        except _TRANSPORT_ERRORS as exc:
            raise self._unreachable(what, exc) from None
        return str(text)

    def list_events(self, namespace: str) -> list[dict[str, Any]]:
        """GET /api/v1/namespaces/{namespace}/events: every event, oldest first, as
        ``time, type, reason, object, message, count, source`` (the time is the last
        occurrence, else the event time, the first occurrence, the creation)."""
        answer: Any = self._call(
            f"list events in {namespace}",
            lambda: self.core.list_namespaced_event(namespace, _request_timeout=REQUEST_TIMEOUT),
        )
        events = [_event_summary(e) for e in answer.items or []]
        return sorted(events, key=lambda e: (e["time"] or "", e["object"]))

    def read_statefulset_status(self, namespace: str, name: str) -> dict[str, Any] | None:
        """GET /apis/apps/v1/namespaces/{namespace}/statefulsets/{name}: its replicas,
        update strategy and status (the pod template, which may carry env values, left
        out); None when there is none."""
        sts: Any = self._optional(
            f"read statefulset {namespace}/{name}",
            lambda: self.apps.read_namespaced_stateful_set(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        if sts is None:
            return None
        spec = sts.spec
        return {
            "name": str(sts.metadata.name),
            "generation": sts.metadata.generation,
            "deleting": sts.metadata.deletion_timestamp is not None,
            "spec": {
                "replicas": spec.replicas if spec else None,
                "podManagementPolicy": spec.pod_management_policy if spec else None,
                "updateStrategy": self._plain(spec.update_strategy) if spec else None,
                "serviceName": spec.service_name if spec else None,
            },
            "status": self._plain(sts.status) or {},
        }

    def list_pvcs(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        """GET /api/v1/namespaces/{namespace}/persistentvolumeclaims?labelSelector=...:
        each claim's name, uid, phase, deletion, finalizers, capacity and volume."""
        answer: Any = self._call(
            f"list pvcs {selector!r} in {namespace}",
            lambda: self.core.list_namespaced_persistent_volume_claim(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        claims = []
        for pvc in answer.items or []:
            meta, spec, status = pvc.metadata, pvc.spec, pvc.status
            claims.append(
                {
                    "name": str(meta.name),
                    "uid": str(meta.uid or ""),
                    "created": self._plain(meta.creation_timestamp),
                    "deleting": meta.deletion_timestamp is not None,
                    "finalizers": list(meta.finalizers or []),
                    "phase": (status.phase if status else None) or "Unknown",
                    "capacity": dict((status.capacity if status else None) or {}),
                    "storageClassName": spec.storage_class_name if spec else None,
                    "volumeName": spec.volume_name if spec else None,
                }
            )
        return sorted(claims, key=lambda c: c["name"])

    def list_pod_statuses(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """GET /api/v1/namespaces/{namespace}/pods?labelSelector=...: each pod's name, uid,
        labels, node, deletion, container names and status (phase, conditions, container
        states, restarts). The spec, which may carry env values, is left out."""
        answer: Any = self._call(
            f"list pods {selector!r} in {namespace}",
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        pods = []
        for pod in answer.items or []:
            spec = pod.spec
            pods.append(
                {
                    "name": str(pod.metadata.name),
                    "uid": str(pod.metadata.uid or ""),
                    "labels": dict(pod.metadata.labels or {}),
                    "node": spec.node_name if spec else None,
                    "deleting": pod.metadata.deletion_timestamp is not None,
                    "containers": [str(c.name) for c in (spec.containers if spec else None) or []],
                    "init_containers": [
                        str(c.name) for c in (spec.init_containers if spec else None) or []
                    ],
                    "status": self._plain(pod.status) or {},
                }
            )
        return sorted(pods, key=lambda p: p["name"])

    def _plain(self, model: Any) -> Any:
        """A client model as the API's JSON (camelCase keys, times as ISO 8601)."""
        return self._api.sanitize_for_serialization(model)

    # --- secrets others manage -------------------------------------------------------------------
    def read_secret_annotations(self, namespace: str, name: str) -> dict[str, str] | None:
        """GET /api/v1/namespaces/{namespace}/secrets/{name}: its annotations only (e.g.
        cert-manager's ``cert-manager.io/certificate-name``); None when there is no such
        Secret. The data is not returned."""
        secret: Any = self._optional(
            f"read secret {namespace}/{name}",
            lambda: self.core.read_namespaced_secret(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        if secret is None:
            return None
        return {str(k): str(v) for k, v in (secret.metadata.annotations or {}).items()}


class PortForwardError(KubeApiError):
    """A port-forward to a pod could not be opened (refused, unreachable, timed out) or broke."""


def _connect_websocket(
    configuration: Any, url: str, headers: dict[str, str], timeout: float
) -> Any:
    """The upgraded websocket, built as kubernetes.stream.ws_client.create_websocket builds
    it (the same TLS and proxy options), but with a timeout on every step of the connect."""
    ssl_options: dict[str, Any]
    if url.startswith("https://") and configuration.verify_ssl:
        ssl_options = {
            "cert_reqs": ssl.CERT_REQUIRED,
            "ca_certs": configuration.ssl_ca_cert or certifi.where(),
        }
        if configuration.assert_hostname is not None:
            ssl_options["check_hostname"] = configuration.assert_hostname
    else:
        ssl_options = {"cert_reqs": ssl.CERT_NONE}
    if configuration.cert_file:
        ssl_options["certfile"] = configuration.cert_file
    if configuration.key_file:
        ssl_options["keyfile"] = configuration.key_file
    if configuration.tls_server_name:
        ssl_options["server_hostname"] = configuration.tls_server_name
    header = [f"authorization: {headers['authorization']}"] if "authorization" in headers else []
    options: dict[str, Any] = {
        "header": header,
        "subprotocols": [PORT_FORWARD_PROTOCOL],
        "timeout": timeout,
    }
    if configuration.proxy or configuration.proxy_headers:
        options = _ws_client.websocket_proxycare(options, configuration, url, headers)
    ws: Any = _websocket.WebSocket(sslopt=ssl_options, skip_utf8_validation=True)
    ws.connect(_ws_client.get_websocket_url(url), **options)
    return ws


class PodStream:
    """One TCP stream to a pod's port, carried by one port-forward websocket.

    The kubelet first writes the port number (2 bytes, little-endian) on the data and
    the error channel (websocket.go's ``handleWebSocketStreams``); then channel 0 carries
    the data and channel 1 an error message, after which the stream is over. The
    protocol has no per-channel close: the stream ends with the websocket, so a
    websocket serves one TCP connection only.
    """

    def __init__(self, ws: Any, port: int, *, what: str, read_timeout: float) -> None:
        self._ws = ws
        self.what = what
        self.error: str | None = None
        ws.settimeout(read_timeout)
        expected = bytes([port % 256, port // 256])
        try:
            for channel in (_DATA, _ERROR):
                frame = self._frame()
                if frame is None or frame != bytes([channel]) + expected:
                    raise PortForwardError(
                        f"{what} failed: {self.error or 'the stream ended before it began'}",
                        hint="is the pod running? `kubectl get pods` shows it",
                    )
        except (TimeoutError, _websocket.WebSocketTimeoutException):
            self.close()
            raise PortForwardError(
                f"{what} failed: the pod's stream did not begin within {read_timeout:g} s",
                hint="is the pod running and its kubelet reachable from the API server?",
            ) from None
        except PortForwardError:
            self.close()
            raise
        except (OSError, _websocket.WebSocketException) as exc:
            # websocket-client lets a reset or a TLS error through as it is (a pod that
            # died during the first frames): the stream never began.
            self.close()
            raise PortForwardError(
                f"{what} failed: the pod's stream broke before it began ({type(exc).__name__})",
                hint="is the pod running? `kubectl get pods` shows it",
            ) from None
        self.opened = time.monotonic()

    def fileno(self) -> int:
        sock = self._ws.sock
        if sock is None:
            raise OSError(f"{self.what}: the stream is closed")
        return int(sock.fileno())

    def buffered(self) -> bool:
        """True when TLS holds decrypted bytes that select() cannot see."""
        sock = self._ws.sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def idle(self) -> bool:
        """Open, with nothing arrived since it began (no data, no error, no close)."""
        if self._ws.sock is None or self.buffered():
            return False
        readable, _, _ = select.select([self], [], [], 0)
        return not readable

    def recv(self) -> bytes:
        """The next data from the pod; b"" when the stream is over (``error`` says why)."""
        while True:
            try:
                frame = self._frame()
            except (OSError, _websocket.WebSocketException):
                return b""
            if frame is None:
                return b""
            if frame[:1] == bytes([_DATA]) and len(frame) > 1:
                return frame[1:]

    def _frame(self) -> bytes | None:
        """One binary frame's payload, or None at the end (close, or the error channel)."""
        while True:
            try:
                opcode, frame = self._ws.recv_data_frame(True)
            except _websocket.WebSocketConnectionClosedException:
                return None
            if opcode == _websocket.ABNF.OPCODE_CLOSE:
                return None
            if opcode != _websocket.ABNF.OPCODE_BINARY:
                continue  # ping (answered by the client) or pong
            data = bytes(frame.data)
            if data[:1] == bytes([_ERROR]) and len(data) > 3:
                self.error = data[1:].decode(errors="replace")[:300]
                return None
            return data

    def sendall(self, data: bytes) -> None:
        """Send ``data`` to the pod on the data channel."""
        try:
            self._ws.send_binary(bytes([_DATA]) + data)
        except _websocket.WebSocketException as exc:
            raise OSError(f"{self.what}: {type(exc).__name__}") from None

    def wake(self) -> None:
        """Make a select() or recv() on this stream return (from another thread)."""
        with contextlib.suppress(OSError, AttributeError):
            self._ws.abort()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close(timeout=0)
        with contextlib.suppress(Exception):
            self._ws.shutdown()

    # --- diagnostics (read only; what a failed drill keeps as evidence) -------------------------


def _event_summary(event: Any) -> dict[str, Any]:
    when = event.last_timestamp or event.event_time or event.first_timestamp
    when = when or (event.metadata.creation_timestamp if event.metadata else None)
    involved = event.involved_object
    source = event.source
    return {
        "time": when.isoformat() if when is not None else None,
        "type": event.type,
        "reason": event.reason,
        "object": f"{involved.kind or ''}/{involved.name or ''}" if involved else "",
        "message": event.message or "",
        "count": event.count,
        "source": (source.component if source else None) or event.reporting_component,
    }


def _manifest_objects(path: str) -> list[dict[str, Any]]:
    with open(path) as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def image_repository(image: str) -> str:
    """``registry:5000/name`` of ``registry:5000/name:tag`` (or ``...@sha256:...``)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def replace_images(
    objects: list[dict[str, Any]], images: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``objects`` with every container (and init container) of a pod template or pod whose
    image repository is a key of ``images`` running that value instead; a deep copy."""
    replaced = copy.deepcopy(objects)
    for obj in replaced:
        spec = obj.get("spec") or {}
        pod_spec = (spec.get("template") or {}).get("spec") if "template" in spec else spec
        if obj.get("kind") == "CronJob":
            job = (spec.get("jobTemplate") or {}).get("spec") or {}
            pod_spec = (job.get("template") or {}).get("spec")
        for key in ("initContainers", "containers"):
            for container in (pod_spec or {}).get(key) or []:
                wanted = images.get(image_repository(str(container.get("image", ""))))
                if wanted:
                    container["image"] = wanted
    return replaced


def _exec_result(stdout: str, stderr: str, error: str) -> ExecResult:
    """An exec's end from its error channel's ``Status`` (empty: the stream closed without
    one, which the client reads as success)."""
    if not error.strip():
        return ExecResult(0, stdout, stderr)
    try:
        status = json.loads(error)
    except ValueError:
        return ExecResult(-1, stdout, stderr, error=error.strip())
    if status.get("status") == "Success":
        return ExecResult(0, stdout, stderr)
    if status.get("reason") == "NonZeroExitCode":
        causes = (status.get("details") or {}).get("causes") or []
        codes = [c.get("message") for c in causes if c.get("reason") == "ExitCode"]
        with contextlib.suppress(TypeError, ValueError):
            return ExecResult(int(codes[0]), stdout, stderr)
    return ExecResult(-1, stdout, stderr, error=str(status.get("message") or "exec failed"))


def _pod_info(pod: Any) -> PodInfo:
    status = pod.status
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return PodInfo(
        name=str(pod.metadata.name),
        uid=str(pod.metadata.uid or ""),
        labels=dict(pod.metadata.labels or {}),
        phase=str((status.phase if status else None) or "Unknown"),
        ready=ready,
        deleting=pod.metadata.deletion_timestamp is not None,
        node_name=pod.spec.node_name if pod.spec else None,
        ip=status.pod_ip if status else None,
    )


class PortForwarder:
    """A local listener on 127.0.0.1 whose every connection is port-forwarded to one pod.

    ``address`` is ``127.0.0.1:PORT``. Each local connection is carried by its own
    websocket (the protocol has one stream per port and no per-stream close), so the
    churn is kept down above and beside it: clients keep their connections alive
    (:func:`vaultdr.vault.keep_alive_session`), and ``ready`` websockets are opened
    ahead so a new connection does not wait for a handshake. A ready websocket older
    than ``ready_max_age`` is not used: the pod's end of it is an idle TCP connection
    that the server closes after its own timeout (Vault and OpenBao close one that
    sends no request within ``http_read_header_timeout``, 10 s by default). A
    connection that cannot be forwarded (the pod is gone) is closed at once, which a
    client sees as a refused request; a pod that comes back is forwarded to again.
    """

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        pod: str,
        port: int,
        *,
        ready: int = READY_STREAMS,
        ready_max_age: float = READY_MAX_AGE,
        timeout: tuple[float, float] = FORWARD_TIMEOUT,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.pod = pod
        self.port = port
        self.ready = ready
        self.ready_max_age = ready_max_age
        self.timeout = timeout
        self._lock = threading.Lock()
        self._ready: list[PodStream] = []
        self._opening = 0
        self._live: set[tuple[socket.socket, PodStream]] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.local_port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._accept, name=f"port-forward {pod}:{port}", daemon=True
        )
        self._thread.start()
        self._refill()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._stop.is_set():
                conn.close()
                return
            threading.Thread(
                target=self._serve, args=(conn,), name=f"forward {self.pod}", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        if self._stop.is_set():
            conn.close()
            return
        try:
            remote = self._take()
        except KubeApiError as exc:
            log.info("port-forward to %s failed: %s", self.pod, exc.message)
            conn.close()
            return
        except (OSError, _websocket.WebSocketException) as exc:
            log.info("port-forward to %s failed: %s", self.pod, type(exc).__name__)
            conn.close()
            return
        self._refill()
        pair = (conn, remote)
        with self._lock:
            if self._stop.is_set():
                remote.close()
                conn.close()
                return
            self._live.add(pair)
        try:
            _proxy(conn, remote, timeout=self.timeout[1])
        finally:
            with self._lock:
                self._live.discard(pair)
        if remote.error:
            log.info("port-forward to %s ended: %s", self.pod, remote.error)

    def _open(self) -> PodStream:
        return self.api.open_port_forward(self.namespace, self.pod, self.port, timeout=self.timeout)

    def _take(self) -> PodStream:
        """A ready websocket that is young and idle, else a new one."""
        while True:
            with self._lock:
                stream = self._ready.pop(0) if self._ready else None
            if stream is None:
                return self._open()
            if time.monotonic() - stream.opened < self.ready_max_age and stream.idle():
                return stream
            stream.close()

    def _refill(self) -> None:
        """Open websockets in the background until ``ready`` wait; a failure is not retried
        (the next connection opens its own, so a pod that is gone costs one try each)."""
        with self._lock:
            wanted = 0 if self._stop.is_set() else self.ready - len(self._ready) - self._opening
            self._opening += max(0, wanted)
        for _ in range(wanted):
            threading.Thread(target=self._open_ready, name=f"ready {self.pod}", daemon=True).start()

    def _open_ready(self) -> None:
        stream: PodStream | None = None
        try:
            stream = self._open()
        except KubeApiError as exc:
            log.debug("port-forward to %s: no ready stream: %s", self.pod, exc.message)
        except (OSError, _websocket.WebSocketException) as exc:
            log.debug("port-forward to %s: no ready stream: %s", self.pod, type(exc).__name__)
        finally:
            with self._lock:
                self._opening -= 1
                if stream is not None and not self._stop.is_set():
                    self._ready.append(stream)
                    stream = None
        if stream is not None:
            stream.close()

    def close(self) -> None:
        """Stop listening and end every stream (ready or in use)."""
        self._stop.set()
        # close() alone does not wake a thread blocked in accept() on Linux (the socket
        # stays listening until accept returns); shutdown() does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        if self._thread is not threading.current_thread():
            self._thread.join(ACCEPT_JOIN_TIMEOUT)
        with self._lock:
            ready, self._ready = self._ready, []
            live = list(self._live)
        for stream in ready:
            stream.close()
        for conn, remote in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            remote.wake()


def _proxy(conn: socket.socket, remote: PodStream, *, timeout: float) -> None:
    """Copy bytes both ways between a local connection and a pod stream until either ends.

    One thread, select() on both, as the kubernetes client's PortForward does: a TLS
    socket is not read and written from two threads at once. A stall while sending is
    bounded by ``timeout``; an idle kept-alive connection waits for as long as it lives."""
    conn.settimeout(timeout)
    with contextlib.suppress(OSError):  # small requests go out at once, as from Go's net
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    both: list[Any] = [conn, remote]
    try:
        while True:
            if remote.buffered():
                readable: list[Any] = [remote]
            else:
                readable, _, _ = select.select(both, [], [])
            if conn in readable:
                data = conn.recv(65536)
                if not data:
                    return
                remote.sendall(data)
            if remote in readable:
                data = remote.recv()
                if not data:
                    return
                conn.sendall(data)
    except (OSError, ValueError):
        return
    finally:
        remote.close()
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()
