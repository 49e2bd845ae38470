"""Auto-restore: rebuild an empty cluster from the newest good snapshot, with no human step.

Interlocks, because a restore is the most destructive thing vaultdr does:

- it never touches an initialized cluster: every node must answer and say
  ``initialized: false`` (an unreachable node means "cannot tell": refuse);
- it only uses a snapshot whose sha256 verifies against its metadata; corrupt
  or truncated ones are skipped and named;
- it refuses a snapshot older than ``restore.max_age`` or taken from another
  cluster id unless forced;
- ``dry_run`` says what it would do and changes nothing.

The procedure is the one measured fastest and correct on this engine (DESIGN,
"Total loss"): hold every node but the first; initialize the first with
recovery keys; force-restore (the seal is the same KMS key, the keyring is
not); wait until a read with the *restored* cluster's root token (the
break-glass copy) succeeds; seal and unseal that node with the restored
recovery keys, which reloads the raft TLS keyring; release the other nodes
empty and unseal each with the recovery keys once it has joined; then run
configure, because the snapshot carries the old Kubernetes host and CA.
The throwaway init's root token and recovery keys are discarded: after the
restore they are dead, and the ones in SSM are the valid ones again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vaultdr.agents import snapshot as snap
from vaultdr.aws import Aws
from vaultdr.errors import Refused, VaultdrError
from vaultdr.polling import wait_for
from vaultdr.vault import VaultClient

log = logging.getLogger("vaultdr.restore")

RESEAL_SECONDS = 6.0
RESEAL_SETTLE_SECONDS = 0.3


class RestoreRefused(Refused):
    """An interlock refused the restore; nothing was changed."""


class RestoreTarget(Protocol):
    """What the restore needs from an environment (local processes or Kubernetes)."""

    def node_names(self) -> list[str]: ...

    def node_client(self, name: str, *, token: str | None = None) -> VaultClient: ...

    def hold_node(self, name: str) -> None:
        """Stop the node and keep it stopped (scale down / delete the pod)."""
        ...

    def release_node(self, name: str) -> None:
        """Let the node run again (on whatever data it has)."""
        ...

    def break_glass(self) -> tuple[str, list[str]]:
        """The restored cluster's root token and recovery keys (from SSM)."""
        ...

    def wipe_node(self, name: str) -> None:
        """Delete the node's data and let it start again empty (undo of a failed restore)."""
        ...

    def ca_pem(self) -> str: ...

    def configure(self) -> int:
        """Run configure against the cluster; the number of changes."""
        ...


@dataclass(frozen=True)
class RestoreSettings:
    bucket: str
    prefix: str
    max_age: float
    recovery_shares: int
    recovery_threshold: int
    expected_cluster_id: str | None
    work_dir: Path
    stabilization: float = 1.0
    timeout: float = 180.0


@dataclass
class Candidate:
    key: str
    taken_at: str
    age_seconds: float
    cluster_id: str
    sha256: str
    size: int


@dataclass
class RestorePlan:
    """What a restore will do (or, with dry_run, would do)."""

    snapshot: Candidate | None
    skipped: list[dict[str, str]] = field(default_factory=list)
    refused: str | None = None

    def describe(self) -> str:
        lines = []
        for item in self.skipped:
            lines.append(f"skip {item['key']}: {item['reason']}")
        if self.refused:
            lines.append(f"refuse: {self.refused}")
        elif self.snapshot:
            s = self.snapshot
            lines.append(
                f"restore {s.key} (cluster {s.cluster_id}, taken {s.taken_at}, "
                f"{s.age_seconds:.0f} s old, sha256 {s.sha256[:12]}...)"
            )
        return "\n".join(lines)


