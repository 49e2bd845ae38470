"""The snapshot store against the real AWS emulator (moto): uploads read back or vanish,
verification catches a swapped object, retention deletes only what it planned.

No stack is started: the archives are built here in the raft snapshot format
(gzipped tar, ``meta.json``, ``SHA256SUMS``), and moto is the only process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultdr.agents import snapshot as snap
from vaultdr.aws import Aws
from vaultdr.envs.local import awsemu
from vaultdr.envs.local.awsemu import AwsStack
from vaultdr.envs.local.processes import free_port, stop_pid
from vaultdr.errors import AwsError

REGION = "us-east-1"
BUCKET = "vaultdr-store-snapshots"
PREFIX = "snapshots"
CLUSTER_ID = "5e1f-store"
NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsStack]:
    base = tmp_path_factory.mktemp("moto")
    port = free_port()
    record = awsemu.start_moto(base, port=port, log=base / "moto.log")
    try:
        yield awsemu.bootstrap(awsemu.endpoint_url(port), REGION, cluster="store", bucket=BUCKET)
    finally:
        stop_pid(record.pid, record.start_time, grace=5)


@pytest.fixture
def aws(emulator: AwsStack) -> Aws:
    return Aws(emulator.target(emulator.admin))


def raft_snapshot(path: Path, *, index: int = 42, state: bytes = b"raft state") -> Path:
    """A gzipped tar in the raft snapshot format, with a matching SHA256SUMS."""
    members = {"meta.json": json.dumps({"Index": index, "Term": 3}).encode(), "state.bin": state}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in members.items())
    with tarfile.open(path, "w:gz") as archive:
        for name, data in [*members.items(), ("SHA256SUMS", sums.encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def metadata_for(path: Path, taken_at: dt.datetime) -> dict[str, str]:
    return snap.snapshot_metadata(
        snap.inspect_snapshot(path),
        cluster_id=CLUSTER_ID,
        cluster_name="store",
        engine="openbao",
        engine_version="2.6.2",
        taken_at=taken_at,
    )


def upload(aws: Aws, tmp_path: Path, taken_at: dt.datetime, scope: str = PREFIX) -> str:
    path = raft_snapshot(tmp_path / f"{snap.format_stamp(taken_at)}.snap")
    key = snap.snapshot_key(scope, CLUSTER_ID, taken_at)
    snap.upload_snapshot(aws, BUCKET, key, path, metadata_for(path, taken_at), kms_key_id=None)
    return key


def test_an_uploaded_snapshot_carries_its_facts_and_verifies(aws: Aws, tmp_path: Path) -> None:
    key = upload(aws, tmp_path, NOW, scope="verified")

    result = snap.verify_snapshot(aws, BUCKET, key, tmp_path / "work")

    assert result.ok, result.reason
    assert result.raft_index == 42
    assert result.metadata["cluster-id"] == CLUSTER_ID
    assert result.metadata["taken-at"] == "2026-11-22T12:00:00.000000+00:00"
    assert list((tmp_path / "work").iterdir()) == []


def test_an_upload_that_does_not_read_back_identically_leaves_no_version_behind(
    aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_stat = aws.stat_object

    def short_stat(bucket: str, key: str) -> dict[str, Any]:
        return {**real_stat(bucket, key), "size": 1}

    monkeypatch.setattr(aws, "stat_object", short_stat)
    path = raft_snapshot(tmp_path / "one.snap")
    key = snap.snapshot_key("readback", CLUSTER_ID, NOW)

    with pytest.raises(snap.SnapshotError, match="did not verify: size 1"):
        snap.upload_snapshot(aws, BUCKET, key, path, metadata_for(path, NOW), kms_key_id=None)

    assert aws.list_object_versions(BUCKET, key) == []


def test_retention_deletes_what_it_planned_and_never_the_newest(aws: Aws, tmp_path: Path) -> None:
    keys = [upload(aws, tmp_path, NOW - dt.timedelta(hours=h), scope="retained") for h in range(4)]
    scope = snap.cluster_prefix("retained", CLUSTER_ID)
    planned = snap.plan_retention(aws, BUCKET, scope, last=2, daily=0, now=NOW)

    deleted, error = snap.enforce_retention(
        aws, BUCKET, scope, last=2, daily=0, now=NOW, newest=keys[0]
    )

    assert error is None
    assert deleted == planned == [keys[3], keys[2]]
    assert [i.key for i in snap.list_snapshots(aws, BUCKET, "retained")] == keys[:2]


def test_a_retention_that_cannot_list_reports_the_error_instead_of_raising(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(bucket: str, prefix: str) -> list[dict[str, Any]]:
        raise AwsError("ListObjectVersions refused")

    monkeypatch.setattr(aws, "list_objects", refuse)

    deleted, error = snap.enforce_retention(
        aws, BUCKET, "anything/", last=1, daily=0, now=NOW, newest="anything/x.snap"
    )

    assert deleted == []
    assert error == "retention: ListObjectVersions refused"
