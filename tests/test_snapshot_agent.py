"""The snapshot agent against a real local stack: bao nodes, moto S3/KMS/IAM, kube API stand-in.

Each test that needs a clean slate writes under its own S3 prefix, so the retention
and corruption checks are not disturbed by the supervisor's own snapshot agent
(which writes under ``snapshots/``) or by each other. Nothing here stops a node.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultdr.agents.snapshot import (
    SnapshotAgent,
    SnapshotError,
    SnapshotSettings,
    cluster_prefix,
    describe_status,
    format_stamp,
    latest_verified,
    list_snapshots,
    read_status,
    verify_snapshot,
)
from vaultdr.aws import Aws
from vaultdr.envs.local.env import LocalEnvironment, ssm_path
from vaultdr.envs.local.snapshots import snapshot_agent_for, snapshot_settings_for
from vaultdr.errors import AccessDenied, VaultApiError
from vaultdr.polling import wait_for
from vaultdr.vault import VaultClient

pytestmark = pytest.mark.stack


@pytest.fixture
def env(awskms_stack: LocalEnvironment) -> LocalEnvironment:
    assert wait_for(lambda: awskms_stack.status(quick=True).healthy, timeout=60)
    return awskms_stack


@pytest.fixture
def settings(env: LocalEnvironment, tmp_path: Path) -> SnapshotSettings:
    """The stack's own settings, with private status file and work dir."""
    return dataclasses.replace(
        snapshot_settings_for(env),
        status_file=tmp_path / "agents" / "snapshot.json",
        work_dir=tmp_path / "agents" / "tmp",
    )


@pytest.fixture
def isolated(settings: SnapshotSettings) -> SnapshotSettings:
    """Settings writing under a prefix of their own."""
    return dataclasses.replace(settings, prefix=f"test-{uuid.uuid4().hex[:8]}")


@dataclasses.dataclass
class Secrets:
    """What the agent must never reveal: every JWT it was given and every token it got."""

    values: list[str] = dataclasses.field(default_factory=list)

    def absent_from(self, text: str) -> bool:
        return all(value not in text for value in self.values)


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    """Records the tokens kubernetes logins return, wherever they happen."""
    seen = Secrets()
    login = VaultClient.login_kubernetes

    def spy(self: VaultClient, *, role: str, jwt: str, mount: str = "kubernetes") -> str:
        seen.values.append(jwt)
        token = login(self, role=role, jwt=jwt, mount=mount)
        seen.values.append(token)
        return token

    monkeypatch.setattr(VaultClient, "login_kubernetes", spy)
    return seen


def agent_for(env: LocalEnvironment, settings: SnapshotSettings) -> SnapshotAgent:
    return snapshot_agent_for(env, settings)


def cluster_id(env: LocalEnvironment) -> str:
    return str(env.client().read_health()["cluster_id"])


def keys_under(aws: Aws, settings: SnapshotSettings, cid: str) -> list[str]:
    return sorted(
        o["key"] for o in aws.list_objects(settings.bucket, cluster_prefix(settings.prefix, cid))
    )


def gone(aws: Aws, bucket: str, key: str) -> bool:
    """No version and no delete marker of ``key`` is left (deleting finds nothing)."""
    return aws.delete_all_versions(bucket, key) == 0


@pytest.fixture
def run_thread() -> Iterator[list[tuple[threading.Thread, threading.Event]]]:
    """Threads started by a test; always stopped and joined."""
    started: list[tuple[threading.Thread, threading.Event]] = []
    yield started
    for thread, stop in started:
        stop.set()
        thread.join(timeout=30)


def start_loop(
    agent: SnapshotAgent, interval: float, started: list[tuple[threading.Thread, threading.Event]]
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=agent.run_forever, args=(stop, interval), daemon=True)
    started.append((thread, stop))
    thread.start()
    return thread, stop


# --- one snapshot ----------------------------------------------------------------------