@dataclass
class RestoreRecord:
    """What a restore did: which snapshot, how old, how long each phase took."""

    snapshot_key: str
    snapshot_sha256: str
    snapshot_age_seconds: float
    skipped: list[dict[str, str]]
    started_at: str
    phases: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0
    configure_changes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_restore(
    aws: Aws, settings: RestoreSettings, *, key: str | None = None, force: bool = False
) -> RestorePlan:
    """Choose the snapshot: ``key``, or the newest whose checksum verifies; apply the interlocks."""
    now = dt.datetime.now(dt.UTC)
    plan = RestorePlan(snapshot=None)
    infos = snap.list_snapshots(aws, settings.bucket, settings.prefix)
    if key is not None:
        infos = [i for i in infos if i.key == key]
        if not infos:
            plan.refused = f"no snapshot {key} in s3://{settings.bucket}/{settings.prefix}"
            return plan
    for info in infos:
        meta = info.metadata
        cluster_id = meta.get("cluster-id", "")
        if (
            settings.expected_cluster_id
            and cluster_id != settings.expected_cluster_id
            and not force
        ):
            plan.skipped.append(
                {"key": info.key, "reason": f"from another cluster id ({cluster_id})"}
            )
            continue
        result = snap.verify_snapshot(aws, settings.bucket, info.key, settings.work_dir)
        if not result.ok:
            plan.skipped.append({"key": info.key, "reason": result.reason})
            continue
        candidate = Candidate(
            key=info.key,
            taken_at=info.taken_at.isoformat(timespec="seconds"),
            age_seconds=(now - info.taken_at).total_seconds(),
            cluster_id=cluster_id,
            sha256=meta.get("sha256", ""),
            size=info.size,
        )
        if candidate.age_seconds > settings.max_age and not force:
            plan.refused = (
                f"the newest good snapshot {info.key} is {candidate.age_seconds:.0f} s old, "
                f"older than restore.max_age ({settings.max_age:.0f} s); use --force to restore it"
            )
            plan.snapshot = candidate
            return plan
        plan.snapshot = candidate
        return plan
    plan.refused = "no snapshot verifies" if infos else "there is no snapshot to restore"
    return plan


def cluster_is_empty(target: RestoreTarget) -> bool:
    """True only when every node answers and none is initialized."""
    for name in target.node_names():
        try:
            if target.node_client(name).read_seal_status().get("initialized") is not False:
                return False
        except VaultdrError:
            return False
    return True


def check_empty(target: RestoreTarget) -> None:
    """Raise :class:`RestoreRefused` unless every node answers uninitialized."""
    for name in target.node_names():
        try:
            initialized = target.node_client(name).read_seal_status().get("initialized")
        except VaultdrError as exc:
            raise RestoreRefused(
                f"cannot tell whether {name} is empty ({exc.message}); refusing to restore",
                hint="every node must answer and be uninitialized; check `vaultdr status`",
            ) from None
        if initialized is not False:
            raise RestoreRefused(
                f"{name} is initialized: vaultdr never restores into an initialized cluster",
                hint="a restore is for an empty cluster (total loss); nothing was changed",
            )


