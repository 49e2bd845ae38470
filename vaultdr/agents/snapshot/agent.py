"""The snapshot agent: one run takes, uploads, verifies and retains a raft snapshot.

One run (:meth:`SnapshotAgent.take`) finds the active node, logs in with the
Kubernetes auth method as ``vaultdr-snapshot`` (a token that may only read
``sys/storage/raft/snapshot``), streams ``GET sys/storage/raft/snapshot`` to a
private temporary file, checks that it is a real snapshot (:mod:`.format`),
uploads it in one ``PutObject`` with SSE-KMS and its facts as object metadata,
reads the object back to confirm size and sha256 (:mod:`.store`), applies
retention and writes a JSON status file. :meth:`SnapshotAgent.run_forever`
repeats that on an interval; a failed run is logged and recorded, never fatal.

This module runs in the local supervisor and, unchanged, in a container in
Kubernetes: it must never import ``vaultdr.envs`` (the layers contract in
pyproject.toml enforces it).

Hazards:

* A snapshot is the whole dataset (barrier-encrypted, but still every secret):
  temporary files are created 0600 in ``work_dir`` and removed after each run.
* The Vault token and the service-account JWT are never logged, written to the
  status file or put into an error; failure texts are also scrubbed of both.
  The token is revoked (``auth/token/revoke-self``) at the end of every run.
* The engine (``openbao``/``vault``) is inferred from ``sys/health``: HashiCorp
  Vault reports an ``enterprise`` field, OpenBao does not.
* Two agents writing one status file (a ``snapshot now`` during the loop) may
  lose a ``runs`` increment; the file itself is always whole (atomic rename).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdr.agents.snapshot.format import (
    SnapshotError,
    SnapshotFile,
    SnapshotFormatError,
    inspect_snapshot,
)
from vaultdr.agents.snapshot.store import (
    cluster_prefix,
    enforce_retention,
    plan_retention,
    private_dir,
    snapshot_key,
    snapshot_metadata,
    upload_snapshot,
    utc_iso,
)
from vaultdr.aws import Aws
from vaultdr.config import Stack
from vaultdr.errors import VaultApiError, VaultdrError
from vaultdr.files import write_json_atomic
from vaultdr.principals import seal_alias
from vaultdr.vault import VaultClient

log = logging.getLogger("vaultdr.snapshot")

_ERROR_TEXT_LIMIT = 500


def sse_kms_key_id(stack: Stack) -> str:
    """The KMS key ``stack``'s snapshots are SSE-KMS encrypted with, wherever the agent runs:
    ``kube.snapshot_kms_key_id`` (eks: Terraform's snapshot key, on which the snapshot role
    has its only KMS grant), else the seal's key (``kube.kms_key_id``, else the emulators'
    seal alias; on the emulators the snapshots share the seal key)."""
    kube = stack.kube
    if kube is not None and kube.snapshot_kms_key_id:
        return kube.snapshot_kms_key_id
    return (kube.kms_key_id if kube else None) or seal_alias(stack.cluster)


@dataclass(frozen=True)
class SnapshotSettings:
    """What the agent snapshots and where it puts the result.

    ``cluster`` is the stack's name (``cluster-name`` metadata); the key is scoped by
    the engine's own cluster id. ``kms_key_id`` None means no SSE-KMS. ``status_file``
    (None: none is written) and ``work_dir`` (private temporary files) are keyword-only.
    """

    cluster: str
    addresses: list[str]
    ca_file: Path | None
    bucket: str
    prefix: str
    retain_last: int
    retain_daily: int
    kms_key_id: str | None
    role: str = "vaultdr-snapshot"
    auth_mount: str = "kubernetes"
    status_file: Path | None = field(kw_only=True)
    work_dir: Path = field(kw_only=True)


@dataclass(frozen=True)
class SnapshotRecord:
    """One successful run: what was uploaded where, and what retention deleted."""

    bucket: str
    key: str
    sha256: str
    size: int
    cluster_id: str
    cluster_name: str
    engine: str
    engine_version: str
    raft_index: int
    raft_term: int
    taken_at: dt.datetime
    node: str
    duration: float
    version_id: str | None = None
    deleted: tuple[str, ...] = ()
    retention_error: str | None = None


# --- status file -------------------------------------------------------------------------


def read_status(path: Path) -> dict[str, Any]:
    """The agent's status file; {} when it does not exist yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SnapshotError(
            f"cannot read the snapshot status file {path}: {type(exc).__name__}"
        ) from None
    if not isinstance(data, dict):
        raise SnapshotError(f"the snapshot status file {path} does not hold a JSON object")
    return data


