"""StatefulSet semantics for the local nodes: a node that dies comes back.

The supervisor is its own process (``python -m vaultdr.envs.local.supervisor
--state-dir DIR``), started by ``vaultdr up`` and stopped by ``vaultdr down``.
Every ``tick`` it looks at each node:

- the process exited (killed, crashed)   -> start it again, like a pod restart;
- its data dir is gone (a deleted PVC)    -> create it empty first, so the node
  comes back empty, rejoins through ``retry_join`` and auto-unseals;
- a ``hold`` file sits in its directory   -> leave it down (a fault or the
  restore procedure is working on it); removing the file releases it;
- a ``binary`` file sits in its directory -> start it with the server binary
  that file names instead of the stack's (a pod's new image, for a rolling
  upgrade); removing the file goes back to the stack's binary;
- it keeps dying at once (a seal that refuses to configure, a bad config)
                                          -> back off like CrashLoopBackOff:
  0.5 s, 1 s, 2 s, 4 s, capped at 5 s, reset once it has lived for 10 s.

It also runs the agents that the stack declares (snapshot agent, restore
watcher) when they are available, each in its own thread. Every start and exit
is appended to ``events.jsonl`` with wall and monotonic time, for the drill
timeline. Every second it writes ``agents/heartbeat.json`` (its pid, the time,
and whether each agent thread is alive), so ``vaultdr status`` can tell a dead
supervisor or a dead agent from a healthy one. On SIGTERM it stops every node
it started, then exits.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from vaultdr.envs.local.healing import start_agents
from vaultdr.envs.local.processes import spawn, stop_pid
from vaultdr.envs.local.state import EVENTS_FILE, HEARTBEAT_FILE, LocalState, NodeState
from vaultdr.files import write_json_atomic

TICK_SECONDS = 0.2
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 5.0
HEALTHY_RUN = 10.0
HEARTBEAT_SECONDS = 1.0


class Supervisor:
    """Keeps every node of one local stack running."""

    def __init__(self, state: LocalState, *, binary: str) -> None:
        self.state = state
        self.binary = binary
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {node.name: 0 for node in state.nodes}
        self.started_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.not_before: dict[str, float] = {}
        self.stopping = threading.Event()
        self.events = Path(state.directory) / EVENTS_FILE
        self._lock = threading.Lock()
        self.agents: list[threading.Thread] = []
        self._last_beat = 0.0

    def heartbeat(self) -> None:
        """Say that the supervisor lives, and which agent threads do (for ``status``)."""
        now = time.monotonic()
        if now - self._last_beat < HEARTBEAT_SECONDS:
            return
        self._last_beat = now
        record = {
            "t": time.time(),
            "pid": os.getpid(),
            "agents": {thread.name: thread.is_alive() for thread in self.agents},
        }
        write_json_atomic(Path(self.state.directory) / HEARTBEAT_FILE, record)

    def event(self, kind: str, **fields: object) -> None:
        record = {"t": time.time(), "mono": time.monotonic(), "event": kind, **fields}
        with self._lock, open(self.events, "a") as out:
            out.write(json.dumps(record) + "\n")

    def start_node(self, node: NodeState) -> None:
        if not node.data_dir.exists():
            node.data_dir.mkdir(parents=True, mode=0o700)
            self.event("volume-created", node=node.name)
        binary = self.binary
        if node.binary_file.exists():
            binary = node.binary_file.read_text().strip() or self.binary
        proc, record = spawn(
            node.name,
            [binary, "server", f"-config={node.config_file}"],
            log=node.log_file,
            detach=False,
        )
        self.procs[node.name] = proc
        self.started_at[node.name] = time.monotonic()
        write_json_atomic(node.pid_file, record.to_dict())
        self.event("node-started", node=node.name, pid=proc.pid, binary=binary)

    def check_node(self, node: NodeState) -> None:
        proc = self.procs.get(node.name)
        if proc is not None and proc.poll() is None:
            return
        if proc is not None:
            self.event("node-exited", node=node.name, pid=proc.pid, code=proc.returncode)
            del self.procs[node.name]
            node.pid_file.unlink(missing_ok=True)
            self._schedule_restart(node.name)
        if node.hold_file.exists() or self.stopping.is_set():
            return
        if time.monotonic() < self.not_before.get(node.name, 0.0):
            return
        if proc is not None or node.name in self.started_at:
            self.restarts[node.name] += 1
        self.start_node(node)

    def _schedule_restart(self, name: str) -> None:
        """Restart at once after a long run; back off when the node keeps dying young."""
        lived = time.monotonic() - self.started_at.get(name, 0.0)
        held = self.state.node(name).hold_file.exists()
        if held or lived >= HEALTHY_RUN:
            self.backoff[name] = 0.0
        else:
            previous = self.backoff.get(name, 0.0)
            self.backoff[name] = min(MAX_BACKOFF, previous * 2 if previous else FIRST_BACKOFF)
        self.not_before[name] = time.monotonic() + self.backoff[name]

    def run(self) -> None:
        self.event("supervisor-started")
        while not self.stopping.is_set():
            for node in self.state.nodes:
                self.check_node(node)
            self.heartbeat()
            self.stopping.wait(TICK_SECONDS)
        self.shutdown()

    def shutdown(self) -> None:
        for name, proc in list(self.procs.items()):
            stop_pid(proc.pid, grace=10.0)
            proc.wait(timeout=5)
            self.event("node-stopped", node=name)
        for node in self.state.nodes:
            node.pid_file.unlink(missing_ok=True)
        self.event("supervisor-stopped")

    def request_stop(self, _signum: int, _frame: FrameType | None) -> None:
        self.stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--binary", required=True)
    args = parser.parse_args(argv)
    state = LocalState.load(args.state_dir)
    if state is None:
        print(f"no state.json in {args.state_dir}", file=sys.stderr)
        return 2
    supervisor = Supervisor(state, binary=args.binary)
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    supervisor.agents = start_agents(args.state_dir, supervisor.stopping)
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