class Restorer:
    """Runs one restore into an empty cluster, timing each phase."""

    def __init__(
        self,
        target: RestoreTarget,
        aws: Aws,
        settings: RestoreSettings,
        *,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.target = target
        self.aws = aws
        self.settings = settings
        self.on_event = on_event or (lambda _kind, _fields: None)

    def run(
        self, *, key: str | None = None, force: bool = False, dry_run: bool = False
    ) -> RestorePlan | RestoreRecord:
        check_empty(self.target)
        plan = plan_restore(self.aws, self.settings, key=key, force=force)
        for item in plan.skipped:
            log.warning("skipping snapshot %s: %s", item["key"], item["reason"])
        if plan.refused or plan.snapshot is None:
            if dry_run:
                return plan
            raise RestoreRefused(plan.refused or "no snapshot", hint="see `vaultdr snapshot list`")
        if dry_run:
            return plan
        return self._restore(plan.snapshot, plan.skipped)

    def _restore(self, candidate: Candidate, skipped: list[dict[str, str]]) -> RestoreRecord:
        start = time.monotonic()
        record = RestoreRecord(
            snapshot_key=candidate.key,
            snapshot_sha256=candidate.sha256,
            snapshot_age_seconds=round(candidate.age_seconds, 3),
            skipped=skipped,
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        )
        self.on_event("restore-started", {"snapshot": candidate.key})

        def phase(name: str) -> None:
            record.phases[name] = round(time.monotonic() - start, 3)
            self.on_event(f"restore-{name}", {"t_rel": record.phases[name]})

        names = self.target.node_names()
        first, others = names[0], names[1:]
        local = self.settings.work_dir / "restore.snap"
        # The download overlaps holding the other nodes and initializing the
        # first; the restore itself waits for the verified file.
        with ThreadPoolExecutor(max_workers=len(names) + 1) as pool:
            download = pool.submit(
                snap.download_verified,
                self.aws,
                self.settings.bucket,
                candidate.key,
                local,
                candidate.sha256,
            )
            try:
                for held in [pool.submit(self.target.hold_node, name) for name in others]:
                    held.result()
                phase("others-held")
                try:
                    self._restore_first(first, local, phase, download)
                except BaseException:
                    # Leave the cluster empty again rather than half-restored, so the
                    # watcher (or an operator) can simply retry.
                    log.error("restore into %s failed: wiping it so the cluster is empty", first)
                    self.target.wipe_node(first)
                    raise
            finally:
                download.cancel()
                wait([download])
                local.unlink(missing_ok=True)
                for name in others:
                    self.target.release_node(name)
        root_token, recovery = self.target.break_glass()
        keys = recovery[: self.settings.recovery_threshold]
        self._bring_in_others(first, others, keys)
        phase("all-nodes-unsealed")
        record.configure_changes = self.target.configure()
        phase("configured")
        record.total_seconds = round(time.monotonic() - start, 3)
        self.on_event(
            "restore-finished", {"snapshot": candidate.key, "seconds": record.total_seconds}
        )
        del root_token
        return record

    def _restore_first(
        self,
        first: str,
        local: Path,
        phase: Callable[[str], None],
        download: Future[Any],
    ) -> None:
        client = self.target.node_client(first)
        init = client.initialize(
            recovery_shares=self.settings.recovery_shares,
            recovery_threshold=self.settings.recovery_threshold,
        )
        fresh = client.with_token(init.root_token)
        self._wait(f"{first} active after init", lambda: _active(fresh))
        phase("initialized")
        download.result(timeout=self.settings.timeout)
        phase("downloaded")
        fresh.restore_raft_snapshot(local, force=True)
        phase("restored")
        root_token, recovery = self.target.break_glass()
        restored = client.with_token(root_token)
        self._wait("a read with the restored root token", lambda: bool(restored.lookup_self()))
        phase("serving")
        # Reload the raft TLS keyring so the other nodes can join.
        restored.seal()
        keys = recovery[: self.settings.recovery_threshold]
        # Unsealing while the seal is still tearing down makes the server seal itself
        # again ("unable to grab state lock"): let the seal settle first.
        wait_for(lambda: client.read_seal_status().get("sealed") is True, timeout=5, interval=0.05)
        time.sleep(RESEAL_SETTLE_SECONDS)
        # Right after a seal the node may answer 503, or report itself uninitialized while
        # raft is down: keep offering the recovery keys. Rarely the server seals itself
        # again ("unable to grab state lock") and stays so; then a restart of the process
        # reloads the keyring just as well and auto-unseals it.
        if not wait_for(lambda: _reseal_step(client, keys), timeout=RESEAL_SECONDS, interval=0.1):
            log.warning("%s did not unseal after the reseal; restarting it", first)
            self.target.hold_node(first)
            self.target.release_node(first)
            self._wait(f"{first} unsealed after a restart", lambda: _reseal_step(client, keys))
        self._wait(f"{first} active after reseal", lambda: _active(restored))
        restored.set_autopilot_stabilization(self.settings.stabilization)
        phase("leader")

    def _bring_in_others(self, first: str, others: list[str], keys: list[str]) -> None:
        leader_addr = self.target.node_client(first).address
        ca_pem = self.target.ca_pem()
        for name in others:
            client = self.target.node_client(name)
            self._wait(f"{name} answering", lambda c=client: bool(c.read_seal_status()))  # type: ignore[misc]
            try:
                if not client.read_seal_status().get("initialized"):
                    client.join_raft(leader_api_addr=leader_addr, leader_ca_cert=ca_pem)
            except VaultdrError as exc:
                log.info(
                    "explicit join of %s failed (%s); retry_join will do it", name, exc.message
                )
        for name in others:
            client = self.target.node_client(name)
            self._wait(
                f"{name} joined and unsealed",
                lambda c=client: _unseal_step(c, keys),  # type: ignore[misc]
            )

    def _wait(self, what: str, condition: Callable[[], bool]) -> None:
        if not wait_for(condition, timeout=self.settings.timeout, interval=0.1):
            raise VaultdrError(
                f"restore: {what} did not happen within {self.settings.timeout:.0f} s",
                hint="see the node logs (`vaultdr status` names them); the cluster may need a manual restore",
            )


def _active(client: VaultClient) -> bool:
    health = client.read_health()
    return (
        health.get("initialized") is True
        and health.get("sealed") is False
        and health.get("standby") is False
    )


def _reseal_step(client: VaultClient, keys: list[str]) -> bool:
    """One step towards unsealing a node we sealed ourselves: True once it is unsealed."""
    status = client.read_seal_status()
    if status.get("sealed") is False:
        return True
    progress = int(status.get("progress") or 0)
    client.unseal(keys[min(progress, len(keys) - 1)])
    return client.read_seal_status().get("sealed") is False


def _unseal_step(client: VaultClient, keys: list[str]) -> bool:
    """One step towards a joined, unsealed node: True once it is unsealed."""
    status = client.read_seal_status()
    if not status.get("initialized"):
        return False
    if status.get("sealed") is False:
        return True
    progress = int(status.get("progress") or 0)
    client.unseal(keys[min(progress, len(keys) - 1)])
    return client.read_seal_status().get("sealed") is False
