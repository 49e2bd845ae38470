"""Port-forward churn: requests/s and websockets opened per 100 requests through a node's forward.

The Kubernetes API is tests/fake_kube.py's (a real websocket upgrade per stream, on
loopback, plain HTTP); the pod is a real HTTPS server that keeps connections alive
(tests/test_port_forward.py's ``PodServer``). Each request is one ``sys/leader`` read
with a new client object, as the timeline's poller makes it.

Modes:

* ``per-connection``: what vaultdr did before: every request on a new client with
  connections of its own, so every request is a new TCP connection and a new websocket,
  and no websocket is opened ahead (``ready=0``).
* ``per-connection+ready``: the same clients, with the forwarder's ready websockets
  (a new connection does not wait for the upgrade).
* ``kept-alive``: ``env.client(node)``: the node's kept-alive connections, so the
  websockets opened do not grow with the requests.

On a real cluster each upgrade also pays TLS to the API server and the API server's
hop to the kubelet, so the gap is wider there than on loopback.

Usage: python benchmarks/kube_port_forward.py [--requests 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fake_kube import FakeCluster, FakeKubeApi  # noqa: E402
from tests.test_port_forward import POD, PodServer, kube_stack  # noqa: E402
from vaultdr.envs.kube import deploy  # noqa: E402
from vaultdr.envs.kube.api import PortForwarder  # noqa: E402
from vaultdr.envs.kube.clusters import KindEnvironment  # noqa: E402
from vaultdr.envs.tls import LocalCA  # noqa: E402
from vaultdr.vault import VaultClient  # noqa: E402

MODES = ("per-connection", "per-connection+ready", "kept-alive")


def run(mode: str, requests: int, tmp: Path) -> tuple[float, float]:
    """(requests/s, websockets opened per 100 requests) of one mode."""
    state = tmp / mode / "state"
    hosts = deploy.node_hosts(KindEnvironment(Path("/nonexistent"), kube_stack()))
    pair = LocalCA(state / "ca").issue_server_cert("openbao", tmp / mode / "tls", hosts=hosts)
    pod = PodServer(pair.cert, pair.key)
    cluster = FakeCluster(namespace="vaultdr")
    cluster.populate()
    cluster.forward_to[POD] = ("127.0.0.1", pod.port)
    fake = FakeKubeApi(cluster)
    kubeconfig = fake.write_kubeconfig(tmp / mode / "kubeconfig", "kind-vaultdr")
    env = KindEnvironment(state, kube_stack(), kubeconfig=str(kubeconfig))
    forwarder = None
    if mode != "kept-alive":
        ready = 0 if mode == "per-connection" else 1
        forwarder = PortForwarder(env.api, env.namespace, POD, 8200, ready=ready)
    try:
        ca_file = env.ca_file()
        if forwarder is None:
            env.node_address(POD)  # the env's own forwarder
        time.sleep(0.2)  # the ready websockets open, as they do between polls
        started = time.monotonic()
        for _ in range(requests):
            if forwarder is None:
                client = env.client(POD).with_timeout(5.0)
            else:
                address = f"https://127.0.0.1:{forwarder.local_port}"
                client = VaultClient(address, ca_file=ca_file, timeout=5.0)
            assert client.read_leader()["is_self"]
        elapsed = time.monotonic() - started
    finally:
        if forwarder is not None:
            forwarder.close()
        env.close()
        pod.kill()
        fake.stop()
    upgrades = sum(1 for r in cluster.requests if r.path.endswith("/portforward"))
    return requests / elapsed, upgrades * 100 / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print(f"{'mode':<22} {'requests/s':>11} {'websockets/100 requests':>24}")
    with tempfile.TemporaryDirectory(prefix="vaultdr-forward-") as tmp:
        for mode in MODES:
            rate, per_100 = run(mode, args.requests, Path(tmp))
            print(f"{mode:<22} {rate:>11.1f} {per_100:>24.1f}")


if __name__ == "__main__":
    main()
