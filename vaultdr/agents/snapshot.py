"""The snapshot agent: raft snapshots of the cluster, uploaded to S3, verified, retained.

One run (:meth:`SnapshotAgent.take`) finds the active node, logs in with the
Kubernetes auth method as ``vaultdr-snapshot`` (a token that may only read
``sys/storage/raft/snapshot``), streams ``GET sys/storage/raft/snapshot`` to a
private temporary file, checks that it is a real snapshot (a gzipped tar whose
``meta.json`` gives the raft index and term and whose ``SHA256SUMS`` matches its
members), uploads it in one ``PutObject`` to
``<prefix>/<cluster_id>/<YYYYMMDDTHHMMSS.ffffffZ>.snap`` with SSE-KMS and its
facts as object metadata (``sha256``, ``size``, ``engine``, ``engine-version``,
``raft-index``, ``raft-term``, ``cluster-id``, ``cluster-name``, ``taken-at``),
reads the object back (HeadObject) to confirm size and sha256, applies retention
and writes a JSON status file. :meth:`SnapshotAgent.run_forever` repeats that on
an interval; a failed run is logged and recorded, never fatal.

Readers (``vaultdr snapshot list|verify``, the restore agent) use
:func:`list_snapshots`, :func:`verify_snapshot` and :func:`latest_verified`,
which download and check every byte against the metadata before trusting it.

This module runs in the local supervisor and, unchanged, in a container in
Kubernetes: it must never import ``vaultdr.envs``.

Hazards:

* A snapshot is the whole dataset (barrier-encrypted, but still every secret):
  temporary files are created 0600 in ``work_dir`` and removed after each run;
  verified downloads are kept only when the caller asks (``keep=True``).
* The Vault token and the service-account JWT are never logged, written to the
  status file or put into an error; failure texts are also scrubbed of both.
  The token is revoked (``auth/token/revoke-self``) at the end of every run.
* An upload that fails or does not read back identically has every version of
  its key deleted, so no partial object is left. Readers must still verify the
  sha256 of what they download: metadata alone proves nothing.
* Retention deletes *every version* of a key (the bucket is versioned), which
  cannot be undone. It only ever considers timestamp-named ``.snap`` keys
  directly under ``<prefix>/<cluster_id>/`` and always keeps the newest.
* Key names and day buckets use the agent host's UTC clock: a skewed clock
  skews retention.
* The engine (``openbao``/``vault``) is inferred from ``sys/health``: HashiCorp
  Vault reports an ``enterprise`` field, OpenBao does not.
* Two agents writing one status file (a ``snapshot now`` during the loop) may
  lose a ``runs`` increment; the file itself is always whole (atomic rename).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import tarfile
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from vaultdr.aws import Aws
from vaultdr.errors import VaultApiError, VaultdrError
from vaultdr.vault import VaultClient

log = logging.getLogger("vaultdr.snapshot")

GZIP_MAGIC = b"\x1f\x8b"
SNAPSHOT_SUFFIX = ".snap"
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_STAMP_RE = re.compile(r"^(\d{8}T\d{6}\.\d{6})Z\.snap$")
_META_LIMIT = 1 << 20  # meta.json is a few hundred bytes; refuse to buffer a giant one
_CHUNK = 1 << 20
_ERROR_TEXT_LIMIT = 500


class SnapshotError(VaultdrError):
    """A snapshot could not be taken, uploaded or trusted."""


class SnapshotFormatError(SnapshotError):
    """The bytes are not a raft snapshot (empty, not gzip, no meta.json, bad SHA256SUMS)."""


# --- value types -------------------------------------------------------------------------


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
class SnapshotFile:
    """What a snapshot file on disk is: its size, sha256 and raft ``meta.json``."""

    size: int
    sha256: str
    meta: dict[str, Any]

    @property
    def raft_index(self) -> int:
        return int(self.meta["Index"])

    @property
    def raft_term(self) -> int:
        return int(self.meta.get("Term", 0))


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


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot object as listed: key, size, last_modified and its S3 metadata."""

    key: str
    size: int
    last_modified: dt.datetime | None
    metadata: dict[str, str]
    cluster_id: str
    taken_at: dt.datetime

    @property
    def sha256(self) -> str | None:
        return self.metadata.get("sha256")


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one snapshot object; ``reason`` says exactly what is wrong."""

    key: str
    ok: bool
    reason: str
    size: int | None = None
    sha256: str | None = None
    raft_index: int | None = None
    raft_term: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # the verified download, only with keep=True


# --- names -------------------------------------------------------------------------------


def format_stamp(moment: dt.datetime) -> str:
    """``YYYYMMDDTHHMMSS.ffffffZ`` of ``moment`` in UTC."""
    return moment.astimezone(dt.UTC).strftime(STAMP_FORMAT)


def parse_key_time(key: str) -> dt.datetime | None:
    """The UTC time in a snapshot key's file name, or None when it is not one of ours."""
    match = _STAMP_RE.match(key.rsplit("/", 1)[-1])
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%f").replace(tzinfo=dt.UTC)


