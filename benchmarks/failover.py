"""Leader failover: the measured RTO beside the raft election timeout it cannot beat.

One local stack (``environments/local/stack.yaml``, ``performance_multiplier =
1``), a write ledger at 10 writes/s and the recovery timeline polling every
100 ms. Five times: wait until healthy, SIGKILL the leader, wait until a new
leader is elected, reads and kubernetes logins work and every node is back.

Printed: per run the phases read off the timeline (leader elected, logins
back = RTO, healthy), their medians, the raft election timeout at this
multiplier (1 s: raft waits at least that long without a heartbeat before a
follower stands for election), the ratio median RTO / election timeout, and
the timeline's detection latency: from the SIGKILL to the poll that saw the
node gone (event time) and to the moment that event was recorded, in ms.

Usage: python benchmarks/failover.py [--runs 5] [--interval 0.1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from vaultdr import faults
from vaultdr.config import load_stack
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.ledger import WriteLedger
from vaultdr.polling import wait_for
from vaultdr.timeline import LoginCheck, Timeline

REPO = Path(__file__).resolve().parent.parent
STACK_FILE = REPO / "environments/local/stack.yaml"
ELECTION_TIMEOUT_SECONDS = 1.0  # raft's 1 s default x performance_multiplier 1


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vaultdr-failover-") as tmp:
        env = LocalEnvironment(
            Path(tmp) / "state", load_stack(STACK_FILE), stack_file=str(STACK_FILE)
        )
        env.up()
        try:
            run(env, args.runs, args.interval)
        finally:
            env.down()


def run(env: LocalEnvironment, runs: int, interval: float) -> None:
    token = env.root_token()
    env.client(token=token).write_kv("secret", "apps/web/config", {"bench": "failover"})
    timeline = Timeline(
        env,
        token,
        interval=interval,
        login=LoginCheck("apps", "web", "web", mount="secret", path="apps/web/config"),
        read_path=("secret", "apps/web/config"),
    )
    ledger = WriteLedger(env, token, rate=10.0)
    timeline.start()
    ledger.start()
    rows: list[dict[str, float | None]] = []
    seen: list[float] = []
    recorded: list[float] = []
    try:
        for i in range(runs):
            assert wait_for(lambda: env.status().healthy, timeout=120, interval=0.5)
            wait_for(lambda: False, timeout=1.0)  # a quiet second between runs
            entry = faults.inject(env, "kill-leader", mark=lambda k, d: timeline.mark(k, **d))
            killed = entry.detail["nodes"][0]
            fault = timeline.last_fault()
            assert fault is not None
            recovery = timeline.wait_recovered(
                120, require=("leader", "serving", "auth_ready", "healthy")
            )
            gone = next(
                (
                    e
                    for e in timeline.events
                    if e.mono >= fault.mono and e.node == killed and e.kind == "node-unreachable"
                ),
                None,
            )
            if gone is not None:
                seen.append((gone.mono - fault.mono) * 1000)
                recorded.append((gone.recorded - fault.mono) * 1000)
            rows.append(
                {"leader": recovery.leader, "rto": recovery.rto, "healthy": recovery.healthy}
            )
            print(
                f"run {i + 1}: killed {killed}; leader elected {recovery.leader} s, "
                f"logins back (RTO) {recovery.rto} s, healthy {recovery.healthy} s",
                flush=True,
            )
    finally:
        ledger.stop()
        timeline.stop()
    report = ledger.verify()
    leaders = [float(r["leader"]) for r in rows if r["leader"] is not None]
    rtos = [float(r["rto"]) for r in rows if r["rto"] is not None]
    print()
    print(f"median leader elected: {median(leaders):.2f} s")
    print(f"median RTO (logins and reads back): {median(rtos):.2f} s")
    print(f"raft election timeout (multiplier 1): {ELECTION_TIMEOUT_SECONDS:.2f} s")
    print(f"ratio median RTO / election timeout: {median(rtos) / ELECTION_TIMEOUT_SECONDS:.2f}")
    print(
        f"timeline detection latency (poll every {interval * 1000:.0f} ms): kill -> poll that saw "
        f"it median {median(seen):.0f} ms (max {max(seen, default=0):.0f}); kill -> recorded "
        f"median {median(recorded):.0f} ms (max {max(recorded, default=0):.0f})"
    )
    print(
        f"write ledger: {report.acknowledged} acknowledged, {len(report.lost)} lost, "
        f"{report.unacknowledged} unacknowledged"
    )


if __name__ == "__main__":
    main()
