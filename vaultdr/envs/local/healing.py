"""The local environment's self-healing: the restore target, the restore watcher, the agents.

The supervisor process runs, beside its node loop, one thread per agent the
stack declares: the snapshot agent (on ``snapshots.interval``) and the restore
watcher (on ``restore.watch_interval``). The watcher acts only once the stack
has finished ``up`` (an uninitialized cluster during ``up`` is not a loss), and
only when every node answers uninitialized on two checks in a row.

Holding a node is the local form of scaling a pod away: a ``hold`` file makes
the supervisor leave the node stopped; removing it lets the node start again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from vaultdr.agents.restore import (
    RestorePlan,
    Restorer,
    RestoreRecord,
    RestoreSettings,
    cluster_is_empty,
)
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.processes import stop_pid, wait_for
from vaultdr.envs.local.state import LocalState
from vaultdr.errors import VaultdrError
from vaultdr.files import write_json_atomic
from vaultdr.vault import VaultClient

log = logging.getLogger("vaultdr.healing")

RESTORE_RETRY_SECONDS = 15.0


class LocalRestoreTarget:
    """:class:`vaultdr.agents.restore.RestoreTarget` over the local processes."""

    def __init__(self, env: LocalEnvironment) -> None:
        self.env = env

    def node_names(self) -> list[str]:
        return self.env.node_names()

    def node_client(self, name: str, *, token: str | None = None) -> VaultClient:
        return self.env.client(name, token=token)

    def hold_node(self, name: str) -> None:
        node = self.env.state.node(name)
        node.hold_file.touch()
        record = node.process()
        if record:
            stop_pid(record.pid, record.start_time, grace=2.0)
        wait_for(lambda: not node.pid_file.exists(), timeout=10)

    def wipe_node(self, name: str) -> None:
        self.env.delete_volume(name)

    def release_node(self, name: str) -> None:
        self.env.state.node(name).hold_file.unlink(missing_ok=True)

    def break_glass(self) -> tuple[str, list[str]]:
        return self.env.root_token(), self.env.recovery_keys()

    def ca_pem(self) -> str:
        return self.env.ca_file().read_text()

    def configure(self) -> int:
        return len(self.env.configure())


def restore_settings(env: LocalEnvironment) -> RestoreSettings:
    stack = env.stack_config()
    return RestoreSettings(
        bucket=env.state.aws["bucket"],
        prefix=stack.snapshots.prefix,
        max_age=stack.restore.max_age,
        recovery_shares=stack.init.recovery_shares,
        recovery_threshold=stack.init.recovery_threshold,
        expected_cluster_id=env.state.cluster_id or None,
        work_dir=agents_dir(env) / "tmp",
        stabilization=stack.raft.autopilot_stabilization,
    )


def agents_dir(env: LocalEnvironment) -> Path:
    path = env.state_dir / "agents"
    (path / "tmp").mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def restorer_for(env: LocalEnvironment) -> Restorer:
    events = env.events_file()

    def on_event(kind: str, fields: dict[str, Any]) -> None:
        record = {"t": time.time(), "mono": time.monotonic(), "event": kind, **fields}
        with open(events, "a") as out:
            out.write(json.dumps(record) + "\n")

    # Snapshots are read as the restore principal; the break-glass material and configure
    # (LocalRestoreTarget) go through the environment's admin, as `up` does.
    return Restorer(
        LocalRestoreTarget(env), env.aws("restore"), restore_settings(env), on_event=on_event
    )


def run_restore(
    env: LocalEnvironment, *, key: str | None = None, force: bool = False, dry_run: bool = False
) -> RestorePlan | RestoreRecord:
    """Restore the (empty) local cluster; records the result in ``agents/restore.json``."""
    env.refresh()
    result = restorer_for(env).run(key=key, force=force, dry_run=dry_run)
    if isinstance(result, RestoreRecord):
        record_restore(env, result)
    return result


def record_restore(env: LocalEnvironment, record: RestoreRecord) -> None:
    directory = agents_dir(env)
    write_json_atomic(directory / "restore.json", record.to_dict())
    with open(directory / "restores.jsonl", "a") as out:
        out.write(json.dumps(record.to_dict()) + "\n")


def stack_is_up(state_dir: Path) -> bool:
    """True once ``up`` has finished (and until ``down``)."""
    state = LocalState.load(state_dir)
    return state is not None and state.phase == "up"


class RestoreWatcher:
    """Restores the cluster by itself when every node comes back empty."""

    def __init__(self, env: LocalEnvironment, *, interval: float) -> None:
        self.env = env
        self.interval = interval

    def run_forever(self, stop: threading.Event) -> None:
        empty_checks = 0
        while not stop.wait(self.interval):
            if not stack_is_up(self.env.state_dir):
                empty_checks = 0
                continue
            target = LocalRestoreTarget(self.env)
            empty_checks = empty_checks + 1 if cluster_is_empty(target) else 0
            if empty_checks < 2:
                continue
            empty_checks = 0
            self.restore_once(stop)

    def restore_once(self, stop: threading.Event) -> None:
        log.warning("every node is empty: restoring from the newest good snapshot")
        try:
            result = run_restore(self.env)
        except VaultdrError as exc:
            log.error("auto-restore failed: %s", exc.message)
            write_json_atomic(
                agents_dir(self.env) / "restore-error.json",
                {"t": time.time(), "error": exc.message},
            )
            stop.wait(RESTORE_RETRY_SECONDS)
            return
        if isinstance(result, RestoreRecord):
            log.warning(
                "auto-restore finished in %.1f s from %s",
                result.total_seconds,
                result.snapshot_key,
            )


def start_agents(state_dir: Path, stop: threading.Event) -> list[threading.Thread]:
    """Start the agent threads the stack declares; they end when ``stop`` is set."""
    env = LocalEnvironment(state_dir)
    stack = env.stack_config()
    threads: list[threading.Thread] = []
    if stack.snapshots.enabled:
        agent = env.snapshot_agent()
        interval = stack.snapshots.interval

        def snapshot_loop() -> None:
            # The agent's role exists once `up` has applied the configuration.
            while not stop.is_set() and not stack_is_up(env.state_dir):
                stop.wait(0.5)
            agent.run_forever(stop, interval)

        threads.append(
            threading.Thread(
                target=snapshot_loop,
                name="snapshot-agent",
                daemon=True,
            )
        )
    if stack.restore.auto:
        watcher = RestoreWatcher(env, interval=stack.restore.watch_interval)
        threads.append(
            threading.Thread(
                target=watcher.run_forever, args=(stop,), name="restore-watcher", daemon=True
            )
        )
    for thread in threads:
        thread.start()
    return threads