def describe_status(status: Mapping[str, Any], now: dt.datetime) -> str:
    """One line: ``last snapshot 42 s ago (key ...), last error: none``."""
    success = _parse_time(status.get("last_success"))
    if success is None:
        head = "no snapshot yet"
    else:
        head = f"last snapshot {format_age(now - success)} ago (key {status.get('last_key')})"
    error = status.get("last_error")
    if not error:
        return f"{head}, last error: none"
    error_at = _parse_time(status.get("last_error_at"))
    when = f" {format_age(now - error_at)} ago" if error_at else ""
    return f"{head}, last error{when}: {error}"


def format_age(age: dt.timedelta) -> str:
    """``42 s``, ``5 min``, ``3 h`` or ``2 d``."""
    seconds = max(0, int(age.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def engine_of(health: Mapping[str, Any]) -> str:
    """``vault`` when ``sys/health`` has HashiCorp's ``enterprise`` field, else ``openbao``."""
    return "vault" if "enterprise" in health else "openbao"


def next_due(previous: float, interval: float, now: float) -> float:
    """The next tick after ``previous`` that is not in the past (missed ticks are skipped)."""
    due = previous + interval
    if due < now:
        due += math.ceil((now - due) / interval) * interval
    return due


# --- the agent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """Facts about the cluster read before the snapshot (unauthenticated endpoints)."""

    node: VaultClient
    cluster_id: str
    engine: str
    engine_version: str


class SnapshotAgent:
    """Takes snapshots for one cluster (see the module docstring).

    ``aws`` acts as the snapshot principal; ``jwt_source`` returns a fresh
    service-account JWT (audience ``vault``) for ``settings.role`` on each call.
    """

    def __init__(self, settings: SnapshotSettings, aws: Aws, jwt_source: Callable[[], str]) -> None:
        self.settings = settings
        self.aws = aws
        self._jwt_source = jwt_source
        self._secrets: list[str] = []
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"SnapshotAgent(cluster={self.settings.cluster!r}, bucket={self.settings.bucket!r})"

    # --- one run ------------------------------------------------------------------
    def take(self) -> SnapshotRecord:
        """Take, upload, verify and retain one snapshot; record the outcome in the status file.

        Raises the error that stopped it (nothing is left in S3 in that case).
        """
        self._secrets = []
        try:
            record = self._take()
        except Exception as exc:
            self.last_error = self._redact(describe_error(exc))
            self._record_failure(self.last_error)
            raise
        finally:
            self._secrets = []
        self.last_error = None
        self._record_success(record)
        return record

    def _take(self) -> SnapshotRecord:
        started = time.monotonic()
        source = self._read_source()
        taken_at = _utcnow()
        client = self.log_in(source.node)
        try:
            path = self._download(client)
        finally:
            self._revoke(client)
        try:
            snap = _inspect_for_upload(path)
            key = snapshot_key(self.settings.prefix, source.cluster_id, taken_at)
            version = self._upload(key, path, _metadata(self.settings, source, snap, taken_at))
        finally:
            path.unlink(missing_ok=True)
        deleted, retention_error = self._retain(source.cluster_id, key, _utcnow())
        return SnapshotRecord(
            bucket=self.settings.bucket,
            key=key,
            sha256=snap.sha256,
            size=snap.size,
            cluster_id=source.cluster_id,
            cluster_name=self.settings.cluster,
            engine=source.engine,
            engine_version=source.engine_version,
            raft_index=snap.raft_index,
            raft_term=snap.raft_term,
            taken_at=taken_at,
            node=source.node.address,
            duration=time.monotonic() - started,
            version_id=version,
            deleted=tuple(deleted),
            retention_error=retention_error,
        )

    def find_active(self) -> VaultClient:
        """A client for the active node: ``sys/leader`` is_self, else ``sys/health`` not standby."""
        clients = [VaultClient(a, ca_file=self.settings.ca_file) for a in self.settings.addresses]
        for client in clients:
            with contextlib.suppress(VaultdrError):
                if client.read_leader().get("is_self"):
                    return client
        for client in clients:
            with contextlib.suppress(VaultdrError):
                if _is_active(client.read_health()):
                    return client
        raise VaultApiError(
            f"no active node among {', '.join(self.settings.addresses)}",
            hint="is the cluster unsealed with a leader elected? `vaultdr status` shows it",
        )

    def _read_source(self) -> _Source:
        node = self.find_active()
        health = node.read_health()
        cluster_id = str(health.get("cluster_id") or "")
        if not cluster_id:
            raise SnapshotError(f"{node.address} reports no cluster_id in sys/health")
        version = str(node.read_seal_status().get("version") or health.get("version") or "")
        return _Source(node, cluster_id, engine_of(health), version)

    def log_in(self, node: VaultClient) -> VaultClient:
        """Log in at ``node`` with Kubernetes auth as ``settings.role``; a client with the token."""
        jwt = self._jwt_source()
        self._secrets.append(jwt)
        token = node.login_kubernetes(
            role=self.settings.role, jwt=jwt, mount=self.settings.auth_mount
        )
        self._secrets.append(token)
        return node.with_token(token)

    def _revoke(self, client: VaultClient) -> None:
        try:
            client.write("auth/token/revoke-self")
        except VaultdrError as exc:
            log.warning("could not revoke the snapshot token: %s", self._redact(exc.message))

    def _download(self, client: VaultClient) -> Path:
        work = private_dir(self.settings.work_dir)
        fd, name = tempfile.mkstemp(prefix=".snapshot-", suffix=".snap.part", dir=work)
        os.close(fd)
        path = Path(name)
        try:
            client.take_raft_snapshot(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _upload(self, key: str, path: Path, metadata: dict[str, str]) -> str | None:
        """Upload and read back (:func:`~.store.upload_snapshot`); nothing is left on failure."""
        return upload_snapshot(
            self.aws,
            self.settings.bucket,
            key,
            path,
            metadata,
            kms_key_id=self.settings.kms_key_id,
        )

    def _retain(
        self, cluster_id: str, newest: str, now: dt.datetime
    ) -> tuple[list[str], str | None]:
        """Apply retention under this cluster's prefix; (deleted keys, error text or None)."""
        return enforce_retention(
            self.aws,
            self.settings.bucket,
            cluster_prefix(self.settings.prefix, cluster_id),
            last=self.settings.retain_last,
            daily=self.settings.retain_daily,
            now=now,
            newest=newest,
        )

    def plan_retention(self, cluster_id: str, now: dt.datetime) -> list[str]:
        """The keys retention would delete now (lists the bucket, deletes nothing)."""
        return plan_retention(
            self.aws,
            self.settings.bucket,
            cluster_prefix(self.settings.prefix, cluster_id),
            last=self.settings.retain_last,
            daily=self.settings.retain_daily,
            now=now,
        )

    # --- the loop ---------------------------------------------------------------------
    def run_forever(self, stop: threading.Event, interval: float) -> None:
        """Wait until the cluster serves, take one, then one every ``interval`` s until ``stop``.

        A failed run is logged and recorded and retried on the next tick; nothing raises
        out of here but a bad ``interval``.
        """
        if interval <= 0:
            raise ValueError("the snapshot interval must be positive")
        s = self.settings
        log.info(
            "snapshot agent for %s: every %.1f s to s3://%s/%s",
            s.cluster,
            interval,
            s.bucket,
            s.prefix,
        )
        if not self._wait_until_serving(stop, min(1.0, interval)):
            return
        due = time.monotonic()
        while not stop.is_set():
            self.run_once()
            due = next_due(due, interval, time.monotonic())
            if stop.wait(max(0.0, due - time.monotonic())):
                break
        log.info("snapshot agent for %s stopped", s.cluster)

    def run_once(self) -> SnapshotRecord | None:
        """:meth:`take`, with a failure logged (never raised); the record or None."""
        try:
            record = self.take()
        except Exception:  # noqa: BLE001 - one failed run must not end the loop; take() recorded it
            log.error("snapshot of %s failed: %s", self.settings.cluster, self.last_error)
            return None
        log.info(
            "snapshot %s: %d bytes, sha256 %s, raft index %d, from %s in %.2f s; retention deleted %d",
            record.key,
            record.size,
            record.sha256,
            record.raft_index,
            record.node,
            record.duration,
            len(record.deleted),
        )
        return record

    def _wait_until_serving(self, stop: threading.Event, poll: float) -> bool:
        announced = False
        while not stop.is_set():
            try:
                self.find_active()
            except VaultdrError as exc:
                if not announced:
                    log.info("waiting for the cluster to serve: %s", exc.message)
                    announced = True
            else:
                return True
            stop.wait(poll)
        return False

    # --- status -----------------------------------------------------------------------
    def _record_success(self, record: SnapshotRecord) -> None:
        changes: dict[str, Any] = {
            "last_success": utc_iso(_utcnow()),
            "last_key": record.key,
            "last_sha256": record.sha256,
            "last_size": record.size,
            "last_raft_index": record.raft_index,
            "last_duration": round(record.duration, 3),
        }
        if record.retention_error:
            changes |= {"last_error": record.retention_error, "last_error_at": utc_iso(_utcnow())}
        self._update_status(changes, failed=False)

    def _record_failure(self, reason: str) -> None:
        self._update_status(
            {"last_error": reason, "last_error_at": utc_iso(_utcnow())}, failed=True
        )

    def _update_status(self, changes: Mapping[str, Any], *, failed: bool) -> None:
        path = self.settings.status_file
        if path is None:
            return
        try:
            status = read_status(path)
        except SnapshotError as exc:
            log.warning("%s; starting it afresh", exc.message)
            status = {}
        status.update(changes)
        status["cluster"] = self.settings.cluster
        status["runs"] = int(status.get("runs", 0)) + 1
        status["failures"] = int(status.get("failures", 0)) + (1 if failed else 0)
        status["last_run_ok"] = not failed
        status.setdefault("last_success", None)
        status.setdefault("last_error", None)
        try:
            write_json_atomic(path, status)
        except OSError as exc:
            log.error("cannot write the snapshot status file %s: %s", path, type(exc).__name__)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "<redacted>")
        return text


def _is_active(health: Mapping[str, Any]) -> bool:
    return (
        health.get("initialized") is True
        and health.get("sealed") is False
        and health.get("standby") is False
    )


def _inspect_for_upload(path: Path) -> SnapshotFile:
    try:
        return inspect_snapshot(path)
    except SnapshotFormatError as exc:
        raise SnapshotError(f"refusing to upload the snapshot: {exc.message}") from None


def _metadata(
    settings: SnapshotSettings, source: _Source, snap: SnapshotFile, taken_at: dt.datetime
) -> dict[str, str]:
    """The S3 object metadata of one snapshot."""
    return snapshot_metadata(
        snap,
        cluster_id=source.cluster_id,
        cluster_name=settings.cluster,
        engine=source.engine,
        engine_version=source.engine_version,
        taken_at=taken_at,
    )


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed run: the vaultdr message, or the exception's type and text."""
    text = exc.message if isinstance(exc, VaultdrError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text[:_ERROR_TEXT_LIMIT]