def test_take_uploads_the_snapshot_with_verified_facts_as_metadata_and_sse_kms(
    env: LocalEnvironment, settings: SnapshotSettings
) -> None:
    root = env.client(token=env.root_token())
    for i in range(5):
        root.write_kv("secret", f"drill/snapshot/{i}", {"value": f"v{i}"})
    cid = cluster_id(env)

    record = agent_for(env, settings).take()

    assert record.key.startswith(f"snapshots/{cid}/") and record.key.endswith(".snap")
    admin = env.aws()
    stat = admin.stat_object(settings.bucket, record.key)
    body = admin.get_object(settings.bucket, record.key)
    meta = stat["metadata"]
    assert meta["sha256"] == hashlib.sha256(body).hexdigest() == record.sha256
    assert int(meta["size"]) == len(body) == stat["size"] == record.size
    assert meta["engine"] == "openbao"
    assert meta["engine-version"] == "2.6.2"
    assert int(meta["raft-index"]) == record.raft_index > 0
    assert int(meta["raft-term"]) == record.raft_term > 0
    assert meta["cluster-id"] == cid
    assert meta["cluster-name"] == env.state.cluster
    taken_at = dt.datetime.fromisoformat(meta["taken-at"])
    assert abs((dt.datetime.now(dt.UTC) - taken_at).total_seconds()) < 60
    assert record.key.endswith(f"/{format_stamp(taken_at)}.snap")
    assert stat["sse"] == "aws:kms"
    assert settings.kms_key_id and settings.kms_key_id in str(stat["sse_kms_key_id"])
    assert list(settings.work_dir.iterdir()) == [], "temporary files were left behind"


def test_what_take_uploads_verifies_and_is_listed_first(
    env: LocalEnvironment, settings: SnapshotSettings
) -> None:
    record = agent_for(env, settings).take()
    result = verify_snapshot(env.aws(), settings.bucket, record.key, settings.work_dir)
    assert result.ok, result.reason
    assert result.reason == "ok"
    assert (result.sha256, result.size, result.raft_index) == (
        record.sha256,
        record.size,
        record.raft_index,
    )
    assert result.path is None and list(settings.work_dir.iterdir()) == []
    listed = list_snapshots(
        env.aws("snapshot"), settings.bucket, settings.prefix, record.cluster_id
    )
    assert listed[0].key == record.key
    assert listed[0].sha256 == record.sha256
    assert listed == sorted(listed, key=lambda i: i.taken_at, reverse=True)
    everywhere = list_snapshots(env.aws("snapshot"), settings.bucket, settings.prefix)
    assert record.key in [i.key for i in everywhere]


def test_take_writes_the_status_file(env: LocalEnvironment, settings: SnapshotSettings) -> None:
    record = agent_for(env, settings).take()
    assert settings.status_file is not None
    status = read_status(settings.status_file)
    assert status["last_key"] == record.key
    assert status["last_sha256"] == record.sha256
    assert status["last_size"] == record.size
    assert status["last_error"] is None
    assert (status["runs"], status["failures"]) == (1, 0)
    line = describe_status(status, dt.datetime.now(dt.UTC))
    assert line.startswith("last snapshot ") and record.key in line
    assert line.endswith("last error: none")


@pytest.mark.parametrize("content", [b"", b"this is not gzip"], ids=["empty", "not-gzip"])
def test_take_refuses_to_upload_an_empty_or_non_gzip_snapshot(
    env: LocalEnvironment,
    isolated: SnapshotSettings,
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
) -> None:
    def fake_snapshot(self: VaultClient, destination: Path) -> int:
        destination.write_bytes(content)
        return len(content)

    monkeypatch.setattr(VaultClient, "take_raft_snapshot", fake_snapshot)
    with pytest.raises(SnapshotError, match="refusing to upload"):
        agent_for(env, isolated).take()
    assert keys_under(env.aws(), isolated, cluster_id(env)) == []
    assert list(isolated.work_dir.iterdir()) == []
    assert isolated.status_file is not None
    status = read_status(isolated.status_file)
    assert "refusing to upload" in status["last_error"]
    assert status["failures"] == 1


