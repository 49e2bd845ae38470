"""What every backend does the same way, written once over the few things each one provides.

The local and the kube environments differ in how they reach a node (a loopback port;
a port-forward or the chart's service), where the stack's facts live (``state.json``;
stack.yaml and the cluster) and how a fault acts (signals and data dirs; pods and
PVCs). They do not differ in the break-glass reads, in configure, in how one node's
status is probed, in how the raft voters are read, in the snapshot agent they run
from here, or in the IAM policy that revokes the seal's KMS access. Those live here:
:class:`EnvironmentBase` implements them over abstract methods each backend provides,
so a backend keeps only what differs.

Hazards:

* The root token read here is break-glass material: the methods return it and never
  log it; callers keep it in memory only.
* :func:`revoke_kms` must always be undone by :func:`restore_kms` (the fault catalogue
  journals it): a node that restarts while it is in force stays sealed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from vaultdr.agents.configure import SNAPSHOT_ROLE, Change, KubernetesTarget, reconcile
from vaultdr.agents.snapshot import SnapshotAgent, SnapshotSettings
from vaultdr.aws import Aws
from vaultdr.config import Stack
from vaultdr.envs.base import NodeStatus, read_recovery_keys, read_root_token
from vaultdr.envs.diagnostics import Diagnostics, DiagnosticsWriter
from vaultdr.errors import AccessDenied, FaultError, VaultdrError
from vaultdr.polling import wait_for
from vaultdr.principals import REVOKE_KMS_POLICY, revoke_kms_policy
from vaultdr.vault import VaultClient

#: The audience of the service-account tokens the nodes' kubernetes auth accepts.
SA_AUDIENCE = "vault"


class EnvironmentBase(ABC):
    """The shared half of :class:`~vaultdr.envs.base.Environment`; a backend subclasses it
    and provides the abstract methods."""

    name: str
    state_dir: Path

    # --- what each backend provides ----------------------------------------------------
    @abstractmethod
    def cluster_name(self) -> str:
        """The stack's cluster name (its SSM paths and snapshot keys are filed under it)."""

    @abstractmethod
    def stack_config(self) -> Stack: ...

    @abstractmethod
    def client(self, node: str | None = None, *, token: str | None = None) -> VaultClient: ...

    @abstractmethod
    def aws(self, principal: str = "admin") -> Aws: ...

    @abstractmethod
    def ca_file(self) -> Path: ...

    @abstractmethod
    def node_addresses(self) -> list[str]:
        """Every node's API URL, in node order."""

    @abstractmethod
    def kms_key_id(self) -> str:
        """The KMS key of the seal."""

    def snapshot_kms_key_id(self) -> str:
        """The KMS key of the snapshots' SSE-KMS: the seal's own key unless a backend has
        one for snapshots (eks: Terraform's snapshot key; the snapshot role has no grant on
        the seal key, so uploads with it are refused)."""
        return self.kms_key_id()

    @abstractmethod
    def snapshot_location(self) -> tuple[str, str]: ...

    @abstractmethod
    def kubernetes_target(self, stack: Stack | None = None) -> KubernetesTarget:
        """What the kubernetes auth method must be told (``stack``: instead of the
        environment's own stack.yaml)."""

    @abstractmethod
    def service_account_token(
        self, namespace: str, name: str, *, audiences: list[str] | None = None, ttl: int = 3600
    ) -> str: ...

    # --- break-glass ---------------------------------------------------------------------
    def root_token(self) -> str:
        """The break-glass root token, read from SSM."""
        return read_root_token(self.aws(), self.cluster_name())

    def recovery_keys(self) -> list[str]:
        """The break-glass recovery keys, read from SSM."""
        return read_recovery_keys(self.aws(), self.cluster_name())

    # --- configure -----------------------------------------------------------------------
    def configure(self, *, dry_run: bool = False, stack: Stack | None = None) -> list[Change]:
        """Reconcile the cluster with stack.yaml's ``configure`` section (``stack``: that
        stack file instead of the environment's own, as ``configure --config`` asks)."""
        root = self.client(token=self.root_token())
        chosen = stack or self.stack_config()
        return reconcile(root, chosen, kubernetes=self.kubernetes_target(chosen), dry_run=dry_run)

    # --- status --------------------------------------------------------------------------
    def read_voters(self) -> dict[str, bool]:
        """Node name -> raft voter, from the active node; empty when it cannot be read."""
        try:
            return self.client(token=self.root_token()).read_raft_voters()
        except VaultdrError:
            return {}

    def probe_node(
        self, name: str, address: str, *, running: bool, voters: dict[str, bool]
    ) -> NodeStatus:
        """One node's status as its own API reports it (``error`` when it does not answer)."""
        client = VaultClient(address, ca_file=self.ca_file(), timeout=3.0)
        try:
            seal = client.read_seal_status()
            active = bool(client.read_leader().get("is_self")) if not seal.get("sealed") else False
        except VaultdrError as exc:
            return NodeStatus(name, address, running, error=exc.message)
        return NodeStatus(
            name=name,
            api_addr=address,
            running=running,
            initialized=bool(seal.get("initialized")),
            sealed=bool(seal.get("sealed")),
            active=active,
            voter=voters.get(name, False) if voters else None,
            version=seal.get("version"),
        )

    # --- the snapshot agent ----------------------------------------------------------------
    def snapshot_settings(self) -> SnapshotSettings:
        """The snapshot agent's settings for this stack, the same as its schedule's."""
        snapshots = self.stack_config().snapshots
        auth = self.stack_config().configure.auth.kubernetes
        bucket, prefix = self.snapshot_location()
        return SnapshotSettings(
            cluster=self.cluster_name(),
            addresses=self.node_addresses(),
            ca_file=self.ca_file(),
            bucket=bucket,
            prefix=prefix,
            retain_last=snapshots.retain.last,
            retain_daily=snapshots.retain.daily,
            kms_key_id=self.snapshot_kms_key_id(),
            role=SNAPSHOT_ROLE,
            auth_mount=auth.path if auth else "kubernetes",
            status_file=self.state_dir / "agents" / "snapshot.json",
            work_dir=self.state_dir / "agents" / "tmp",
        )

    def snapshot_agent(self, settings: SnapshotSettings | None = None) -> SnapshotAgent:
        """A snapshot agent for this stack acting as the snapshot principal, as its
        schedule runs it (``settings`` overrides the derived ones: tests shorten retention).

        Its JWT source asks for a fresh service-account token on every run; the token
        lives only for the login and is never stored."""
        sa = self.stack_config().snapshots.service_account

        def jwt_source() -> str:
            return self.service_account_token(sa.namespace, sa.name)

        return SnapshotAgent(
            settings or self.snapshot_settings(), aws=self.aws("snapshot"), jwt_source=jwt_source
        )

    # --- diagnostics -------------------------------------------------------------------------
    def log_files(self) -> dict[str, Path]:
        """The log files a failed drill keeps the end of, by the name they are kept under
        (none by default; the local environment has its nodes' and supervisor's)."""
        return {}

    def diagnostics(self, dest: Path, *, known_secrets: Sequence[str] = ()) -> Diagnostics:
        """The end of each of :meth:`log_files` into ``dest``, redacted and bounded (see
        :meth:`vaultdr.envs.base.Environment.diagnostics`); nothing when there are none."""
        writer = DiagnosticsWriter(dest, known_secrets=known_secrets)
        for name, path in sorted(self.log_files().items()):
            if path.is_file():
                writer.copy_tail(name, path)
        return writer.finish()