def cluster_prefix(prefix: str, cluster_id: str) -> str:
    """``<prefix>/<cluster_id>/``: where one cluster's snapshots live."""
    base = prefix.strip("/")
    return f"{base}/{cluster_id}/" if base else f"{cluster_id}/"


def snapshot_key(prefix: str, cluster_id: str, taken_at: dt.datetime) -> str:
    """``<prefix>/<cluster_id>/<YYYYMMDDTHHMMSS.ffffffZ>.snap``."""
    return f"{cluster_prefix(prefix, cluster_id)}{format_stamp(taken_at)}{SNAPSHOT_SUFFIX}"


# --- reading snapshot files --------------------------------------------------------------


def hash_file(path: Path) -> tuple[int, str]:
    """Size and sha256 hex digest of ``path``."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def inspect_snapshot(path: Path) -> SnapshotFile:
    """Size, sha256 and raft meta of the snapshot at ``path``.

    Raises :class:`SnapshotFormatError` when it is empty, not gzip, not a readable
    tar, has no usable ``meta.json``, or its members do not match ``SHA256SUMS``.
    """
    size, digest = hash_file(path)
    if size == 0:
        raise SnapshotFormatError("empty file")
    with path.open("rb") as stream:
        if stream.read(2) != GZIP_MAGIC:
            raise SnapshotFormatError("not gzip")
    return SnapshotFile(size=size, sha256=digest, meta=read_snapshot_meta(path))


def read_snapshot_meta(path: Path) -> dict[str, Any]:
    """The raft ``meta.json`` of a snapshot archive, after checking ``SHA256SUMS``."""
    members = _read_members(path)
    raw = members.meta
    if raw is None:
        raise SnapshotFormatError("no meta.json in the archive")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise SnapshotFormatError("meta.json is not JSON") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("Index"), int):
        raise SnapshotFormatError("meta.json has no raft Index")
    _check_sums(members)
    return meta


@dataclass
class _Members:
    meta: bytes | None = None
    sums: dict[str, str] | None = None
    hashes: dict[str, str] = field(default_factory=dict)


def _read_members(path: Path) -> _Members:
    found = _Members()
    try:
        with tarfile.open(path, "r|gz") as archive:
            for member in archive:
                stream = archive.extractfile(member) if member.isfile() else None
                if stream is not None:
                    _read_member(member.name, stream, found)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SnapshotFormatError(f"unreadable archive ({type(exc).__name__})") from None
    return found


def _read_member(name: str, stream: IO[bytes], found: _Members) -> None:
    if name == "SHA256SUMS":
        found.sums = _parse_sums(stream.read(_META_LIMIT).decode("utf-8", "replace"))
        return
    digest = hashlib.sha256()
    data = b""
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        digest.update(chunk)
        if name == "meta.json" and len(data) < _META_LIMIT:
            data += chunk
    found.hashes[name] = digest.hexdigest()
    if name == "meta.json":
        found.meta = data


def _parse_sums(text: str) -> dict[str, str]:
    sums: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _check_sums(members: _Members) -> None:
    if not members.sums:
        raise SnapshotFormatError("no SHA256SUMS in the archive")
    for name, expected in sorted(members.sums.items()):
        actual = members.hashes.get(name)
        if actual is None:
            raise SnapshotFormatError(f"{name} is listed in SHA256SUMS but missing")
        if actual != expected:
            raise SnapshotFormatError(f"{name} does not match its SHA256SUMS entry")


# --- retention ---------------------------------------------------------------------------


def apply_retention(
    objects: Iterable[Mapping[str, Any]],
    *,
    prefix: str,
    last: int,
    daily: int,
    now: dt.datetime,
) -> list[str]:
    """The keys retention deletes, oldest first. Pure: it lists nothing and deletes nothing.

    ``objects`` are listed objects (``{"key": ...}``, as ``Aws.list_objects`` returns).
    Only keys directly under ``prefix`` (one cluster's ``<prefix>/<cluster_id>/``) named
    ``<YYYYMMDDTHHMMSS.ffffffZ>.snap`` are candidates; any other key is left alone.
    Kept: the newest ``last`` (at least one: the newest is never deleted), plus the
    newest of each of the last ``daily`` UTC days counted back from ``now``, today
    included. Times come from the key names, not from the upload time.
    """
    if last < 0 or daily < 0:
        raise ValueError("retention counts must not be negative")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    snapshots = _retention_candidates(objects, _scope(prefix))
    keep = {key for _, key in snapshots[: max(last, 1)]}
    keep |= _newest_per_day(snapshots, _recent_days(now, daily))
    return [key for _, key in reversed(snapshots) if key not in keep]


def _scope(prefix: str) -> str:
    if not prefix.strip("/"):
        raise ValueError("retention needs a cluster prefix; refusing to act on a whole bucket")
    return prefix if prefix.endswith("/") else f"{prefix}/"


def _retention_candidates(
    objects: Iterable[Mapping[str, Any]], scope: str
) -> list[tuple[dt.datetime, str]]:
    """(time, key) of the snapshot keys directly under ``scope``, newest first, no repeats."""
    found: dict[str, dt.datetime] = {}
    for item in objects:
        key = str(item["key"])
        rest = key[len(scope) :] if key.startswith(scope) else None
        when = parse_key_time(key) if rest and "/" not in rest else None
        if when is not None:
            found[key] = when
    return sorted(((when, key) for key, when in found.items()), reverse=True)


def _recent_days(now: dt.datetime, daily: int) -> set[dt.date]:
    today = now.astimezone(dt.UTC).date()
    return {today - dt.timedelta(days=i) for i in range(daily)}


def _newest_per_day(snapshots: list[tuple[dt.datetime, str]], days: set[dt.date]) -> set[str]:
    kept: dict[dt.date, str] = {}
    for when, key in snapshots:  # newest first: the first of each day wins
        if when.date() in days:
            kept.setdefault(when.date(), key)
    return set(kept.values())


# --- readers: list, verify ---------------------------------------------------------------


def list_snapshots(
    aws: Aws, bucket: str, prefix: str, cluster_id: str | None = None
) -> list[SnapshotInfo]:
    """Snapshot objects under ``<prefix>/`` (or one cluster's), newest first, with metadata.

    Newest is by the time in the key name. Metadata comes from a HeadObject per object
    and is *claimed*, not verified: use :func:`verify_snapshot` before trusting one.
    """
    base = prefix.strip("/")
    where = cluster_prefix(prefix, cluster_id) if cluster_id else (f"{base}/" if base else "")
    found: list[SnapshotInfo] = []
    for item in aws.list_objects(bucket, where):
        info = _snapshot_info(aws, bucket, where, cluster_id, item)
        if info is not None:
            found.append(info)
    found.sort(key=lambda i: (i.taken_at, i.key), reverse=True)
    return found


def _snapshot_info(
    aws: Aws, bucket: str, where: str, cluster_id: str | None, item: Mapping[str, Any]
) -> SnapshotInfo | None:
    """The listed object as a snapshot, or None when its key is not ``[<cluster_id>/]<stamp>.snap``."""
    key = str(item["key"])
    parts = key[len(where) :].split("/")
    taken_at = parse_key_time(key)
    if taken_at is None or len(parts) != (1 if cluster_id else 2):
        return None
    return SnapshotInfo(
        key=key,
        size=int(item.get("size", 0)),
        last_modified=item.get("last_modified"),
        metadata=aws.head_object(bucket, key),
        cluster_id=cluster_id or parts[0],
        taken_at=taken_at,
    )


def verify_snapshot(
    aws: Aws, bucket: str, key: str, work_dir: Path, *, keep: bool = False
) -> VerifyResult:
    """Download ``key`` and check it against its metadata and as a snapshot archive.

    The reason names the first problem: ``unreadable: ...``, ``missing metadata: ...``,
    ``bad metadata: ...``, ``truncated: ...``, ``size mismatch: ...``,
    ``checksum mismatch: ...``, ``not a snapshot: ...`` or ``metadata mismatch: ...``
    (its raft-index differs from the archive's). With ``keep`` the verified file stays in ``work_dir``
    (``result.path``); otherwise nothing is left there.
    """
    try:
        metadata = aws.head_object(bucket, key)
    except VaultdrError as exc:
        return VerifyResult(key, ok=False, reason=f"unreadable: {exc.message}")
    problem = _metadata_problem(metadata)
    if problem:
        return VerifyResult(key, ok=False, reason=problem, metadata=metadata)
    path = _private_dir(work_dir) / f".verify-{uuid.uuid4().hex}-{key.rsplit('/', 1)[-1]}"
    result = VerifyResult(key, ok=False, reason="not checked", metadata=metadata)
    try:
        result = _download_and_check(aws, bucket, key, path, metadata)
    finally:
        if not (keep and result.ok):
            path.unlink(missing_ok=True)
    return result if keep else replace(result, path=None)


def _metadata_problem(metadata: Mapping[str, str]) -> str | None:
    missing = [name for name in ("sha256", "size") if not metadata.get(name)]
    if missing:
        return f"missing metadata: {', '.join(missing)}"
    if not metadata["size"].isdigit():
        return f"bad metadata: size is not a number ({metadata['size'][:40]!r})"
    return None


def _download_and_check(
    aws: Aws, bucket: str, key: str, path: Path, metadata: dict[str, str]
) -> VerifyResult:
    try:
        aws.download_object(bucket, key, path)
    except VaultdrError as exc:
        return VerifyResult(key, ok=False, reason=f"unreadable: {exc.message}", metadata=metadata)
    size, digest = hash_file(path)
    facts: dict[str, Any] = {"size": size, "sha256": digest, "metadata": metadata}
    problem = _content_problem(size, digest, metadata)
    if problem:
        return VerifyResult(key, ok=False, reason=problem, **facts)
    try:
        snap = inspect_snapshot(path)
    except SnapshotFormatError as exc:
        return VerifyResult(key, ok=False, reason=f"not a snapshot: {exc.message}", **facts)
    problem = _meta_problem(snap, metadata)
    if problem:
        return VerifyResult(key, ok=False, reason=problem, **facts)
    return VerifyResult(
        key,
        ok=True,
        reason="ok",
        raft_index=snap.raft_index,
        raft_term=snap.raft_term,
        path=path,
        **facts,
    )


def _content_problem(size: int, digest: str, metadata: Mapping[str, str]) -> str | None:
    expected_size = int(metadata["size"])
    if size < expected_size:
        return f"truncated: {size} of {expected_size} bytes"
    if size > expected_size:
        return f"size mismatch: {size} bytes, metadata says {expected_size}"
    if digest != metadata["sha256"].lower():
        return f"checksum mismatch: sha256 {digest}, metadata says {metadata['sha256']}"
    return None


def _meta_problem(snap: SnapshotFile, metadata: Mapping[str, str]) -> str | None:
    claimed = metadata.get("raft-index")
    if claimed is not None and claimed != str(snap.raft_index):
        return f"metadata mismatch: raft-index {claimed}, meta.json says {snap.raft_index}"
    return None


def download_verified(aws: Aws, bucket: str, key: str, path: Path, sha256: str) -> SnapshotFile:
    """Download ``key`` to ``path`` and check that it is a snapshot with this ``sha256``.

    For a caller that already verified the object (a restore): the bytes it restores
    are checked again, because the object may have changed since. On a mismatch
    ``path`` is removed and :class:`SnapshotError` raised.
    """
    aws.download_object(bucket, key, path)
    try:
        snap = inspect_snapshot(path)
    except SnapshotFormatError as exc:
        path.unlink(missing_ok=True)
        raise SnapshotError(f"s3://{bucket}/{key} is not a snapshot: {exc.message}") from None
    if snap.sha256 != sha256.lower():
        path.unlink(missing_ok=True)
        raise SnapshotError(
            f"s3://{bucket}/{key}: checksum mismatch: sha256 {snap.sha256}, expected {sha256}"
        )
    return snap


def latest_verified(
    aws: Aws,
    bucket: str,
    prefix: str,
    work_dir: Path,
    *,
    cluster_id: str | None = None,
    keep: bool = False,
) -> tuple[VerifyResult | None, list[VerifyResult]]:
    """The newest snapshot that verifies (None if none does) and the ones skipped on the way.

    Walks newest to oldest; each skipped result names its key and reason. With ``keep``
    the verified file stays in ``work_dir`` for a restore (``result.path``).
    """
    skipped: list[VerifyResult] = []
    for info in list_snapshots(aws, bucket, prefix, cluster_id):
        result = verify_snapshot(aws, bucket, info.key, work_dir, keep=keep)
        if result.ok:
            return result, skipped
        log.warning("skipping snapshot %s: %s", info.key, result.reason)
        skipped.append(result)
    return None, skipped


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


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True, default=str)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


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
        work = _private_dir(self.settings.work_dir)
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
        """PutObject, then HeadObject must show the same size and sha256; else delete it all."""
        try:
            version = self.aws.put_object(
                self.settings.bucket,
                key,
                path,
                metadata=metadata,
                sse_kms_key_id=self.settings.kms_key_id,
            )
            self._check_upload(key, metadata)
        except BaseException:
            self._discard(key)
            raise
        return version

    def _check_upload(self, key: str, metadata: Mapping[str, str]) -> None:
        stat = self.aws.stat_object(self.settings.bucket, key)
        problems = []
        if stat["size"] != int(metadata["size"]):
            problems.append(f"size {stat['size']}, expected {metadata['size']}")
        if stat["metadata"].get("sha256") != metadata["sha256"]:
            problems.append("sha256 metadata differs")
        if self.settings.kms_key_id and stat.get("sse") != "aws:kms":
            problems.append(f"server-side encryption is {stat.get('sse')}, expected aws:kms")
        if problems:
            raise SnapshotError(
                f"upload of s3://{self.settings.bucket}/{key} did not verify: {'; '.join(problems)}"
            )

    def _discard(self, key: str) -> None:
        try:
            count = self.aws.delete_all_versions(self.settings.bucket, key)
        except VaultdrError as exc:
            log.error("could not delete the failed upload %s: %s", key, exc.message)
            return
        log.warning("deleted %d version(s) of the failed upload %s", count, key)

    def _retain(
        self, cluster_id: str, newest: str, now: dt.datetime
    ) -> tuple[list[str], str | None]:
        """Apply retention under this cluster's prefix; (deleted keys, error text or None)."""
        deleted: list[str] = []
        try:
            for key in self.plan_retention(cluster_id, now):
                if key != newest:
                    self.aws.delete_all_versions(self.settings.bucket, key)
                    deleted.append(key)
        except VaultdrError as exc:
            log.warning("retention failed after %d deletion(s): %s", len(deleted), exc.message)
            return deleted, f"retention: {exc.message}"
        return deleted, None

    def plan_retention(self, cluster_id: str, now: dt.datetime) -> list[str]:
        """The keys retention would delete now (lists the bucket, deletes nothing)."""
        scope = cluster_prefix(self.settings.prefix, cluster_id)
        return apply_retention(
            self.aws.list_objects(self.settings.bucket, scope),
            prefix=scope,
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
            "last_success": _iso(_utcnow()),
            "last_key": record.key,
            "last_sha256": record.sha256,
            "last_size": record.size,
            "last_raft_index": record.raft_index,
            "last_duration": round(record.duration, 3),
        }
        if record.retention_error:
            changes |= {"last_error": record.retention_error, "last_error_at": _iso(_utcnow())}
        self._update_status(changes, failed=False)

    def _record_failure(self, reason: str) -> None:
        self._update_status({"last_error": reason, "last_error_at": _iso(_utcnow())}, failed=True)

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
    return {
        "sha256": snap.sha256,
        "size": str(snap.size),
        "engine": source.engine,
        "engine-version": source.engine_version,
        "raft-index": str(snap.raft_index),
        "raft-term": str(snap.raft_term),
        "cluster-id": source.cluster_id,
        "cluster-name": settings.cluster,
        "taken-at": _iso(taken_at),
    }


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a failed run: the vaultdr message, or the exception's type and text."""
    text = exc.message if isinstance(exc, VaultdrError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text[:_ERROR_TEXT_LIMIT]
