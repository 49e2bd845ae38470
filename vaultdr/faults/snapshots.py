"""corrupt-latest-snapshot: a backup that looks fine and is not.

Blast radius: the newest snapshot object in the snapshot bucket gets a new
version of the same length and metadata with 64 bytes flipped, so only its
checksum can tell; the restore must skip it and take the one before.

Rolled back: the corrupt version is deleted and the good one is current again.
The undo is journaled before the upload, naming the corrupt body's md5 and the
good version, so even a process killed right after the upload leaves an undo
that finds exactly that copy (and never deletes anything else).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from vaultdr.agents.snapshot import list_snapshots
from vaultdr.errors import FaultError
from vaultdr.faults.base import Fault, FaultTarget, Journaled, register, undo_kind


def _corrupted(body: bytes) -> bytes:
    """Same length, different bytes: only the checksum can tell."""
    corrupt = bytearray(body)
    middle = len(corrupt) // 2
    for i in range(middle, min(middle + 64, len(corrupt))):
        corrupt[i] ^= 0xFF
    return bytes(corrupt)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@register
class CorruptLatestSnapshot(Fault):
    name = "corrupt-latest-snapshot"
    summary = "overwrite the newest snapshot in S3 with a corrupt copy (same key and metadata)"
    undo = "delete the corrupt object version: the good one is current again"
    persistent = True

    def act(self, env: FaultTarget, nodes: list[str], entry: Journaled) -> dict[str, Any]:
        return corrupt_latest_snapshot(env, entry)

    def describe(self, env: FaultTarget, nodes: list[str]) -> list[str]:
        bucket, prefix = env.snapshot_location()
        return [f"put a corrupt version of the newest snapshot in s3://{bucket}/{prefix}"]


def corrupt_latest_snapshot(env: FaultTarget, entry: Journaled) -> dict[str, Any]:
    """Upload a corrupt copy of the newest snapshot over it, its undo journaled first.

    The undo step names the corrupt body's md5 and the good version before the upload,
    so a process killed between the upload and the journal update that names the new
    version still leaves an undo that finds exactly that copy.
    """
    aws = env.aws("admin")
    bucket, prefix = env.snapshot_location()
    snapshots = list_snapshots(aws, bucket, prefix, env.cluster_id())
    if not snapshots:
        raise FaultError(
            f"there is no snapshot in s3://{bucket}/{prefix} to corrupt",
            hint="take one first: `vaultdr snapshot now`",
        )
    newest = snapshots[0]
    stat = aws.stat_object(bucket, newest.key)
    good_version = stat.get("version_id")
    if not good_version or good_version == "null":
        raise FaultError(
            f"s3://{bucket}/{newest.key} has no version id (the bucket is not versioned, or "
            "the object predates versioning): a corrupted snapshot could not be undone",
            hint="enable versioning on the snapshot bucket and take a new snapshot; "
            "nothing was changed",
        )
    good = aws.get_object(bucket, newest.key)
    body = _corrupted(good)
    if body == good:
        raise FaultError(
            f"s3://{bucket}/{newest.key} is empty: there is nothing to corrupt",
            hint="take a new snapshot: `vaultdr snapshot now`; nothing was changed",
        )
    step: dict[str, Any] = {
        "kind": "delete-object-version",
        "bucket": bucket,
        "key": newest.key,
        "version": None,
        "corrupt_md5": _md5(body),
        "size": len(body),
        "good_version": str(good_version),
    }
    entry.set_undo([step])
    version = aws.put_object(
        bucket,
        newest.key,
        body,
        metadata=stat["metadata"],
        sse_kms_key_id=stat.get("sse_kms_key_id"),
    )
    if not version:
        raise FaultError(
            f"s3://{bucket} answered the corrupt upload without a version id: "
            "versioning was turned off while the fault ran",
            hint="enable versioning on the snapshot bucket; `vaultdr rollback` removes "
            "the corrupt copy by its checksum",
        )
    entry.set_undo([{**step, "version": version}])
    return {"key": newest.key, "version": version}


_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


@undo_kind("delete-object-version", rank=3)
def _remove_corrupt_version(env: FaultTarget, step: dict[str, Any]) -> str:
    """Delete the corrupt copy: the recorded version, or, when the process was killed
    before it could record one, every version of the key whose content is the corrupt
    body (ETag, or the body's own md5 where SSE-KMS makes the ETag no md5). Never the
    good version, never any other content."""
    aws = env.aws("admin")
    bucket, key = str(step["bucket"]), str(step["key"])
    version = step.get("version")
    if version:
        aws.delete_object_version(bucket, key, str(version))
        return f"removed the corrupt version of {key}"
    digest = step.get("corrupt_md5")
    if not isinstance(digest, str) or not _MD5_RE.match(digest):
        raise FaultError(
            f"the undo step for s3://{bucket}/{key} names neither the corrupt version nor its md5",
            hint=f"find the corrupt version by hand (aws s3api list-object-versions "
            f"--bucket {bucket} --prefix {key})",
        )
    good = step.get("good_version")
    size = step.get("size")
    versions = [v for v in aws.list_object_versions(bucket, key) if not v["delete_marker"]]
    ids = [v["version_id"] for v in versions]
    # Newest first: the corrupt copy can only be newer than the good version.
    candidates = versions[: ids.index(good)] if good in ids else versions
    removed = 0
    for found in candidates:
        if found["version_id"] in (good, None):
            continue
        same = found["etag"] == digest
        if not same and (size is None or found["size"] == size):
            same = _md5(aws.get_object_version(bucket, key, found["version_id"])) == digest
        if same:
            aws.delete_object_version(bucket, key, found["version_id"])
            removed += 1
    if not removed:
        return f"no corrupt version of {key} was found (it was never uploaded)"
    return f"removed the corrupt version of {key} (found by its checksum)"
