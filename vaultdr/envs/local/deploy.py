"""``up`` for the local environment: the steps that bring the whole stack up on 127.0.0.1.

:class:`LocalDeployment` starts, in order: the AWS emulator (moto, IAM enforced)
and its bootstrap, side by side with the Kubernetes API stand-in; the transit
KMS when the seal is ``transit``; then the supervisor, which runs the nodes. It
initializes the cluster with recovery keys, puts the root token and recovery
keys in SSM (they are never printed), applies the configuration, and returns
only when every node is initialized, unsealed and a raft voter and one is
active. Each step records what it started in ``state.json`` before the next one
runs, so whatever it started can be found and stopped again.

:meth:`LocalEnvironment.up <vaultdr.envs.local.env.LocalEnvironment.up>` claims and
locks the state directory, refuses a directory where a stack still runs, and
runs a deployment; if any step fails it stops everything already started
before the error is raised: ``up`` never leaves a half-started stack behind.

This module sees the environment only through :class:`DeployTarget` (what
``env.py`` provides), so ``env.py`` can import it without a cycle.

Hazards:

* The root token, the recovery keys and the transit KMS's root token and
  unseal key go to SSM (the emulator) and nowhere else: not to a log, not to
  ``state.json``, not into an error.
* The steps are not idempotent on their own: run them only on an empty, locked
  state directory (``up`` makes sure of that).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from vaultdr.agents.configure import Change
from vaultdr.aws import Aws
from vaultdr.config import Stack
from vaultdr.envs.base import StackStatus, initialize_cluster, ssm_path
from vaultdr.envs.local import awsemu, kubeapi, nodes, transit
from vaultdr.envs.local.processes import free_port, spawn, tail, wait_for
from vaultdr.envs.local.state import LocalState, NodeState
from vaultdr.envs.tls import LocalCA
from vaultdr.errors import EnvironmentStartError, VaultdrError
from vaultdr.principals import seal_alias
from vaultdr.vault import VaultClient


class DeployTarget(Protocol):
    """What a deployment needs of its environment (:class:`~vaultdr.envs.local.env.LocalEnvironment`)."""

    state_dir: Path

    @property
    def state(self) -> LocalState: ...

    def aws_stack(self) -> awsemu.AwsStack: ...

    def aws(self, principal: str = "admin") -> Aws: ...

    def ca_file(self) -> Path: ...

    def recovery_keys(self) -> list[str]: ...

    def client(self, node: str | None = None, *, token: str | None = None) -> VaultClient: ...

    def configure(self, *, dry_run: bool = False) -> list[Change]: ...

    def status(self, *, quick: bool = False) -> StackStatus: ...


def new_state(
    state_dir: Path, stack: Stack, *, stack_file: str, binary: Path, version: str
) -> LocalState:
    """The state of a stack about to be brought up in ``state_dir``: no node, no process yet."""
    return LocalState(
        directory=str(state_dir),
        cluster=stack.cluster,
        stack_file=stack_file,
        binary=str(binary),
        engine_kind=stack.engine.kind,
        engine_version=version,
        seal=stack.seal.type,
        ca_file=str(state_dir / "ca" / "ca.pem"),
        nodes=[],
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


class LocalDeployment:
    """The steps of ``up`` for ``env`` and ``stack``; :meth:`run` runs them all."""

    def __init__(self, env: DeployTarget, stack: Stack) -> None:
        self.env = env
        self.stack = stack

    @property
    def state(self) -> LocalState:
        return self.env.state

    @property
    def state_dir(self) -> Path:
        return self.env.state_dir

    def run(self) -> None:
        """Every step, in order; the stack is healthy when it returns (see the module docstring)."""
        state = self.state
        ca = LocalCA(self.state_dir / "ca")
        # The emulator and the Kubernetes API stand-in start side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            started = [
                pool.submit(self.start_aws),
                pool.submit(self.start_kubeapi, ca),
            ]
            for future in started:
                future.result()
        seal_stanza = self.start_seal(ca)
        self.write_nodes(ca, seal_stanza)
        state.save()
        self.start_supervisor()
        self.initialize()
        self.hasten_joins()
        # The active node takes the configuration while autopilot promotes the others.
        self.env.configure()
        self.wait_healthy()
        state.cluster_id = str(self.env.client().read_health().get("cluster_id", ""))
        state.phase = "up"
        state.save()

    def start_aws(self) -> None:
        directory = self.state_dir / "moto"
        port = free_port()
        record = awsemu.start_moto(directory, port=port, log=directory / "moto.log")
        self.state.processes["moto"] = record.to_dict()
        self.state.save()
        emu = awsemu.bootstrap(
            f"http://127.0.0.1:{port}",
            self.stack.region,
            cluster=self.stack.cluster,
            bucket=self.stack.snapshots.bucket,
        )
        self.state.aws = emu.to_dict()
        self.state.save()

    def start_kubeapi(self, ca: LocalCA) -> None:
        directory = self.state_dir / "kubeapi"
        pair = ca.issue_server_cert(
            "kubernetes", directory / "tls", hosts=["127.0.0.1", "localhost", "kubernetes"]
        )
        port = free_port()
        config = {
            "issuer": self.stack.kubernetes.issuer,
            "service_accounts": [
                {"namespace": sa.namespace, "name": sa.name}
                for sa in self.stack.all_service_accounts()
            ],
            "token_reviewers": [
                [self.stack.kubernetes.reviewer.namespace, self.stack.kubernetes.reviewer.name]
            ],
        }
        record = kubeapi.start_kubeapi(
            directory,
            port=port,
            cert=pair.cert,
            key=pair.key,
            config=config,
            log=directory / "kubeapi.log",
        )
        self.state.processes["kubeapi"] = record.to_dict()
        self.state.kubeapi = {"url": f"https://127.0.0.1:{port}", "dir": str(directory)}
        self.state.save()

    def start_seal(self, ca: LocalCA) -> str:
        if self.stack.seal.type == "awskms":
            emu = self.env.aws_stack()
            return nodes.awskms_seal_stanza(
                region=emu.region,
                endpoint=emu.endpoint_url,
                key_id=emu.kms_key_id,
                access_key=emu.seal.access_key_id,
                secret_key=emu.seal.secret_access_key,
            )
        directory = self.state_dir / "transit"
        pair = ca.issue_server_cert("transit", directory / "tls", hosts=["127.0.0.1", "localhost"])
        port = free_port()
        record = transit.start_transit_server(
            directory,
            binary=self.state.binary,
            port=port,
            cert=pair.cert,
            key=pair.key,
            ca_file=ca.cert_path,
        )
        self.state.processes["transit"] = record.to_dict()
        self.state.save()
        kms = transit.bootstrap_transit(
            record_address(port),
            ca_file=ca.cert_path,
            mount_path=self.stack.seal.transit.mount_path,
            key_name=self.stack.seal.transit.key_name,
        )
        admin = self.env.aws()
        admin.put_secure_parameter(
            ssm_path(self.stack.cluster, "transit/root-token"), kms.root_token
        )
        admin.put_secure_parameter(
            ssm_path(self.stack.cluster, "transit/unseal-key"), kms.unseal_key
        )
        self.state.transit = {
            "address": kms.address,
            "mount_path": kms.mount_path,
            "key_name": kms.key_name,
        }
        return nodes.transit_seal_stanza(
            address=kms.address,
            token=kms.seal_token,
            mount_path=kms.mount_path,
            key_name=kms.key_name,
            ca_file=ca.cert_path,
        )

    def write_nodes(self, ca: LocalCA, seal_stanza: str) -> None:
        state = self.state
        state.nodes = [
            NodeState(
                name=name,
                api_port=free_port(),
                cluster_port=free_port(),
                directory=str(self.state_dir / "nodes" / name),
            )
            for name in self.stack.node_names()
        ]
        ports = [p for n in state.nodes for p in (n.api_port, n.cluster_port)]
        if len(set(ports)) != len(ports):  # free_port() may hand out a port twice
            return self.write_nodes(ca, seal_stanza)
        for node in state.nodes:
            ca.issue_server_cert(
                node.name, node.dir / "tls", hosts=["127.0.0.1", "localhost", node.name]
            )
            node.data_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
            config = nodes.render_node_config(
                node,
                peers=state.nodes,
                ca_file=ca.cert_path,
                seal_stanza=seal_stanza,
                performance_multiplier=self.stack.raft.performance_multiplier,
                engine_kind=self.stack.engine.kind,
            )
            _write_private_text(node.config_file, config)
        return None

    def start_supervisor(self) -> None:
        log = self.state_dir / "supervisor.log"
        _, record = spawn(
            "supervisor",
            [
                sys.executable,
                "-m",
                "vaultdr.envs.local.supervisor",
                "--state-dir",
                str(self.state_dir),
                "--binary",
                self.state.binary,
            ],
            log=log,
        )
        self.state.processes["supervisor"] = record.to_dict()
        self.state.save()

    def _wait(
        self, what: str, condition: Callable[[], bool], timeout: float, node: NodeState | None
    ) -> None:
        if wait_for(condition, timeout=timeout, interval=0.1):
            return
        logs = [node] if node else self.state.nodes
        detail = "\n".join(
            f"--- last lines of {n.log_file} ---\n{tail(n.log_file, 15)}" for n in logs
        )
        raise EnvironmentStartError(
            f"{what} did not happen within {timeout:.0f} s\n{detail}",
            hint="read the log lines above; the stack has been stopped again",
        )

    def initialize(self) -> None:
        first = self.state.nodes[0]
        client = VaultClient(first.api_addr, ca_file=self.env.ca_file())
        self._wait(
            f"{first.name} answering on {first.api_addr}",
            lambda: bool(client.read_seal_status()),
            self.stack.startup_timeout,
            first,
        )
        root = initialize_cluster(
            client,
            self.env.aws(),
            cluster=self.stack.cluster,
            recovery_shares=self.stack.init.recovery_shares,
            recovery_threshold=self.stack.init.recovery_threshold,
        )
        self._wait(
            f"{first.name} becoming active",
            lambda: _is_active(root),
            self.stack.startup_timeout,
            first,
        )
        root.set_autopilot_stabilization(self.stack.raft.autopilot_stabilization)

    def hasten_joins(self) -> None:
        """Join the other nodes now and unseal them with the recovery keys once joined.

        Both would happen without us (``retry_join`` every 2 s, then the seal's
        own unseal), which is what the self-healing tests rely on; doing them
        as an operator would shaves seconds off every cold start and restore.
        """
        leader = self.state.nodes[0]
        ca_pem = self.env.ca_file().read_text()
        keys = self.env.recovery_keys()[: self.stack.init.recovery_threshold]

        def hasten(node: NodeState) -> None:
            client = VaultClient(node.api_addr, ca_file=self.env.ca_file())
            try:
                if not client.read_seal_status().get("initialized"):
                    client.join_raft(leader_api_addr=leader.api_addr, leader_ca_cert=ca_pem)
            except VaultdrError:
                return  # retry_join gets there on its own
            wait_for(lambda: bool(client.read_seal_status().get("initialized")), timeout=30)
            for key in keys:
                try:
                    if not client.read_seal_status().get("sealed"):
                        return
                    client.unseal(key)
                except VaultdrError:
                    return

        with ThreadPoolExecutor(max_workers=len(self.state.nodes)) as pool:
            list(pool.map(hasten, self.state.nodes[1:]))

    def wait_healthy(self) -> None:
        self._wait(
            "all nodes initialized, unsealed and raft voters, with one active",
            lambda: self.env.status(quick=True).healthy,
            self.stack.startup_timeout,
            None,
        )


def plan_up(stack: Stack, state_dir: Path) -> list[str]:
    """The steps of ``up`` (:meth:`LocalDeployment.run`) in words, in order; runs none."""
    first, *others = stack.node_names()
    seal = stack.seal
    steps = [
        f"claim and lock the state directory {state_dir}; refuse it while a stack runs there",
        "start the AWS emulator (moto, IAM enforced) on a free loopback port and bootstrap it: "
        f"KMS key {seal_alias(stack.cluster)}, bucket {stack.snapshots.bucket}, "
        "one IAM user per principal",
        "start the Kubernetes API stand-in (TokenRequest and TokenReview) with "
        f"{len(stack.all_service_accounts())} service account(s)",
    ]
    if seal.type == "transit":
        steps.append(
            f"start the transit KMS and create key {seal.transit.mount_path}/keys/"
            f"{seal.transit.key_name}; its root token and unseal key to SSM"
        )
    agents = ["the nodes"]
    agents += ["the snapshot agent"] if stack.snapshots.enabled else []
    agents += ["the restore watcher"] if stack.restore.auto else []
    steps += [
        f"write the configuration and TLS certificate of {', '.join(stack.node_names())} "
        f"({seal.type} seal)",
        f"start the supervisor, which runs {', '.join(agents)}",
        f"initialize {first} with recovery keys; root token and recovery keys to SSM "
        f"under {ssm_path(stack.cluster, '')}",
    ]
    if others:
        steps.append(f"join {', '.join(others)} and unseal them with the recovery keys")
    steps += [
        "apply the configuration (stack.yaml configure)",
        "wait until every node is unsealed and a voter, one active",
    ]
    return steps


def plan_down(state_dir: Path, *, keep_data: bool = False) -> list[str]:
    """The steps of ``down`` in words, in order; runs none."""
    return [
        "stop the supervisor (it stops the nodes), then the transit KMS, the Kubernetes "
        "API stand-in and the AWS emulator; stop any node still running",
        f"keep the state directory {state_dir} (phase stopped)"
        if keep_data
        else f"remove the state directory {state_dir}",
    ]


def record_address(port: int) -> str:
    return f"https://127.0.0.1:{port}"


def _is_active(client: VaultClient) -> bool:
    health = client.read_health()
    return (
        health.get("initialized") is True
        and health.get("sealed") is False
        and health.get("standby") is False
    )


def _write_private_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
