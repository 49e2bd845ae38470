"""AWS S3: the snapshot bucket, its objects and their versions."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from vaultdr.aws._base import AwsBase


class S3Calls(AwsBase):
    """The S3 calls of :class:`vaultdr.aws.Aws`: buckets, objects and their versions."""

    def create_bucket(self, name: str, *, versioning: bool = True) -> None:
        """S3 ``CreateBucket`` (+ ``PutBucketVersioning`` Enabled when ``versioning``)."""
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.target.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.target.region}
        s3 = self._client("s3")
        self._call("s3", "CreateBucket", name, lambda: s3.create_bucket(**kwargs))
        if versioning:
            self._call(
                "s3",
                "PutBucketVersioning",
                name,
                lambda: s3.put_bucket_versioning(
                    Bucket=name, VersioningConfiguration={"Status": "Enabled"}
                ),
            )

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | Path,
        *,
        metadata: Mapping[str, str] | None = None,
        sse_kms_key_id: str | None = None,
    ) -> str | None:
        """S3 ``PutObject`` (one request, so the object appears whole or not at all).

        ``body`` is bytes or a file path (streamed). With ``sse_kms_key_id`` the object
        is encrypted server-side with that KMS key. Returns the version id, if any.
        """
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Metadata": dict(metadata or {})}
        if sse_kms_key_id:
            kwargs["ServerSideEncryption"] = "aws:kms"
            kwargs["SSEKMSKeyId"] = sse_kms_key_id
        s3 = self._client("s3")
        resource = f"s3://{bucket}/{key}"
        if isinstance(body, Path):
            with body.open("rb") as stream:
                kwargs["ContentLength"] = os.fstat(stream.fileno()).st_size
                answer = self._call(
                    "s3", "PutObject", resource, lambda: s3.put_object(Body=stream, **kwargs)
                )
        else:
            answer = self._call(
                "s3", "PutObject", resource, lambda: s3.put_object(Body=body, **kwargs)
            )
        version = answer.get("VersionId")
        return str(version) if version else None

    def stat_object(self, bucket: str, key: str) -> dict[str, Any]:
        """S3 ``HeadObject``: ``metadata``, ``size``, ``last_modified``, ``etag``,
        ``version_id``, ``sse`` and ``sse_kms_key_id``."""
        answer = self._call(
            "s3",
            "HeadObject",
            f"s3://{bucket}/{key}",
            lambda: self._client("s3").head_object(Bucket=bucket, Key=key),
        )
        return {
            "metadata": {str(k): str(v) for k, v in answer.get("Metadata", {}).items()},
            "size": int(answer.get("ContentLength", 0)),
            "last_modified": answer.get("LastModified"),
            "etag": str(answer.get("ETag", "")).strip('"'),
            "version_id": answer.get("VersionId"),
            "sse": answer.get("ServerSideEncryption"),
            "sse_kms_key_id": answer.get("SSEKMSKeyId"),
        }

    def head_object(self, bucket: str, key: str) -> dict[str, str]:
        """S3 ``HeadObject``: the object's user metadata (``x-amz-meta-*``, lower-cased keys)."""
        metadata: dict[str, str] = self.stat_object(bucket, key)["metadata"]
        return metadata

    def get_object(self, bucket: str, key: str) -> bytes:
        """S3 ``GetObject``: the whole body in memory (use download_object for big ones)."""
        resource = f"s3://{bucket}/{key}"

        def read() -> bytes:
            answer = self._client("s3").get_object(Bucket=bucket, Key=key)
            return bytes(answer["Body"].read())

        return self._call("s3", "GetObject", resource, read)

    def download_object(self, bucket: str, key: str, path: Path) -> None:
        """S3 ``GetObject`` streamed to ``path``; written to a temporary file then renamed,
        so ``path`` never holds a partial download."""
        resource = f"s3://{bucket}/{key}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:

                def fetch() -> None:
                    answer = self._client("s3").get_object(Bucket=bucket, Key=key)
                    stream: BinaryIO = answer["Body"]
                    for chunk in iter(lambda: stream.read(1 << 20), b""):
                        out.write(chunk)

                self._call("s3", "GetObject", resource, fetch)
            tmp.replace(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def list_objects(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """S3 ``ListObjectsV2`` (all pages): ``key``, ``size``, ``last_modified`` per object."""
        objects: list[dict[str, Any]] = []
        for page in self._pages(
            "s3",
            "ListObjectsV2",
            f"s3://{bucket}/{prefix}",
            "list_objects_v2",
            Bucket=bucket,
            Prefix=prefix,
        ):
            for item in page.get("Contents", []):
                objects.append(
                    {
                        "key": str(item["Key"]),
                        "size": int(item.get("Size", 0)),
                        "last_modified": item.get("LastModified"),
                    }
                )
        return objects

    def delete_object(self, bucket: str, key: str) -> None:
        """S3 ``DeleteObject`` (on a versioned bucket: adds a delete marker)."""
        self._call(
            "s3",
            "DeleteObject",
            f"s3://{bucket}/{key}",
            lambda: self._client("s3").delete_object(Bucket=bucket, Key=key),
        )

    def delete_object_version(self, bucket: str, key: str, version_id: str) -> None:
        """S3 ``DeleteObject`` of one version: the version before it becomes current again."""
        self._call(
            "s3",
            "DeleteObject",
            f"s3://{bucket}/{key}?versionId={version_id}",
            lambda: self._client("s3").delete_object(Bucket=bucket, Key=key, VersionId=version_id),
        )

    def list_object_versions(self, bucket: str, key: str) -> list[dict[str, Any]]:
        """S3 ``ListObjectVersions`` (all pages) of exactly ``key``, newest first.

        Per version or delete marker: ``version_id``, ``etag`` (without quotes, lower
        case; None for a delete marker), ``size``, ``last_modified``, ``is_latest`` and
        ``delete_marker``. An ETag is the body's md5 only for a single unencrypted or
        SSE-S3 PutObject; with SSE-KMS or multipart it is not.
        """
        resource = f"s3://{bucket}/{key}"
        found: list[dict[str, Any]] = []
        for page in self._pages(
            "s3", "ListObjectVersions", resource, "list_object_versions", Bucket=bucket, Prefix=key
        ):
            for marker, items in (
                (False, page.get("Versions", [])),
                (True, page.get("DeleteMarkers", [])),
            ):
                for item in items:
                    if item.get("Key") != key:
                        continue
                    etag = item.get("ETag")
                    found.append(
                        {
                            "version_id": str(item["VersionId"]),
                            "etag": str(etag).strip('"').lower() if etag else None,
                            "size": int(item.get("Size", 0)),
                            "last_modified": item.get("LastModified"),
                            "is_latest": bool(item.get("IsLatest", False)),
                            "delete_marker": marker,
                        }
                    )

        # S3 lists each kind newest first; merge the two by time (a stable sort keeps
        # S3's own order among versions with the same timestamp).
        def newest(v: dict[str, Any]) -> tuple[bool, float]:
            when = v["last_modified"]
            return v["is_latest"], when.timestamp() if when is not None else 0.0

        found.sort(key=newest, reverse=True)
        return found

    def get_object_version(self, bucket: str, key: str, version_id: str) -> bytes:
        """S3 ``GetObject`` of one version (``VersionId``): its whole body in memory."""
        resource = f"s3://{bucket}/{key}?versionId={version_id}"

        def read() -> bytes:
            answer = self._client("s3").get_object(Bucket=bucket, Key=key, VersionId=version_id)
            return bytes(answer["Body"].read())

        return self._call("s3", "GetObject", resource, read)

    def delete_all_versions(self, bucket: str, key: str) -> int:
        """S3 ``ListObjectVersions`` + ``DeleteObject`` with each ``VersionId``: removes every
        version and delete marker of exactly ``key``. Returns how many were deleted."""
        resource = f"s3://{bucket}/{key}"
        versions: list[str] = []
        for page in self._pages(
            "s3", "ListObjectVersions", resource, "list_object_versions", Bucket=bucket, Prefix=key
        ):
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if item.get("Key") == key:
                    versions.append(str(item["VersionId"]))
        s3 = self._client("s3")
        for version in versions:
            self._call(
                "s3",
                "DeleteObject",
                f"{resource}?versionId={version}",
                partial(s3.delete_object, Bucket=bucket, Key=key, VersionId=version),
            )
        return len(versions)
