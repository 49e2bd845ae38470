"""Snapshots in S3: where they are filed, how they are listed, verified, uploaded and retained.

Each snapshot is one object ``<prefix>/<cluster_id>/<YYYYMMDDTHHMMSS.ffffffZ>.snap``
carrying its facts as object metadata (``sha256``, ``size``, ``engine``,
``engine-version``, ``raft-index``, ``raft-term``, ``cluster-id``,
``cluster-name``, ``taken-at``; see :func:`snapshot_metadata`).
:func:`upload_snapshot` puts one with SSE-KMS and reads it back (HeadObject);
:func:`list_snapshots`, :func:`verify_snapshot` and :func:`latest_verified` are
the readers (``vaultdr snapshot list|verify``, the restore agent), which download
and check every byte against the metadata before trusting it;
:func:`apply_retention` decides which keys go (keep last N / newest per day).

Hazards:

* An upload that fails or does not read back identically has every version of
  its key deleted, so no partial object is left. Readers must still verify the
  sha256 of what they download: metadata alone proves nothing.
* Retention deletes *every version* of a key (the bucket is versioned), which
  cannot be undone. It only ever considers timestamp-named ``.snap`` keys
  directly under ``<prefix>/<cluster_id>/`` and always keeps the newest.
* Key names and day buckets use the agent host's UTC clock: a skewed clock
  skews retention.
* A verified download is every secret of the cluster (barrier-encrypted): it is
  created in a 0600 file in a 0700 ``work_dir`` and kept only when the caller
  asks (``keep=True``).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vaultdr.agents.snapshot.format import (
    SnapshotError,
    SnapshotFile,
    SnapshotFormatError,
    hash_file,
    inspect_snapshot,
)
from vaultdr.aws import Aws
from vaultdr.errors import VaultdrError

log = logging.getLogger("vaultdr.snapshot")

SNAPSHOT_SUFFIX = ".snap"
STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_STAMP_RE = re.compile(r"^(\d{8}T\d{6}\.\d{6})Z\.snap$")


# --- value types -------------------------------------------------------------------------


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


def utc_iso(moment: dt.datetime) -> str:
    """``moment`` in UTC as ISO 8601 with microseconds (the ``taken-at`` metadata, the status)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def private_dir(path: Path) -> Path:
    """``path``, created 0700 if it does not exist (snapshots are secret)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


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
    path = private_dir(work_dir) / f".verify-{uuid.uuid4().hex}-{key.rsplit('/', 1)[-1]}"
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


# --- writers: upload, retention ----------------------------------------------------------


def snapshot_metadata(
    snap: SnapshotFile,
    *,
    cluster_id: str,
    cluster_name: str,
    engine: str,
    engine_version: str,
    taken_at: dt.datetime,
) -> dict[str, str]:
    """The S3 object metadata of one snapshot (what :func:`verify_snapshot` checks)."""
    return {
        "sha256": snap.sha256,
        "size": str(snap.size),
        "engine": engine,
        "engine-version": engine_version,
        "raft-index": str(snap.raft_index),
        "raft-term": str(snap.raft_term),
        "cluster-id": cluster_id,
        "cluster-name": cluster_name,
        "taken-at": utc_iso(taken_at),
    }


def upload_snapshot(
    aws: Aws,
    bucket: str,
    key: str,
    path: Path,
    metadata: dict[str, str],
    *,
    kms_key_id: str | None,
) -> str | None:
    """PutObject, then HeadObject must show the same size and sha256; else delete it all.

    The version id of the upload (None on an unversioned bucket). On any failure every
    version of ``key`` is deleted before the error is raised again.
    """
    try:
        version = aws.put_object(bucket, key, path, metadata=metadata, sse_kms_key_id=kms_key_id)
        _check_upload(aws, bucket, key, metadata, kms_key_id=kms_key_id)
    except BaseException:
        discard_snapshot(aws, bucket, key)
        raise
    return version


def _check_upload(
    aws: Aws, bucket: str, key: str, metadata: Mapping[str, str], *, kms_key_id: str | None
) -> None:
    stat = aws.stat_object(bucket, key)
    problems = []
    if stat["size"] != int(metadata["size"]):
        problems.append(f"size {stat['size']}, expected {metadata['size']}")
    if stat["metadata"].get("sha256") != metadata["sha256"]:
        problems.append("sha256 metadata differs")
    if kms_key_id and stat.get("sse") != "aws:kms":
        problems.append(f"server-side encryption is {stat.get('sse')}, expected aws:kms")
    if problems:
        raise SnapshotError(f"upload of s3://{bucket}/{key} did not verify: {'; '.join(problems)}")


def discard_snapshot(aws: Aws, bucket: str, key: str) -> None:
    """Delete every version of a failed upload; a failure to do so is logged, not raised."""
    try:
        count = aws.delete_all_versions(bucket, key)
    except VaultdrError as exc:
        log.error("could not delete the failed upload %s: %s", key, exc.message)
        return
    log.warning("deleted %d version(s) of the failed upload %s", count, key)


def plan_retention(
    aws: Aws, bucket: str, scope: str, *, last: int, daily: int, now: dt.datetime
) -> list[str]:
    """The keys retention would delete now under ``scope`` (lists the bucket, deletes nothing)."""
    return apply_retention(
        aws.list_objects(bucket, scope), prefix=scope, last=last, daily=daily, now=now
    )


def enforce_retention(
    aws: Aws, bucket: str, scope: str, *, last: int, daily: int, now: dt.datetime, newest: str
) -> tuple[list[str], str | None]:
    """Delete what :func:`plan_retention` names under ``scope`` (never ``newest``).

    (deleted keys, error text or None): the first failure, listing or deleting, stops
    it and is logged and returned, not raised, so a snapshot that was taken stays taken.
    """
    deleted: list[str] = []
    try:
        for key in plan_retention(aws, bucket, scope, last=last, daily=daily, now=now):
            if key != newest:
                aws.delete_all_versions(bucket, key)
                deleted.append(key)
    except VaultdrError as exc:
        log.warning("retention failed after %d deletion(s): %s", len(deleted), exc.message)
        return deleted, f"retention: {exc.message}"
    return deleted, None