# --- the revoke-KMS fault: one IAM policy, on an IAM user or role -------------------------

#: How long :func:`revoke_kms` waits for the deny to be in force. IAM is eventually
#: consistent: AWS says a policy change takes effect "typically within seconds" but may
#: take longer; an emulator enforces it at once.
REVOKE_WAIT = 120.0
#: Refusals in a row that count as the deny being in force (see :func:`wait_until_denied`).
DENIED_IN_A_ROW = 3
#: The plaintext of the probe the seal encrypts before the deny and must fail to decrypt
#: after it (nothing secret).
REVOKE_PROBE = b"vaultdr revoke-kms probe"


def revoke_kms(
    aws: Aws,
    name: str,
    *,
    kind: str = "user",
    seal: Aws | None = None,
    key_id: str | None = None,
    timeout: float = REVOKE_WAIT,
    interval: float = 0.5,
) -> None:
    """Deny the IAM ``kind`` ("user" or "role") ``name`` kms:Decrypt and kms:Encrypt
    (inline policy ``vaultdr-revoke-kms``), then, with ``seal`` (AWS as the seal principal
    itself, with its own credentials) and ``key_id`` (the seal key), wait until the deny
    is in force: a KMS Decrypt by the seal of a probe it encrypted just before is refused.

    Only then is the fault injected: a node restarted earlier could still unseal, and the
    drill would misjudge it. A deny not in force within ``timeout`` seconds is a
    :class:`~vaultdr.errors.FaultError` (the policy stays attached; the rollback journal
    lifts it). ``aws`` must act as an IAM admin. A running node keeps working (it holds its
    keys in memory); a node that restarts stays sealed until :func:`restore_kms`.
    """
    probe = _seal_probe(aws, seal, key_id, name, kind) if seal is not None and key_id else None
    if kind == "role":
        aws.put_role_policy(name, REVOKE_KMS_POLICY, revoke_kms_policy())
    else:
        aws.put_user_policy(name, REVOKE_KMS_POLICY, revoke_kms_policy())
    if seal is not None and probe is not None:
        wait_until_denied(
            seal, probe, what=f"IAM {kind} {name}", timeout=timeout, interval=interval
        )