def test_an_upload_that_does_not_read_back_identically_is_deleted(
    env: LocalEnvironment, isolated: SnapshotSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = agent_for(env, isolated)
    stat = agent.aws.stat_object
    uploaded: list[str] = []

    def short_stat(bucket: str, key: str) -> dict[str, Any]:
        uploaded.append(key)
        answer = stat(bucket, key)
        return {**answer, "size": answer["size"] - 1}  # as if the object were cut short

    monkeypatch.setattr(agent.aws, "stat_object", short_stat)
    with pytest.raises(SnapshotError, match="did not verify"):
        agent.take()
    assert uploaded, "the upload was never checked"
    assert keys_under(env.aws(), isolated, cluster_id(env)) == []
    assert gone(env.aws(), isolated.bucket, uploaded[0])


# --- retention ---------------------------------------------------------------------------


def test_retention_keeps_only_the_newest_two_and_removes_every_version(
    env: LocalEnvironment, isolated: SnapshotSettings
) -> None:
    first = agent_for(env, isolated).take()
    short = dataclasses.replace(isolated, retain_last=2, retain_daily=0)
    agent = agent_for(env, short)
    records = [agent.take() for _ in range(3)]

    assert keys_under(env.aws(), isolated, first.cluster_id) == sorted(r.key for r in records[-2:])
    assert records[1].deleted == (first.key,)
    assert records[2].deleted == (records[0].key,)
    for deleted in (first.key, records[0].key):
        assert gone(env.aws(), isolated.bucket, deleted)


# --- verification of what is in the bucket -----------------------------------------------


def test_corrupt_truncated_and_unlabelled_objects_fail_verify_and_are_skipped(
    env: LocalEnvironment, isolated: SnapshotSettings
) -> None:
    good = agent_for(env, isolated).take()
    admin = env.aws()
    body = admin.get_object(isolated.bucket, good.key)
    metadata = admin.head_object(isolated.bucket, good.key)
    base = cluster_prefix(isolated.prefix, good.cluster_id)

    def newer(seconds: int) -> str:
        return f"{base}{format_stamp(good.taken_at + dt.timedelta(seconds=seconds))}.snap"

    garbage = os.urandom(len(body))
    not_gzip = b"plain text, not a snapshot"
    not_gzip_meta = {"sha256": hashlib.sha256(not_gzip).hexdigest(), "size": str(len(not_gzip))}
    bad = {
        newer(1): (garbage, metadata, "checksum mismatch"),
        newer(2): (body[: len(body) // 2], metadata, "truncated"),
        newer(3): (body, {}, "missing metadata"),
        newer(4): (not_gzip, not_gzip_meta, "not a snapshot"),
    }
    for key, (content, meta, _) in bad.items():
        admin.put_object(isolated.bucket, key, content, metadata=meta)

    for key, (_, _, reason) in bad.items():
        result = verify_snapshot(admin, isolated.bucket, key, isolated.work_dir)
        assert not result.ok
        assert result.reason.startswith(reason), result.reason

    found, skipped = latest_verified(
        env.aws("snapshot"), isolated.bucket, isolated.prefix, isolated.work_dir, keep=True
    )
    assert found is not None and found.key == good.key
    assert found.path is not None and found.path.read_bytes() == body
    assert [(s.key, s.reason.split(":")[0]) for s in skipped] == [
        (key, reason) for key, (_, _, reason) in sorted(bad.items(), reverse=True)
    ]
    found.path.unlink()
    assert list(isolated.work_dir.iterdir()) == []


# --- least privilege ------------------------------------------------------------------


def test_the_snapshot_principal_cannot_read_break_glass_material_in_ssm(
    env: LocalEnvironment,
) -> None:
    with pytest.raises(AccessDenied):
        env.aws("snapshot").get_secure_parameter(ssm_path(env.state.cluster, "root-token"))
    with pytest.raises(AccessDenied):
        env.aws("snapshot").put_secure_parameter(ssm_path(env.state.cluster, "x"), "y")


def test_the_agent_token_may_read_snapshots_and_nothing_else(
    env: LocalEnvironment, settings: SnapshotSettings
) -> None:
    env.client(token=env.root_token()).write_kv("secret", "drill/private", {"value": "hidden"})
    agent = agent_for(env, settings)
    client = agent.log_in(agent.find_active())
    settings.work_dir.mkdir(parents=True)
    try:
        assert sorted(client.lookup_self()["policies"]) == ["default", "vaultdr-snapshot"]
        with pytest.raises(VaultApiError, match="permission denied"):
            client.read_kv("secret", "drill/private")
        with pytest.raises(VaultApiError, match="permission denied"):
            client.list_keys("sys/policies/acl")
        assert client.take_raft_snapshot(settings.work_dir / "probe.snap") > 0
    finally:
        (settings.work_dir / "probe.snap").unlink(missing_ok=True)
        client.write("auth/token/revoke-self")


# --- the loop --------------------------------------------------------------------------


def test_run_forever_takes_snapshots_on_the_interval_and_stops_when_told(
    env: LocalEnvironment,
    isolated: SnapshotSettings,
    secrets: Secrets,
    caplog: pytest.LogCaptureFixture,
    run_thread: list[tuple[threading.Thread, threading.Event]],
) -> None:
    caplog.set_level(logging.DEBUG)
    assert isolated.status_file is not None
    status_file = isolated.status_file
    thread, stop = start_loop(agent_for(env, isolated), 1.0, run_thread)

    assert wait_for(lambda: read_status(status_file).get("runs", 0) >= 2, timeout=30)
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive()

    status = read_status(status_file)
    assert status["last_success"] and status["last_error"] is None
    assert status["failures"] == 0
    listed = list_snapshots(env.aws(), isolated.bucket, isolated.prefix)
    assert len(listed) >= 2 and listed[0].key == status["last_key"]
    assert "snapshot agent for" in caplog.text and "stopped" in caplog.text
    assert len(secrets.values) >= 4
    assert secrets.absent_from(caplog.text)
    assert secrets.absent_from(status_file.read_text())


def test_a_failing_run_is_recorded_and_the_loop_goes_on(
    env: LocalEnvironment,
    settings: SnapshotSettings,
    secrets: Secrets,
    caplog: pytest.LogCaptureFixture,
    run_thread: list[tuple[threading.Thread, threading.Event]],
) -> None:
    caplog.set_level(logging.DEBUG)
    broken = dataclasses.replace(settings, bucket="vaultdr-no-such-bucket")
    assert broken.status_file is not None
    status_file = broken.status_file
    thread, stop = start_loop(agent_for(env, broken), 0.5, run_thread)

    assert wait_for(lambda: read_status(status_file).get("failures", 0) >= 2, timeout=30)
    assert thread.is_alive(), "a failed run ended the loop"
    stop.set()
    thread.join(timeout=15)
    assert not thread.is_alive()

    status = read_status(status_file)
    assert status["last_success"] is None
    assert "PutObject" in status["last_error"] and "vaultdr-no-such-bucket" in status["last_error"]
    assert status["last_error_at"]
    assert status["runs"] == status["failures"] >= 2
    assert "snapshot of" in caplog.text and "failed" in caplog.text
    assert "last error" in describe_status(status, dt.datetime.now(dt.UTC))
    assert list(broken.work_dir.iterdir()) == []
    assert secrets.values and secrets.absent_from(caplog.text)
    assert secrets.absent_from(json.dumps(status))
