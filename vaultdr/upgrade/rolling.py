"""A rolling upgrade of the local stack, one node at a time, and the pre-flight before it.

The order is the one an operator uses on a StatefulSet with ``OnDelete``:
followers first, the leader last after it has stepped down; each node is stopped
gracefully (SIGTERM, as a pod deletion does), started again on the target binary
(its 'new image', named by the ``binary`` file the supervisor reads), and must
report the target version, be unsealed and the whole cluster healthy (every node
a voter, one active) before the next node is touched.

Pre-flight: before any node is touched, the target binary is started once on a
throwaway data directory with the cluster's own seal stanza and TLS, and without
``retry_join``. A target that cannot even start with this configuration (OpenBao
2.7 no longer knows the ``awskms`` seal) fails here and the cluster is never
touched.

Hazard: a node that does not come back on the target binary is put back on the
binary it ran before and waited for, so a failed check leaves the cluster as it
found it and serving.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vaultdr import checks
from vaultdr.envs.base import Environment
from vaultdr.envs.local import nodes
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.processes import free_port, spawn, stop_pid, wait_for
from vaultdr.envs.local.state import NodeState
from vaultdr.errors import VaultdrError
from vaultdr.upgrade.engines import Engine
from vaultdr.vault import VaultClient

NODE_TIMEOUT = 120.0
PREFLIGHT_TIMEOUT = 45.0
CRASHES_TO_GIVE_UP = 2
_ERROR_LINE = re.compile(r"\b(error|Error|ERROR|panic|fatal)\b")


class UpgradeFailed(VaultdrError):
    """The target version did not come up; ``server_line`` is the server's own words."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", server_line: str = "") -> None:
        super().__init__(message, hint=hint)
        self.server_line = server_line
        self.upgrades: list[NodeUpgrade] = []


@dataclass
class NodeUpgrade:
    """How one node's upgrade went."""

    node: str
    role: str  # follower | leader
    seconds: float
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "role": self.role,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "error": self.error,
        }


Say = Callable[[str], None]


def server_error_line(log_text: str) -> str:
    """The most telling line a server wrote before it gave up ('' when it said nothing)."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    return (errors or lines or [""])[-1][:500]


# --- pre-flight ------------------------------------------------------------------------------
def preflight(env: LocalEnvironment, target: Engine, work: Path) -> None:
    """Start ``target`` alone with the cluster's seal and TLS; raise UpgradeFailed if it cannot."""
    state = env.state
    first = state.nodes[0]
    config_text = first.config_file.read_text()
    seal_at = config_text.find("\nseal ")
    if seal_at < 0:
        raise VaultdrError(f"no seal stanza in {first.config_file}")
    directory = work / "preflight"
    shutil.rmtree(directory, ignore_errors=True)
    probe = NodeState("preflight", free_port(), free_port(), str(directory))
    probe.data_dir.mkdir(parents=True, mode=0o700)
    shutil.copytree(first.dir / "tls", directory / "tls")
    probe.config_file.write_text(
        nodes.render_node_config(
            probe,
            peers=[probe],
            ca_file=Path(state.ca_file),
            seal_stanza=config_text[seal_at + 1 :],
            performance_multiplier=env.stack_config().raft.performance_multiplier,
            engine_kind=state.engine_kind,
        )
    )
    probe.config_file.chmod(0o600)
    proc, _ = spawn(
        "preflight",
        [str(target.binary), "server", f"-config={probe.config_file}"],
        log=probe.log_file,
        detach=False,
    )
    client = VaultClient(probe.api_addr, ca_file=state.ca_file, timeout=2.0)
    try:
        deadline = time.monotonic() + PREFLIGHT_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                line = server_error_line(probe.log_file.read_text(errors="replace"))
                raise UpgradeFailed(
                    f"{target.kind} {target.version} does not start with this cluster's "
                    f"configuration (exit {proc.returncode})",
                    server_line=line,
                )
            with contextlib.suppress(VaultdrError):
                client.read_seal_status()
                return
            time.sleep(0.2)
        raise UpgradeFailed(
            f"{target.kind} {target.version} did not answer within {PREFLIGHT_TIMEOUT:.0f} s "
            "on a throwaway data directory",
            server_line=server_error_line(probe.log_file.read_text(errors="replace")),
        )
    finally:
        stop_pid(proc.pid, grace=10.0)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        shutil.rmtree(directory, ignore_errors=True)


# --- one node ---------------------------------------------------------------------------------
def _exits_since(env: LocalEnvironment, node: str, offset: int) -> int:
    events = env.events_file()
    try:
        with open(events) as stream:
            stream.seek(offset)
            lines = stream.read().splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            count += record.get("event") == "node-exited" and record.get("node") == node
    return count


def _events_offset(env: LocalEnvironment) -> int:
    events = env.events_file()
    return events.stat().st_size if events.exists() else 0


def on_version(env: Environment, node: str, version: str) -> bool:
    """True when ``node``'s own ``sys/health`` reports ``version`` and unsealed."""
    try:
        health = env.client(node).with_timeout(2.0).read_health()
    except VaultdrError:
        return False
    return health.get("version") == version and health.get("sealed") is False


def _healthy(env: Environment, token: str) -> bool:
    return checks.cluster_healthy(env, token).ok


