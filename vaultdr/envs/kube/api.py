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
  opens its own stream, so a killed pod breaks only the connections to it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kubernetes.client
import kubernetes.config
import kubernetes.stream
import kubernetes.utils
import urllib3.exceptions
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from vaultdr.errors import KubeApiError

log = logging.getLogger("vaultdr.kube")

T = TypeVar("T")

#: ``kubernetes.config``'s loaders are untyped; the models are read as Any below.
_config: Any = kubernetes.config

#: A request that never got an answer: urllib3's errors (a refused connection ends as
#: MaxRetryError, which is *not* an OSError), sockets', and a bad answer's ValueError.
_TRANSPORT_ERRORS = (OSError, ValueError, urllib3.exceptions.HTTPError)

#: How long one API request may take (connect, read) before it fails.
REQUEST_TIMEOUT = (5.0, 30.0)

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
    def open_port_forward(self, namespace: str, pod: str, port: int) -> Any:
        """GET /api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports=PORT (websocket):
        a socket-like object connected to the pod's port."""
        forward = self._call(
            f"port-forward to {namespace}/{pod}:{port}",
            lambda: kubernetes.stream.portforward(
                self.core.connect_get_namespaced_pod_portforward,
                pod,
                namespace,
                ports=str(port),
            ),
        )
        return forward.socket(port)

    # --- diagnostics (read only; what a failed drill keeps as evidence) -------------------------
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

    ``address`` is ``127.0.0.1:PORT``; a connection that cannot be forwarded (the pod
    is gone) is closed at once, which a client sees as a refused request.
    """

    def __init__(self, api: KubeApi, namespace: str, pod: str, port: int) -> None:
        self.api = api
        self.namespace = namespace
        self.pod = pod
        self.port = port
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

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            remote = self.api.open_port_forward(self.namespace, self.pod, self.port)
        except KubeApiError as exc:
            log.info("port-forward to %s failed: %s", self.pod, exc.message)
            conn.close()
            return
        for source, sink in ((conn, remote), (remote, conn)):
            threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()


def _pump(source: Any, sink: Any) -> None:
    with contextlib.suppress(OSError):
        for chunk in _chunks(source):
            sink.sendall(chunk)
    for end in (sink, source):
        with contextlib.suppress(OSError):
            end.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        source.close()


def _chunks(source: Any) -> Iterator[bytes]:
    while True:
        data = source.recv(65536)
        if not data:
            return
        yield bytes(data)