def _seal_probe(aws: Aws, seal: Aws, key_id: str, name: str, kind: str) -> bytes | None:
    """A ciphertext the seal made with its key now; None when the seal is already denied
    by this very revoke (the policy attached before, e.g. a fault injected twice)."""
    try:
        return seal.encrypt(key_id, REVOKE_PROBE)
    except AccessDenied:
        if kms_revoked(aws, name, kind=kind):
            return None  # already denied by vaultdr-revoke-kms: nothing to wait for
        raise FaultError(
            f"revoke-kms cannot check the deny: the seal principal's own KMS Encrypt with "
            f"{key_id} is refused although no {REVOKE_KMS_POLICY} policy is attached; "
            "nothing was changed",
            hint="the seal may lack kms:Encrypt (or another deny applies): check its policy "
            "and kube.kms_key_id",
        ) from None
    except VaultdrError as exc:
        raise FaultError(
            f"revoke-kms cannot check the deny: the seal principal's own KMS Encrypt with "
            f"{key_id} failed ({exc.message}); nothing was changed",
            hint="check the seal's credentials and kube.kms_key_id (vaultdr status shows "
            "whether the seal reaches its key)",
        ) from None


def wait_until_denied(
    seal: Aws, probe: bytes, *, what: str, timeout: float = REVOKE_WAIT, interval: float = 0.5
) -> None:
    """Poll KMS Decrypt of ``probe`` as the seal until it is refused (AccessDenied)
    :data:`DENIED_IN_A_ROW` times in a row: IAM is eventually consistent, and one endpoint
    refusing does not mean the next one will (a node restarting then could still unseal)."""
    refused = 0

    def denied() -> bool:
        nonlocal refused
        try:
            seal.decrypt(probe)
        except AccessDenied:
            refused += 1
            return refused >= DENIED_IN_A_ROW
        refused = 0
        return False

    if not wait_for(denied, timeout=timeout, interval=interval):
        raise FaultError(
            f"revoke-kms: the deny on {what} was not in force after {timeout:.0f} s: the "
            "seal's own credentials can still decrypt with its key",
            hint="is that the principal the seal runs as? (kube.seal_principal: the seal's "
            "IRSA role on eks, its IAM user on kind); the deny stays attached until "
            "restore-kms or `vaultdr rollback`",
        )


def restore_kms(aws: Aws, name: str, *, kind: str = "user") -> None:
    """Lift :func:`revoke_kms` (idempotent): a sealed node then unseals on its next retry."""
    if kind == "role":
        aws.delete_role_policy(name, REVOKE_KMS_POLICY)
    else:
        aws.delete_user_policy(name, REVOKE_KMS_POLICY)


def kms_revoked(aws: Aws, name: str, *, kind: str = "user") -> bool:
    """True while the revoke policy is attached to the IAM ``kind`` ``name``."""
    if kind == "role":
        return aws.get_role_policy(name, REVOKE_KMS_POLICY) is not None
    return aws.get_user_policy(name, REVOKE_KMS_POLICY) is not None