def restart_on(env: LocalEnvironment, name: str, binary: Path | None) -> None:
    """Stop ``name`` gracefully and let the supervisor start it on ``binary`` (None: the stack's)."""
    node = env.state.node(name)
    node.hold_file.touch()
    try:
        record = node.process()
        if record is not None:
            stop_pid(record.pid, record.start_time, grace=15.0)
        wait_for(lambda: not node.pid_file.exists(), timeout=20)
        if binary is None:
            node.binary_file.unlink(missing_ok=True)
        else:
            node.binary_file.write_text(str(binary))
    finally:
        node.hold_file.unlink(missing_ok=True)


def upgrade_node(
    env: LocalEnvironment, name: str, target: Engine, token: str, *, timeout: float = NODE_TIMEOUT
) -> None:
    """Restart ``name`` on ``target``; return once it and the cluster are healthy again."""
    offset = _events_offset(env)
    node = env.state.node(name)
    log_offset = node.log_file.stat().st_size if node.log_file.exists() else 0
    restart_on(env, name, target.binary)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_version(env, name, target.version) and _healthy(env, token):
            return
        if _exits_since(env, name, offset) >= CRASHES_TO_GIVE_UP:
            break
        time.sleep(0.2)
    with open(node.log_file, errors="replace") as stream:
        stream.seek(log_offset)
        line = server_error_line(stream.read())
    crashed = _exits_since(env, name, offset) >= CRASHES_TO_GIVE_UP
    raise UpgradeFailed(
        f"{name} on {target.kind} {target.version} "
        + ("keeps exiting" if crashed else f"was not healthy within {timeout:.0f} s"),
        server_line=line,
    )


def revert_node(env: LocalEnvironment, name: str, token: str, previous: Engine) -> bool:
    """Put ``name`` back on the binary it ran before; True once the cluster is healthy again."""
    restart_on(env, name, None if previous.binary == Path(env.state.binary) else previous.binary)
    return wait_for(
        lambda: on_version(env, name, previous.version) and _healthy(env, token),
        timeout=NODE_TIMEOUT,
        interval=0.25,
    )


# --- the whole cluster ------------------------------------------------------------------------
def upgrade_order(env: Environment) -> tuple[list[str], str]:
    """(followers, leader): the followers in name order, the leader last."""
    leader = env.leader()
    if leader is None:
        raise VaultdrError(
            "no active node: the cluster must be healthy before a rolling upgrade",
            hint="check `vaultdr status`",
        )
    return [n for n in env.node_names() if n != leader], leader


def step_down(env: Environment, leader: str, token: str, *, timeout: float = 30.0) -> str:
    """Make ``leader`` give up leadership; the name of the node that took over."""
    env.client(leader, token=token).step_down()
    found: list[str] = []

    def moved() -> bool:
        now = env.leader()
        if now is not None and now != leader:
            found.append(now)
            return True
        return False

    if not wait_for(moved, timeout=timeout, interval=0.1):
        raise UpgradeFailed(f"{leader} stepped down but no other node took over in {timeout} s")
    return found[-1]


Mark = Callable[[str, str], object]


def roll_nodes(
    env: Environment,
    token: str,
    *,
    upgrade: Callable[[str, str], None],
    revert: Callable[[list[str]], None],
    say: Say,
    mark: Mark | None = None,
) -> list[NodeUpgrade]:
    """The rolling order every environment uses: the followers in name order, then the
    leader after it stepped down (``sys/step-down``), each through ``upgrade(name, role)``
    (role: follower | leader), which
    returns once that node and the cluster are healthy on the target again.

    On an UpgradeFailed, ``revert`` gets every node touched so far (the failing one last)
    and the UpgradeFailed is raised again with what was done."""
    followers, leader = upgrade_order(env)
    done: list[NodeUpgrade] = []
    for name in [*followers, leader]:
        role = "leader" if name == leader else "follower"
        started = time.monotonic()
        try:
            if role == "leader":
                say(f"{name} (leader) steps down")
                if mark:
                    mark("fault:step-down", name)
                step_down(env, name, token)
            if mark:
                mark("fault:upgrade", name)
            upgrade(name, role)
        except UpgradeFailed as exc:
            done.append(NodeUpgrade(name, role, time.monotonic() - started, False, exc.message))
            revert([u.node for u in done])
            exc.upgrades = done
            raise
        done.append(NodeUpgrade(name, role, time.monotonic() - started, True))
    return done


def rolling_upgrade(
    env: LocalEnvironment,
    target: Engine,
    previous: Engine,
    token: str,
    *,
    say: Say,
    mark: Mark | None = None,
) -> list[NodeUpgrade]:
    """Upgrade every node, followers first (:func:`roll_nodes`).

    On a failure the failing node and every node upgraded before it go back to
    ``previous`` (newest first), and UpgradeFailed is raised with what was done.
    """

    def upgrade(name: str, role: str) -> None:
        say(f"upgrading {name} ({role}) to {target.version}")
        upgrade_node(env, name, target, token)

    def revert(names: list[str]) -> None:
        for back in reversed(names):
            say(f"putting {back} back on {previous.version}")
            revert_node(env, back, token, previous)

    return roll_nodes(env, token, upgrade=upgrade, revert=revert, say=say, mark=mark)
