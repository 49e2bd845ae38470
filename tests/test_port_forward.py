"""Port-forwarding to the nodes' pods: few websockets, bounded waits, recovery after a pod is gone.

The Kubernetes API is tests/fake_kube.py's (a real websocket upgrade, the kubelet's
channel protocol); the pod behind it is a real HTTPS server on loopback that keeps
connections alive as Vault and OpenBao do (HTTP/1.1), so what is counted here is what
a real run pays: websocket upgrades per request, and how long a dead end takes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fake_kube import FakeCluster, FakeKubeApi
from vaultdr.config import Kube, Stack
from vaultdr.envs.kube import deploy
from vaultdr.envs.kube.api import READY_STREAMS, KubeApi, PortForwarder, PortForwardError
from vaultdr.envs.kube.clusters import KindEnvironment
from vaultdr.envs.tls import LocalCA
from vaultdr.errors import EXIT_HARNESS, VaultApiError
from vaultdr.vault import VaultClient

NS = "vaultdr"
POD = "openbao-1"
ADMIN_TOKEN = "fake-admin-token"  # the fake kubeconfig's bearer token: never in an error


class PodServer:
    """The engine's API in one pod: HTTPS, HTTP/1.1 keep-alive, ``sys/leader`` and
    ``sys/seal-status``. ``kill()`` ends it the way a deleted pod does: the listener and
    every open connection go at once."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.connections = 0
        self.requests = 0
        #: The connections that carried at least one request (a ready one may carry none).
        self.served: set[int] = set()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        pod = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                # Go's net package (Vault's server) turns Nagle off on every connection.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with pod._lock:
                    pod.connections += 1
                    pod._open.append(self.request)
                super().setup()

            def do_GET(self) -> None:
                with pod._lock:
                    pod.requests += 1
                    pod.served.add(id(self.request))
                if self.path.startswith("/v1/sys/leader"):
                    answer: dict[str, Any] = {"ha_enabled": True, "is_self": True}
                else:
                    answer = {"initialized": True, "sealed": False, "version": "2.6.2"}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        # The TLS handshake in each connection's thread, as a real server does it.
        self.server.socket = context.wrap_socket(
            self.server.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            open_connections, self._open = self._open, []
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def kube_stack() -> Stack:
    return Stack(cluster="vaultdr-kind", kube=Kube())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def pod_cert(tmp_path: Path, state: Path) -> tuple[Path, Path]:
    """A server certificate of the CA where `up` keeps it (the env trusts that CA)."""
    hosts = deploy.node_hosts(KindEnvironment(Path("/nonexistent"), kube_stack()))
    pair = LocalCA(state / "ca").issue_server_cert("openbao", tmp_path / "tls", hosts=hosts)
    return pair.cert, pair.key


@pytest.fixture
def pod(cluster: FakeCluster, pod_cert: tuple[Path, Path]) -> Iterator[PodServer]:
    server = PodServer(*pod_cert)
    cluster.forward_to[POD] = ("127.0.0.1", server.port)
    yield server
    server.kill()


@pytest.fixture
def env(tmp_path: Path, state: Path, kube_api: FakeKubeApi) -> Iterator[KindEnvironment]:
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig", "kind-vaultdr")
    environment = KindEnvironment(state, kube_stack(), kubeconfig=str(kubeconfig))
    yield environment
    environment.close()


def upgrades(cluster: FakeCluster) -> int:
    with cluster.lock:
        return sum(1 for r in cluster.requests if r.path.endswith("/portforward"))


def poll(env: KindEnvironment, node: str = POD) -> bool:
    """One poll as the timeline makes it: a new client object, a short timeout."""
    return bool(env.client(node).with_timeout(2.0).read_leader()["is_self"])


# --- churn ----------------------------------------------------------------------------------------
def test_fifty_sequential_polls_open_a_constant_number_of_websockets(
    env: KindEnvironment, cluster: FakeCluster, pod: PodServer
) -> None:
    for _ in range(50):
        assert poll(env)
        assert env.client(POD).read_seal_status()["sealed"] is False

    assert pod.requests == 100
    assert upgrades(cluster) <= READY_STREAMS + 1, "each poll paid a websocket"
    assert len(pod.served) == 1, "the polls did not keep their connection alive"


def test_sessions_with_other_tokens_and_timeouts_share_the_nodes_connections(
    env: KindEnvironment, cluster: FakeCluster, pod: PodServer
) -> None:
    client = env.client(POD, token="a-token")
    for i in range(10):
        assert client.with_timeout(1.0 + i).with_token(f"token-{i}").read_leader()["is_self"]
    assert len(pod.served) == 1


def test_concurrent_connections_each_get_a_stream_and_rest_calls_keep_working(
    env: KindEnvironment, cluster: FakeCluster, pod: PodServer
) -> None:
    """Several clients at once (the timeline, the ledger, a login) while REST calls go on
    through the same API client: every answer arrives, none is sent down a websocket."""
    failures: list[BaseException] = []

    def client_thread() -> None:
        try:
            for _ in range(5):
                # a client object of its own (its own connection), as a fresh poller has
                address = env.node_address(POD)
                assert VaultClient(address, ca_file=env.ca_file(), timeout=5.0).read_leader()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            failures.append(exc)

    def rest_thread() -> None:
        try:
            for _ in range(20):
                assert len(env.api.list_pods(NS, env.pod_selector())) == 3
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=client_thread) for _ in range(4)]
    threads += [threading.Thread(target=rest_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a request hung"
    assert failures == []
    assert pod.requests == 20


# --- a pod that goes and comes back ------------------------------------------------------------------
def test_a_deleted_pod_answers_refused_promptly_and_is_reached_again_when_it_is_back(
    env: KindEnvironment, cluster: FakeCluster, pod: PodServer, pod_cert: tuple[Path, Path]
) -> None:
    assert poll(env)
    address = env.node_address(POD)

    pod.kill()  # the pod is deleted: its streams end, the API has no such pod
    del cluster.forward_to[POD]
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(VaultApiError, match="cannot reach"):
            poll(env)
    assert time.monotonic() - started < 3.0, "a gone pod must read as down at once"

    back = PodServer(*pod_cert)  # the StatefulSet recreates it
    cluster.forward_to[POD] = ("127.0.0.1", back.port)
    try:
        assert poll(env)
        assert env.node_address(POD) == address, "the same forward serves the new pod"
        before = upgrades(cluster)
        for _ in range(20):
            assert poll(env)
        assert upgrades(cluster) - before <= READY_STREAMS + 1
    finally:
        back.kill()


def test_a_forward_to_a_missing_pod_is_a_clear_error_without_the_token(
    env: KindEnvironment, cluster: FakeCluster
) -> None:
    with pytest.raises(PortForwardError) as caught:
        env.api.open_port_forward(NS, "openbao-7", 8200)
    error = caught.value
    assert "port-forward to vaultdr/openbao-7:8200 failed: 404" in error.message
    assert "does not exist" in (error.hint or "")
    assert error.exit_code == EXIT_HARNESS
    assert ADMIN_TOKEN not in f"{error.message} {error.hint}"


# --- timeouts ---------------------------------------------------------------------------------------
class SilentApi:
    """A "Kubernetes API" that accepts TCP and then says nothing (``upgrade=False``), or
    answers the websocket upgrade and then sends no frame (``upgrade=True``)."""

    def __init__(self, *, upgrade: bool) -> None:
        self.upgrade = upgrade
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)
            if self.upgrade:
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        import base64
        import hashlib

        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                return
            request += chunk
        headers = dict(
            line.split(": ", 1) for line in request.decode().split("\r\n")[1:] if ": " in line
        )
        key = {k.lower(): v for k, v in headers.items()}["sec-websocket-key"]
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n".encode()
            + b"Sec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
        )

    def api(self, tmp_path: Path) -> KubeApi:
        kubeconfig = tmp_path / "silent-kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "s", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "s", "user": {"token": ADMIN_TOKEN}}],
                    "contexts": [{"name": "s", "context": {"cluster": "s", "user": "s"}}],
                    "current-context": "s",
                }
            )
        )
        return KubeApi.from_kubeconfig(kubeconfig=str(kubeconfig))

    def stop(self) -> None:
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentApi]:
    server = SilentApi(upgrade=False)
    yield server
    server.stop()


