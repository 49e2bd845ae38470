"""The local environment: the whole stack as processes on 127.0.0.1, no cluster needed.

``up`` starts, in order: the AWS emulator (moto, IAM enforced) and its
bootstrap; the Kubernetes API stand-in; the transit KMS when the seal is
``transit``; then the supervisor, which runs the nodes. It initializes the
cluster with recovery keys, puts the root token and recovery keys in SSM (they
are never printed), applies the configuration, and returns only when every
node is initialized, unsealed and a raft voter and one is active. Those steps
are :class:`~vaultdr.envs.local.deploy.LocalDeployment`; ``up`` here claims and
locks the state directory around them.

If any step fails, everything already started is stopped again before the
error is raised: ``up`` never leaves a half-started stack behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vaultdr import statedir
from vaultdr.agents import snapshot as snap
from vaultdr.agents.configure import KubernetesTarget
from vaultdr.aws import Aws
from vaultdr.config import Stack, load_stack
from vaultdr.envs import common
from vaultdr.envs.base import NodeStatus, StackStatus
from vaultdr.envs.base import ssm_path as ssm_path
from vaultdr.envs.common import SA_AUDIENCE, EnvironmentBase
from vaultdr.envs.local import awsemu, deploy, kubeapi, nodes, transit
from vaultdr.envs.local.processes import ProcessRecord, pid_alive, port_in_use, stop_pid, wait_for
from vaultdr.envs.local.state import EVENTS_FILE, HEARTBEAT_FILE, LocalState, NodeState
from vaultdr.errors import ConfigError, StackStateError, VaultdrError
from vaultdr.files import write_json_atomic
from vaultdr.principals import REVOKE_KMS_POLICY
from vaultdr.vault import VaultClient

#: The supervisor writes its heartbeat every second; older than this, it is hung.
HEARTBEAT_STALE_SECONDS = 10.0


class LocalEnvironment(EnvironmentBase):
    """A stack of local processes, found again through its state directory.

    With ``dry_run``, ``up``'s front end shows :meth:`plan_up` instead of calling ``up``."""

    name = "local"

    def __init__(
        self,
        state_dir: Path,
        stack: Stack | None = None,
        *,
        stack_file: str = "",
        dry_run: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.stack = stack
        self.stack_file = stack_file
        self.dry_run = dry_run
        self._state: LocalState | None = None
        self._planned: list[str] | None = None  # while recording a dry run

    # --- state ------------------------------------------------------------------
    @property
    def state(self) -> LocalState:
        if self._state is None:
            self._state = LocalState.load(self.state_dir)
        if self._state is None:
            raise StackStateError(
                f"no local stack in {self.state_dir}",
                hint="start one with `vaultdr up`, or pass --state-dir where it runs",
            )
        return self._state

    def refresh(self) -> None:
        """Forget the cached state; the next use reads state.json again."""
        self._state = None

    def running_processes(self) -> list[ProcessRecord]:
        """Every process of this stack that is alive right now (nodes included)."""
        state = LocalState.load(self.state_dir)
        if state is None:
            return []
        records = [r for r in (state.record(n) for n in state.processes) if r]
        records += [r for r in (node.process() for node in state.nodes) if r]
        return [r for r in records if r.alive()]

    def ca_file(self) -> Path:
        path = Path(self.state.ca_file)
        if not path.is_file():
            raise StackStateError(
                f"the stack's CA certificate {path} is missing",
                hint="the state directory is damaged: `vaultdr down` and `vaultdr up` again",
            )
        return path

    def node_names(self) -> list[str]:
        return [node.name for node in self.state.nodes]

    def node_addresses(self) -> list[str]:
        return [node.api_addr for node in self.state.nodes]

    def cluster_name(self) -> str:
        return self.state.cluster

    def kms_key_id(self) -> str:
        return str(self.state.aws["kms_key_id"])

    def events_file(self) -> Path:
        """``events.jsonl``: the supervisor's node and restore events."""
        return self.state_dir / EVENTS_FILE

    def close(self) -> None:
        """Nothing to release: every connection is opened per call."""
        return None

    # --- AWS, Kubernetes API ------------------------------------------------------
    def aws_stack(self) -> awsemu.AwsStack:
        return awsemu.AwsStack.from_dict(self.state.aws)

    def aws(self, principal: str = "admin") -> Aws:
        """AWS access to the emulator as one principal of :mod:`vaultdr.principals`:
        ``admin``, ``seal``, ``snapshot``, ``restore`` or ``configure``."""
        return self.aws_stack().aws(principal)

    def kube(self) -> kubeapi.KubeApiClient:
        info = self.state.kubeapi
        admin = Path(info["dir"], "admin-token").read_text().strip()
        return kubeapi.KubeApiClient(info["url"], ca_file=self.ca_file(), admin_token=admin)

    def service_account_token(
        self, namespace: str, name: str, *, audiences: list[str] | None = None, ttl: int = 3600
    ) -> str:
        return self.kube().request_token(
            namespace, name, audiences=audiences or [SA_AUDIENCE], ttl_seconds=ttl
        )

    def kubernetes_target(self, stack: Stack | None = None) -> KubernetesTarget:
        """What the kubernetes auth method must be told: stand-in URL, CA, reviewer token."""
        stack = stack or self.stack_config()
        reviewer = stack.kubernetes.reviewer
        jwt = self.kube().request_token(
            reviewer.namespace, reviewer.name, audiences=None, ttl_seconds=30 * 86400
        )
        return KubernetesTarget(
            host=self.state.kubeapi["url"],
            ca_pem=self.ca_file().read_text(),
            reviewer_jwt=jwt,
            issuer=stack.kubernetes.issuer,
        )

    # --- clients ----------------------------------------------------------------
    def client(self, node: str | None = None, *, token: str | None = None) -> VaultClient:
        """A client for ``node``, or for the active node (falling back to the first)."""
        name = node or self.leader() or self.state.nodes[0].name
        return VaultClient(self.state.node(name).api_addr, ca_file=self.ca_file(), token=token)

    def leader(self) -> str | None:
        """The node that says it is the active one, or None (nodes asked at once, 2 s each)."""
        ca_file = self.ca_file()

        def is_self(node: NodeState) -> bool:
            try:
                client = VaultClient(node.api_addr, ca_file=ca_file, timeout=2.0)
                return bool(client.read_leader().get("is_self"))
            except VaultdrError:
                return False

        nodes = self.state.nodes
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            answers = list(pool.map(is_self, nodes))
        return next((node.name for node, yes in zip(nodes, answers, strict=True) if yes), None)

    def stack_config(self) -> Stack:
        if self.stack is None:
            self.stack = load_stack(self.state.stack_file or None)
        return self.stack

    # --- up -----------------------------------------------------------------------
    def up(self) -> StackStatus:
        stack = self.stack_config()
        binary = nodes.find_binary(stack)  # bad input is refused before anything is created
        version = nodes.check_version(stack, binary)
        statedir.claim(
            self.state_dir, what="state directory", purpose="local stack", legacy_file="state.json"
        )
        with statedir.locked(self.state_dir, command="up"):
            self._refuse_if_running()
            statedir.empty_owned(self.state_dir, what="state directory")
            return self._up(stack, binary, version)

    def plan_up(self) -> list[str]:
        """What ``up`` would do, one line a step; starts nothing."""
        return deploy.plan_up(self.stack_config(), self.state_dir)

    def plan_down(self, *, keep_data: bool = False) -> list[str]:
        """What ``down`` would do, one line a step; stops nothing."""
        return deploy.plan_down(self.state_dir, keep_data=keep_data)

    def claimed_for_up(self) -> contextlib.AbstractContextManager[None]:
        """Nothing: ``up`` claims and locks the state directory itself, once it has
        checked its input (a bad stack.yaml creates no directory)."""
        return contextlib.nullcontext()

    def _up(self, stack: Stack, binary: Path, version: str) -> StackStatus:
        self._state = deploy.new_state(
            self.state_dir, stack, stack_file=self.stack_file, binary=binary, version=version
        )
        try:
            deploy.LocalDeployment(self, stack).run()
        except BaseException:
            self._stop_everything()
            raise
        return self.status()

    def _refuse_if_running(self) -> None:
        try:
            alive = self.running_processes()
        except ConfigError:  # an unreadable state.json: processes may still run
            raise StackStateError(
                f"{self.state_dir / 'state.json'} is unreadable: a stack may still run there",
                hint="stop its processes (`pgrep -af STATE_DIR`) and remove the directory, "
                "or use another --state-dir",
            ) from None
        if alive:
            names = ", ".join(sorted({r.name for r in alive}))
            raise StackStateError(
                f"a local stack is already running in {self.state_dir} ({names})",
                hint="stop it with `vaultdr down`, or use another --state-dir",
            )

    # --- status ---------------------------------------------------------------------
    def status(self, *, quick: bool = False) -> StackStatus:
        state = self.state
        voters = self.read_voters()
        statuses = [self._node_status(node, voters) for node in state.nodes]
        kms = None if quick else self._kms_reachable()
        extras: dict[str, Any] = {"state_dir": str(self.state_dir), "phase": state.phase}
        agents: dict[str, str] = {}
        if not quick:
            extras["kms_access"] = self._kms_access()
            extras.update(self._agent_lines())
            extras["services"] = {
                name: ("running" if (rec := state.record(name)) and rec.alive() else "stopped")
                for name in state.processes
            }
            agents = self.agent_status()
        return StackStatus(
            environment="local",
            cluster=state.cluster,
            seal=state.seal,
            kms_reachable=kms,
            nodes=statuses,
            extras=extras,
            agents=agents,
        )

    def agent_status(self) -> dict[str, str]:
        """The supervisor and each agent it should run: "running" or what is wrong.

        The supervisor's process must be alive and its heartbeat fresh; each agent
        the stack declares must be a live thread in that heartbeat.
        """
        stack = self.stack_config()
        expected = ["snapshot-agent"] if stack.snapshots.enabled else []
        expected += ["restore-watcher"] if stack.restore.auto else []
        record = self.state.record("supervisor")
        if not (record and record.alive()):
            return {"supervisor": "not running"} | {name: "not running" for name in expected}
        try:
            beat = json.loads((self.state_dir / HEARTBEAT_FILE).read_text())
            age = time.time() - float(beat["t"])
            threads = dict(beat["agents"])
        except (OSError, ValueError, KeyError, TypeError):
            return {"supervisor": "running, no heartbeat yet"}
        if age > HEARTBEAT_STALE_SECONDS:
            return {"supervisor": f"hung: no heartbeat for {age:.0f} s"}
        agents = {"supervisor": "running"}
        for name in expected:
            agents[name] = "running" if threads.get(name) else "dead (its thread has ended)"
        return agents

    def _agent_lines(self) -> dict[str, str]:
        """One line each for the snapshot agent and the last restore, from their status files."""
        agents = self.state_dir / "agents"
        lines: dict[str, str] = {}
        try:
            status = snap.read_status(agents / "snapshot.json")
            lines["snapshots"] = snap.describe_status(status, dt.datetime.now(dt.UTC))
        except VaultdrError as exc:
            lines["snapshots"] = exc.message
        record = self.last_restore()
        try:
            if record is not None:
                lines["last_restore"] = (
                    f"{record['snapshot_key']} at {record['started_at']} "
                    f"in {record['total_seconds']:.1f} s"
                )
        except (KeyError, TypeError, ValueError):
            pass
        return lines

    def _node_status(self, node: NodeState, voters: dict[str, bool]) -> NodeStatus:
        record = node.process()
        running = bool(record and record.alive())
        return self.probe_node(node.name, node.api_addr, running=running, voters=voters)

    def _kms_reachable(self) -> bool | None:
        try:
            if self.state.seal == "awskms":
                return self.aws("seal").key_reachable(self.state.aws["kms_key_id"])
            address = self.state.transit.get("address", "")
            return bool(VaultClient(address, ca_file=self.ca_file()).read_seal_status())
        except VaultdrError:
            return False

    def _kms_access(self) -> str:
        try:
            if self.state.seal == "awskms":
                revoked = common.kms_revoked(self.aws(), self.state.aws["seal_user"])
            else:
                revoked = not transit.seal_access_allowed(
                    self.state.transit["address"],
                    ca_file=self.ca_file(),
                    root_token=self._transit_root(),
                )
        except VaultdrError:
            return "unknown"
        return "revoked" if revoked else "allowed"

    def _transit_root(self) -> str:
        return self.aws().get_secure_parameter(ssm_path(self.state.cluster, "transit/root-token"))

    # --- agents -----------------------------------------------------------------------
    def last_restore(self) -> dict[str, Any] | None:
        """The restore watcher's last record (``agents/restore.json``), or None."""
        try:
            record = json.loads((self.state_dir / "agents" / "restore.json").read_text())
        except (OSError, ValueError):
            return None
        return dict(record) if isinstance(record, dict) else None

    # --- fault primitives ---------------------------------------------------------
    def check_destructive(self, fault: str) -> None:
        """Local stacks are vaultdr's own: every fault may run."""
        return None

    def refusal(self, fault: str) -> str | None:
        return None

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Within the block every primitive records the change it would make, and makes
        none (the fault catalogue's dry run: the same code, only recorded)."""
        was, self._planned = self._planned, []
        try:
            yield self._planned
        finally:
            self._planned = was

    def _change(self, description: str) -> bool:
        """Record a change; True when it is to be made (False while recording)."""
        if self._planned is None:
            return True
        self._planned.append(description)
        return False

    def kill_node(self, node: str) -> None:
        """SIGKILL the node's server process; the supervisor starts it again."""
        record = self.state.node(node).process()
        if not (record and record.alive()):
            if not self._change(f"SIGKILL {node}: refused now, it is not running"):
                return
            raise StackStateError(
                f"{node} is not running: there is no process to kill",
                hint="wait until the supervisor has started it (`vaultdr status`)",
            )
        if self._change(f"SIGKILL {node} (pid {record.pid}); the supervisor starts it again"):
            os.kill(record.pid, signal.SIGKILL)

    def force_delete_node(self, node: str) -> None:
        """SIGKILL, as kill_node: a process has no grace period to skip."""
        self.kill_node(node)

    def delete_volume(self, node: str) -> None:
        """Delete the node's data dir and kill it; the supervisor brings it back empty."""
        target = self.state.node(node)
        if not self._change(
            f"stop {node}, delete its data directory {target.data_dir}; it comes back empty"
        ):
            return
        target.hold_file.touch()
        try:
            record = target.process()
            if record:
                stop_pid(record.pid, record.start_time, grace=0.0)
            wait_for(lambda: not target.pid_file.exists(), timeout=10)
            shutil.rmtree(target.data_dir, ignore_errors=True)
        finally:
            target.hold_file.unlink(missing_ok=True)

    def kill_nodes(self, names: list[str]) -> None:
        """SIGKILL several nodes at the same moment (quorum loss, restart of all)."""
        if not self._change(f"SIGKILL {', '.join(names)} at the same moment"):
            return
        records = [self.state.node(name).process() for name in names]
        for record in records:
            if record and record.alive():
                os.kill(record.pid, signal.SIGKILL)

    def delete_all_volumes(self) -> None:
        """Total loss: stop every node, delete every data dir, let them all come back empty."""
        targets = self.state.nodes
        if not self._change(
            "stop every node and delete every data directory "
            f"({', '.join(str(n.data_dir) for n in targets)}); they all come back empty"
        ):
            return
        for node in targets:
            node.hold_file.touch()
        try:
            self.kill_nodes([node.name for node in targets])
            wait_for(lambda: not any(node.pid_file.exists() for node in targets), timeout=15)
            for node in targets:
                shutil.rmtree(node.data_dir, ignore_errors=True)
        finally:
            self.release_nodes([node.name for node in targets])

    def release_nodes(self, names: list[str]) -> None:
        """Let held nodes run again (the undo of an interrupted volume deletion)."""
        if not self._change(f"release {', '.join(names)} (remove their hold files)"):
            return
        for name in names:
            self.state.node(name).hold_file.unlink(missing_ok=True)

    def node_pid(self, node: str) -> tuple[int, int] | None:
        """The running server process of ``node`` as (pid, start time), or None."""
        record = self.state.node(node).process()
        if record and record.alive():
            return record.pid, record.start_time
        return None

    def freeze_node(self, node: str) -> tuple[int, int]:
        """SIGSTOP the node's process: it holds its sockets but answers nothing (a partition)."""
        found = self.node_pid(node)
        if found is None:
            raise StackStateError(
                f"{node} is not running: there is nothing to freeze",
                hint="wait until the supervisor has started it (`vaultdr status`)",
            )
        if self._change(f"SIGSTOP {node} (pid {found[0]}); thaw-node or rollback sends SIGCONT"):
            os.kill(found[0], signal.SIGSTOP)
        return found

    def thaw_node(self, node: str, pid: int | None = None, start_time: int | None = None) -> bool:
        """SIGCONT the frozen process (the one recorded, or the node's current one)."""
        if pid is None:
            found = self.node_pid(node)
            if found is None:
                return False
            pid, start_time = found
        if not pid_alive(pid, start_time):
            return False
        if self._change(f"SIGCONT {node} (pid {pid})"):
            os.kill(pid, signal.SIGCONT)
        return True

    def cluster_id(self) -> str | None:
        """The raft cluster id recorded at init (snapshots are filed under it)."""
        return self.state.cluster_id or None

    def snapshot_location(self) -> tuple[str, str]:
        """(bucket, prefix) of the snapshots in S3."""
        return self.state.aws["bucket"], self.stack_config().snapshots.prefix

    def revoke_kms(self) -> None:
        self._set_kms_access(allowed=False)

    def restore_kms(self) -> None:
        self._set_kms_access(allowed=True)

    def _set_kms_access(self, *, allowed: bool) -> None:
        state = self.state
        if not self._change(self._kms_change(allowed=allowed)):
            return
        if state.seal == "awskms":
            if allowed:
                common.restore_kms(self.aws(), state.aws["seal_user"])
            else:  # returns once the seal user's own Decrypt is refused
                common.revoke_kms(
                    self.aws(),
                    state.aws["seal_user"],
                    seal=self.aws("seal"),
                    key_id=self.kms_key_id(),
                    timeout=common.REVOKE_WAIT,
                )
            return
        transit.set_seal_access(
            state.transit["address"],
            ca_file=self.ca_file(),
            root_token=self._transit_root(),
            mount_path=state.transit["mount_path"],
            key_name=state.transit["key_name"],
            allowed=allowed,
        )

    def _kms_change(self, *, allowed: bool) -> str:
        state = self.state
        if state.seal == "awskms":
            user = state.aws["seal_user"]
            if allowed:
                return f"delete IAM inline policy {REVOKE_KMS_POLICY} of user {user}"
            return (
                f"put IAM inline policy {REVOKE_KMS_POLICY} on user {user} "
                "(Deny kms:Decrypt, kms:Encrypt)"
            )
        key = f"{state.transit['mount_path']}/keys/{state.transit['key_name']}"
        verb = "allow" if allowed else "deny"
        return f"{verb} the seal token's use of transit key {key}"

    # --- down -----------------------------------------------------------------------
    def down(self, *, keep_data: bool = False) -> None:
        state = LocalState.load(self.state_dir)
        if state is None:
            raise StackStateError(
                f"no local stack in {self.state_dir}: nothing to stop",
                hint="pass --state-dir if the stack was started elsewhere",
            )
        if not statedir.is_owned(self.state_dir, legacy_file="state.json"):
            raise statedir.NotOurDirectory(
                f"{self.state_dir} holds a state.json that does not name this directory",
                hint="pass the --state-dir the stack was started with",
            )
        with statedir.locked(self.state_dir, command="down"):
            self._state = state
            self._stop_everything()
            if keep_data:
                state.phase = "stopped"
                state.save()
            else:
                statedir.remove_owned(self.state_dir, what="state directory")

    def _stop_everything(self) -> None:
        """Stop the supervisor first (it stops the nodes), then every other process; verify."""
        state = self._state or LocalState.load(self.state_dir)
        if state is None:
            return
        for node in state.nodes:  # a frozen node cannot handle SIGTERM
            record = node.process()
            if record and record.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(record.pid, signal.SIGCONT)
        order = ["supervisor", "transit", "kubeapi", "moto"]
        for name in order + [n for n in state.processes if n not in order]:
            record = state.record(name)
            if record:
                stop_pid(record.pid, record.start_time, grace=15.0)
        for node in state.nodes:  # the supervisor may have died without stopping them
            record = node.process()
            if record:
                stop_pid(record.pid, record.start_time, grace=5.0)
            node.pid_file.unlink(missing_ok=True)
        ports = [n.api_port for n in state.nodes] + [n.cluster_port for n in state.nodes]
        wait_for(lambda: not any(port_in_use(p) for p in ports), timeout=10)
        write_json_atomic(self.state_dir / "stopped.json", {"t": time.time()})

    def log_files(self) -> dict[str, Path]:
        """Each node's server log and the supervisor's (and its events), for diagnostics."""
        state = LocalState.load(self.state_dir)
        files = {f"{node.name}/server.log": node.log_file for node in state.nodes} if state else {}
        files["supervisor.log"] = self.state_dir / "supervisor.log"
        files["events.jsonl"] = self.state_dir / EVENTS_FILE
        return files


def alive_pids(records: list[ProcessRecord]) -> list[int]:
    return [r.pid for r in records if pid_alive(r.pid, r.start_time)]
