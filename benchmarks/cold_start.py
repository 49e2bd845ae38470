"""Cold start: `vaultdr up` against bringing up 3 bare `bao` raft nodes to unsealed, in one run.

The baseline is the least a person could do by hand for the same cluster shape:
three `bao server` processes (raft, TLS, `retry_join`, the same awskms seal on
an emulator that is already running and bootstrapped, so the baseline is not
charged for it), `sys/init` on the first node, then poll until all three are
unsealed. `vaultdr up` is charged for everything: the emulator, the Kubernetes
API stand-in, the supervisor, init, break-glass storage in SSM, the
configuration, and waiting until all three nodes are raft *voters*.

Usage: python benchmarks/cold_start.py [--rounds N]
Prints each time and the ratio vaultdr / bare (goal: <= 1.3).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from vaultdr.config import load_stack
from vaultdr.envs.local import awsemu, nodes
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.processes import free_port, stop_pid, wait_for
from vaultdr.envs.local.state import NodeState
from vaultdr.envs.tls import LocalCA
from vaultdr.vault import VaultClient

REPO = Path(__file__).resolve().parent.parent
STACK_FILE = REPO / "environments/local/stack.yaml"


def time_vaultdr_up(work: Path) -> float:
    stack = load_stack(STACK_FILE)
    env = LocalEnvironment(work / "vaultdr", stack, stack_file=str(STACK_FILE))
    start = time.monotonic()
    try:
        status = env.up()
        elapsed = time.monotonic() - start
        assert status.healthy, "vaultdr up returned an unhealthy stack"
    finally:
        env.down()
    return elapsed


def time_bare_nodes(work: Path) -> float:
    """3 bare bao processes to all-unsealed, against an emulator started beforehand."""
    stack = load_stack(STACK_FILE)
    binary = nodes.find_binary(stack)
    moto_port = free_port()
    moto = awsemu.start_moto(work / "moto", port=moto_port, log=work / "moto" / "log")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        emu = awsemu.bootstrap(
            f"http://127.0.0.1:{moto_port}", "us-east-1", cluster="bare", bucket="bare-bucket"
        )
        ca = LocalCA(work / "ca")
        seal = nodes.awskms_seal_stanza(
            region=emu.region,
            endpoint=emu.endpoint_url,
            key_id=emu.kms_key_id,
            access_key=emu.seal.access_key_id,
            secret_key=emu.seal.secret_access_key,
        )
        members = [
            NodeState(f"bare-{i}", free_port(), free_port(), str(work / f"bare-{i}"))
            for i in range(3)
        ]
        for node in members:
            ca.issue_server_cert(node.name, node.dir / "tls", hosts=["127.0.0.1"])
            node.data_dir.mkdir(parents=True)
            node.config_file.write_text(
                nodes.render_node_config(
                    node,
                    peers=members,
                    ca_file=ca.cert_path,
                    seal_stanza=seal,
                    performance_multiplier=1,
                )
            )
        clients = [VaultClient(n.api_addr, ca_file=ca.cert_path) for n in members]
        start = time.monotonic()
        for node in members:
            with open(node.log_file, "ab") as log:
                procs.append(
                    subprocess.Popen(
                        [str(binary), "server", f"-config={node.config_file}"],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        assert wait_for(lambda: bool(clients[0].read_seal_status()), timeout=60)
        clients[0].initialize(recovery_shares=1, recovery_threshold=1)
        assert wait_for(
            lambda: all(c.read_seal_status().get("sealed") is False for c in clients),
            timeout=120,
            interval=0.05,
        )
        return time.monotonic() - start
    finally:
        for proc in procs:
            stop_pid(proc.pid)
            proc.wait(timeout=10)
        stop_pid(moto.pid, moto.start_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ups: list[float] = []
    bares: list[float] = []
    for round_no in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="vaultdr-bench-") as tmp:
            bares.append(time_bare_nodes(Path(tmp) / "bare"))
            ups.append(time_vaultdr_up(Path(tmp)))
        print(f"round {round_no + 1}: bare {bares[-1]:.2f} s, vaultdr up {ups[-1]:.2f} s")
    bare, up = statistics.median(bares), statistics.median(ups)
    print(f"\nmedian of {args.rounds}: bare bao 3 nodes to unsealed {bare:.2f} s")
    print(f"median of {args.rounds}: vaultdr up to healthy voters   {up:.2f} s")
    print(f"ratio vaultdr/bare: {up / bare:.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()