@pytest.fixture
def mute_pod() -> Iterator[SilentApi]:
    server = SilentApi(upgrade=True)
    yield server
    server.stop()


def test_an_api_that_never_answers_the_upgrade_fails_within_the_connect_timeout(
    tmp_path: Path, silent: SilentApi
) -> None:
    api = silent.api(tmp_path)
    started = time.monotonic()
    with pytest.raises(PortForwardError) as caught:
        api.open_port_forward(NS, POD, 8200, timeout=(0.5, 0.5))
    elapsed = time.monotonic() - started

    assert silent.accepted == 1
    assert 0.4 < elapsed < 5.0
    assert "did not answer the websocket upgrade within 0.5 s" in caught.value.message
    assert ADMIN_TOKEN not in f"{caught.value.message} {caught.value.hint}"


def test_a_pod_stream_that_never_begins_fails_within_the_read_timeout(
    tmp_path: Path, mute_pod: SilentApi
) -> None:
    api = mute_pod.api(tmp_path)
    started = time.monotonic()
    with pytest.raises(PortForwardError, match=r"did not begin within 0\.5 s"):
        api.open_port_forward(NS, POD, 8200, timeout=(2.0, 0.5))
    assert time.monotonic() - started < 5.0


def test_a_local_connection_to_an_unanswering_api_is_closed_not_left_hanging(
    tmp_path: Path, silent: SilentApi
) -> None:
    forwarder = PortForwarder(silent.api(tmp_path), NS, POD, 8200, ready=0, timeout=(0.5, 0.5))
    try:
        with socket.create_connection(("127.0.0.1", forwarder.local_port), timeout=10) as conn:
            started = time.monotonic()
            conn.sendall(b"GET /v1/sys/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = conn.recv(1)
            except ConnectionResetError:
                answer = b""
            assert answer == b""  # closed: the client sees a refused request
            assert time.monotonic() - started < 5.0
    finally:
        forwarder.close()


# --- closing, and a pod that dies during the first frames ----------------------------------------
def forward_threads() -> list[threading.Thread]:
    """The forwarders' threads to POD (accept, serve, ready) still alive."""
    names = (f"port-forward {POD}:", f"forward {POD}", f"ready {POD}")
    return [t for t in threading.enumerate() if t.name.startswith(names)]


def test_close_ends_the_accept_thread_and_the_old_port_opens_no_websocket(
    env: KindEnvironment, cluster: FakeCluster, pod: PodServer
) -> None:
    assert poll(env)
    local_port = int(env.node_address(POD).rsplit(":", 1)[1])
    accept = [t for t in threading.enumerate() if t.name == f"port-forward {POD}:8200"]
    assert len(accept) == 1 and accept[0].is_alive()

    env.close()
    assert not accept[0].is_alive(), "close() left the accept thread blocked in accept()"
    time.sleep(0.2)  # a ready websocket being opened as close() ran has finished
    before = upgrades(cluster)
    try:
        with socket.create_connection(("127.0.0.1", local_port), timeout=2) as conn:
            conn.sendall(b"GET /v1/sys/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = conn.recv(1)
            except (ConnectionResetError, TimeoutError):
                answer = b""
            assert answer == b""
    except ConnectionRefusedError:
        pass  # the listener is gone: what a closed forward should be
    time.sleep(0.3)
    assert upgrades(cluster) == before, "a connection to a closed forward opened a websocket"


def test_a_pod_that_resets_during_the_first_frames_closes_the_connection_without_a_traceback(
    env: KindEnvironment,
    cluster: FakeCluster,
    pod: PodServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crashed: list[str] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: crashed.append(f"{args.thread}: {args.exc_type}")
    )
    for frames in (0, 1):
        cluster.forward_to[POD] = ("reset", frames)
        # the open a caller waits for: a PortForwardError, not a bare ConnectionResetError
        with pytest.raises(PortForwardError, match="broke before it began") as caught:
            env.api.open_port_forward(NS, POD, 8200)
        assert ADMIN_TOKEN not in f"{caught.value.message} {caught.value.hint}"

    address = env.node_address(POD)  # its ready websocket meets the reset too
    local_port = int(address.rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", local_port), timeout=10) as conn:
            started = time.monotonic()
            conn.sendall(b"GET /v1/sys/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = conn.recv(1)
            except ConnectionResetError:
                answer = b""
            assert answer == b"", "the local connection was left open"
            assert time.monotonic() - started < 3.0
    with pytest.raises(VaultApiError, match="cannot reach"):
        poll(env)
    for thread in forward_threads():
        if not thread.name.startswith("port-forward"):
            thread.join(5)
    assert crashed == [], "a forward thread died with a traceback"

    cluster.forward_to[POD] = ("127.0.0.1", pod.port)  # the pod is back
    assert poll(env)
    assert env.node_address(POD) == address
    assert crashed == []
