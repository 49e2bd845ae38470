"""The rollback journal is crash-proof: on disk before a fault acts, readable past damage,
and undone entry by entry, KMS access first, against a real AWS emulator (moto).

No stack is started: a small fault target drives the real emulator for KMS and S3 and
records (or fails) the node primitives. The killed corrupt-snapshot test runs ``inject``
in a child process that SIGKILLs itself right after the corrupt upload.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultdr import faults
from vaultdr.agents import snapshot as snap
from vaultdr.aws import Aws
from vaultdr.envs import common
from vaultdr.envs.local import awsemu
from vaultdr.envs.local.awsemu import AwsStack
from vaultdr.envs.local.processes import free_port, stop_pid
from vaultdr.errors import AccessDenied

REPO = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
BUCKET = "vaultdr-journal-snapshots"
PREFIX = "snapshots"
CLUSTER_ID = "9f1c2d3e-journal"
NODES = ["node-0", "node-1", "node-2"]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsStack]:
    base = tmp_path_factory.mktemp("moto")
    port = free_port()
    record = awsemu.start_moto(base, port=port, log=base / "moto.log")
    try:
        url = awsemu.endpoint_url(port)
        yield awsemu.bootstrap(url, REGION, cluster="journal", bucket=BUCKET)
    finally:
        stop_pid(record.pid, record.start_time, grace=5)


class EmulatorTarget:
    """A FaultTarget backed by the real emulator for KMS and S3; the node primitives
    record their calls, and fail where ``failures`` says so (once each)."""

    def __init__(self, state_dir: Path, stack: AwsStack, *, admin: Aws | None = None) -> None:
        self.state_dir = state_dir
        self.stack = stack
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.failures: dict[str, BaseException] = {}
        self.before: Callable[[str], None] | None = None
        self._admin = admin

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.before is not None:
            self.before(name)
        failure = self.failures.pop(name, None)
        if failure is not None:
            raise failure

    def undo_calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        undo = ("restore_kms", "thaw_node", "release_nodes")
        return [c for c in self.calls if c[0] in undo]

    def check_destructive(self, fault: str) -> None:
        return None

    def refusal(self, fault: str) -> str | None:
        return None

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        yield []

    def node_names(self) -> list[str]:
        return list(NODES)

    def leader(self) -> str | None:
        return NODES[0]

    def kill_node(self, node: str) -> None:
        self._call("kill_node", node)

    def kill_nodes(self, names: list[str]) -> None:
        self._call("kill_nodes", tuple(names))

    def force_delete_node(self, node: str) -> None:
        self._call("force_delete_node", node)

    def delete_volume(self, node: str) -> None:
        self._call("delete_volume", node)

    def delete_all_volumes(self) -> None:
        self._call("delete_all_volumes")

    def release_nodes(self, names: list[str]) -> None:
        self._call("release_nodes", tuple(names))

    def freeze_node(self, node: str) -> tuple[int, int]:
        self._call("freeze_node", node)
        return 4242, 1

    def thaw_node(self, node: str, pid: int | None = None, start_time: int | None = None) -> bool:
        self._call("thaw_node", node)
        return True

    def revoke_kms(self) -> None:
        self._call("revoke_kms")
        common.revoke_kms(self.stack.admin_aws(), self.stack.seal_user)

    def restore_kms(self) -> None:
        self._call("restore_kms")
        common.restore_kms(self.stack.admin_aws(), self.stack.seal_user)

    def aws(self, principal: str = "admin") -> Aws:
        if principal == "admin" and self._admin is not None:
            return self._admin
        return {
            "admin": self.stack.admin_aws,
            "seal": self.stack.seal_aws,
            "snapshot": self.stack.snapshot_aws,
        }[principal]()

    def snapshot_location(self) -> tuple[str, str]:
        return self.stack.bucket, PREFIX

    def cluster_id(self) -> str | None:
        return CLUSTER_ID


@pytest.fixture
def target(emulator: AwsStack, tmp_path: Path) -> Iterator[EmulatorTarget]:
    env = EmulatorTarget(tmp_path / "state", emulator)
    try:
        yield env
    finally:  # whatever a test left, the next one starts with KMS access
        common.restore_kms(emulator.admin_aws(), emulator.seal_user)


def seal_can_use_kms(stack: AwsStack) -> bool:
    """A real kms:Encrypt + kms:Decrypt as the seal principal."""
    seal = stack.seal_aws()
    try:
        return seal.decrypt(seal.encrypt(stack.kms_key_id, b"journal probe")) == b"journal probe"
    except AccessDenied:
        return False


def hand_entry(entry_id: str, fault: str, undo: list[dict[str, Any]]) -> faults.JournalEntry:
    """An entry as a crashed process leaves it: still acting."""
    return faults.JournalEntry(
        id=entry_id,
        fault=fault,
        args=[],
        started_at="2026-01-01T00:00:00.000+00:00",
        mono=0.0,
        status="acting",
        undo=undo,
    )


def by_id(target: EmulatorTarget) -> dict[str, faults.JournalEntry]:
    return {e.id: e for e in faults.RollbackJournal(target.state_dir).entries()}


# -- durable before acting --------------------------------------------------------------


def test_a_journal_entry_is_on_disk_before_the_faults_action_runs(
    target: EmulatorTarget,
) -> None:
    seen: dict[str, list[faults.JournalEntry]] = {}
    raw: dict[str, dict[str, Any]] = {}

    def read_journal(action: str) -> None:
        # A fresh journal object reads only what is on disk.
        seen[action] = faults.RollbackJournal(target.state_dir).entries()
        raw[action] = json.loads((target.state_dir / faults.JOURNAL_FILE).read_text())

    target.before = read_journal
    revoked = faults.inject(target, "revoke-kms")
    frozen = faults.inject(target, "freeze-node", ["node-1"])

    [at_revoke] = seen["revoke_kms"]
    assert (at_revoke.id, at_revoke.status) == (revoked.id, "acting")
    assert at_revoke.undo == [{"kind": "restore-kms"}]
    at_freeze = seen["freeze_node"][-1]
    assert (at_freeze.id, at_freeze.status) == (frozen.id, "acting")
    assert at_freeze.undo == [{"kind": "thaw-node", "node": "node-1"}]  # by node, before SIGSTOP
    # The journal stays in the format older vaultdr reads: {"entries": [JournalEntry...]}.
    old_reader = [faults.JournalEntry(**item) for item in raw["freeze_node"]["entries"]]
    assert [e.id for e in old_reader] == [revoked.id, frozen.id]
    # ... and every change is also in the append-only log beside it.
    log = (target.state_dir / faults.JOURNAL_LOG_FILE).read_text().splitlines()
    assert {json.loads(line)["entry"]["id"] for line in log} == {revoked.id, frozen.id}
    assert not list(target.state_dir.glob("*.tmp"))

    after = by_id(target)
    assert after[frozen.id].undo[0]["pid"] == 4242
    assert after[revoked.id].status == "injected" and after[revoked.id].in_force
    assert not seal_can_use_kms(target.stack)
    faults.rollback(target)
    assert seal_can_use_kms(target.stack)


def test_the_corrupt_snapshots_undo_is_on_disk_before_the_corrupt_upload(
    emulator: AwsStack, tmp_path: Path
) -> None:
    key, _good, _version = upload_snapshot(emulator.admin_aws(), b"good bytes " * 500)
    seen: list[dict[str, Any]] = []
    state_dir = tmp_path / "state"

    class ReadJournalBeforeUpload(Aws):
        def put_object(self, *args: Any, **kwargs: Any) -> str | None:
            [entry] = faults.RollbackJournal(state_dir).entries()
            seen.extend(entry.undo)
            return super().put_object(*args, **kwargs)

    admin = ReadJournalBeforeUpload(emulator.target(emulator.admin))
    target = EmulatorTarget(state_dir, emulator, admin=admin)
    entry = faults.inject(target, "corrupt-latest-snapshot")
    [step] = seen
    assert step["kind"] == "delete-object-version" and step["key"] == key
    assert step["version"] is None and len(step["corrupt_md5"]) == 32
    assert by_id(target)[entry.id].undo[0]["version"] == entry.detail["version"]
    faults.rollback(target)
    assert emulator.admin_aws().stat_object(BUCKET, key)["version_id"] == step["good_version"]


# -- each entry undone on its own, KMS first ---------------------------------------------


def test_a_rollback_whose_first_undo_raises_still_restores_kms_access(
    target: EmulatorTarget,
) -> None:
    assert seal_can_use_kms(target.stack)
    revoked = faults.inject(target, "revoke-kms")
    frozen = faults.inject(target, "freeze-node", ["node-2"])  # journaled newer
    assert not seal_can_use_kms(target.stack)  # AccessDenied: the deny is real
    target.failures["thaw_node"] = RuntimeError("SIGCONT went nowhere")

    with pytest.raises(faults.FaultError) as failed:
        faults.rollback(target)

    assert seal_can_use_kms(target.stack)
    message = str(failed.value)
    assert f"freeze-node (id {frozen.id})" in message
    assert "RuntimeError: SIGCONT went nowhere" in message
    assert str(faults.RollbackJournal(target.state_dir).path) in message
    assert failed.value.exit_code == 6
    assert {r.entry_id: r.error is None for r in failed.value.results} == {
        revoked.id: True,
        frozen.id: False,
    }
    after = by_id(target)
    assert after[revoked.id].status == "undone"
    assert after[frozen.id].status == "undo-failed" and after[frozen.id].in_force

    again = faults.rollback(target)  # the thaw works now
    assert [(r.entry_id, r.steps) for r in again] == [(frozen.id, ["thawed node-2"])]
    assert not by_id(target)[frozen.id].in_force
    assert "undo_error" not in by_id(target)[frozen.id].detail
    assert faults.rollback(target) == []


def test_an_undo_that_raises_any_exception_fails_only_its_own_entry(
    target: EmulatorTarget,
) -> None:
    older = faults.inject(target, "revoke-kms")
    newer = faults.inject(target, "revoke-kms")
    journal = faults.RollbackJournal(target.state_dir)
    journal.add(hand_entry("malformed0001", "delete-volume", [{"kind": "release-nodes"}]))
    target.failures["restore_kms"] = OSError(5, "Input/output error")  # the very first undo

    with pytest.raises(faults.FaultError) as failed:
        faults.rollback(target)

    assert seal_can_use_kms(target.stack)  # the older entry's restore ran all the same
    message = str(failed.value)
    assert f"revoke-kms (id {newer.id}): restore-kms failed: OSError:" in message
    assert "delete-volume (id malformed0001): release-nodes failed: KeyError: 'nodes'" in message
    after = by_id(target)
    assert after[older.id].status == "undone"
    assert after[newer.id].status == "undo-failed"
    assert after["malformed0001"].status == "undo-failed"
    assert target.undo_calls() == [("restore_kms", ()), ("restore_kms", ())]


def test_undo_order_puts_kms_access_first_then_thaw_then_release(
    target: EmulatorTarget,
) -> None:
    faults.inject(target, "freeze-node", ["node-1"])
    faults.inject(target, "freeze-node", ["node-2"])
    journal = faults.RollbackJournal(target.state_dir)
    journal.add(
        hand_entry(
            "crashed00001", "delete-volume", [{"kind": "release-nodes", "nodes": ["node-0"]}]
        )
    )
    faults.inject(target, "revoke-kms")
    target.calls.clear()

    results = faults.rollback(target)

    assert target.undo_calls() == [
        ("restore_kms", ()),
        ("thaw_node", ("node-2",)),  # within a kind, newest first
        ("thaw_node", ("node-1",)),
        ("release_nodes", (("node-0",),)),
    ]
    assert [r.fault for r in results] == [
        "revoke-kms",
        "freeze-node",
        "freeze-node",
        "delete-volume",
    ]
    assert seal_can_use_kms(target.stack)


# -- a damaged journal -------------------------------------------------------------------


def _append_garbage(state_dir: Path, ids: dict[str, str]) -> None:
    path = state_dir / faults.JOURNAL_FILE
    path.write_bytes(path.read_bytes() + b"\x00\xff\xfe garbage {")


def _overwrite_the_middle(state_dir: Path, ids: dict[str, str]) -> None:
    path = state_dir / faults.JOURNAL_FILE
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 40] = b"\xde\xad\xbe\xef" * 10
    path.write_bytes(bytes(data))


def _tear_the_logs_tail(state_dir: Path, ids: dict[str, str]) -> None:
    path = state_dir / faults.JOURNAL_LOG_FILE
    path.write_bytes(path.read_bytes() + b'{"seq": 99, "entry": {"id": "torn')


def _destroy_the_frozen_entry_everywhere(state_dir: Path, ids: dict[str, str]) -> None:
    _overwrite_the_middle(state_dir, ids)
    log = state_dir / faults.JOURNAL_LOG_FILE
    lines = log.read_bytes().split(b"\n")
    log.write_bytes(
        b"\n".join(
            b"\x00\xffnot json" if ids["frozen"].encode() in line else line for line in lines
        )
    )


DAMAGE = {
    "garbage appended to the journal": _append_garbage,
    "garbage over part of the journal": _overwrite_the_middle,
    "a torn last line in the log": _tear_the_logs_tail,
    "an entry lost from both files": _destroy_the_frozen_entry_everywhere,
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_garbage_bytes_in_the_journal_are_reported_and_skipped_and_the_rest_is_undone(
    target: EmulatorTarget, damage: str
) -> None:
    frozen = faults.inject(target, "freeze-node", ["node-1"])
    revoked = faults.inject(target, "revoke-kms")
    assert not seal_can_use_kms(target.stack)
    DAMAGE[damage](target.state_dir, {"frozen": frozen.id, "revoked": revoked.id})
    journal = faults.RollbackJournal(target.state_dir)
    assert journal.problems()  # reported before anything is done
    assert revoked.id in {e.id for e in journal.in_force()}

    with pytest.raises(faults.FaultError) as failed:
        faults.rollback(target)

    assert seal_can_use_kms(target.stack)
    assert "unreadable journal record, skipped" in str(failed.value)
    assert str(journal.path) in str(failed.value)
    outcome = {r.entry_id: r.error for r in failed.value.results}
    assert outcome[revoked.id] is None
    lost = damage == "an entry lost from both files"
    assert (("thaw_node", ("node-1",)) in target.calls) is not lost
    # The next write kept copies of the damaged files and rewrote them whole.
    assert list(target.state_dir.glob("rollback-journal.json*.damaged-*"))
    assert str(target.state_dir) in failed.value.hint
    assert journal.problems() == []
    json.loads(journal.path.read_text())  # readable as a whole again
    assert faults.rollback(target) == []


def test_a_malformed_entry_in_an_old_journal_is_reported_and_skipped(
    target: EmulatorTarget,
) -> None:
    """A journal older vaultdr wrote (no log beside it) with one entry that is not one."""
    target.state_dir.mkdir(parents=True)
    target.revoke_kms()
    assert not seal_can_use_kms(target.stack)
    good = hand_entry("revoked00001", "revoke-kms", [{"kind": "restore-kms"}])
    bad = {**hand_entry("broken000001", "freeze-node", []).to_dict(), "undo": "thaw please"}
    (target.state_dir / faults.JOURNAL_FILE).write_text(
        json.dumps({"entries": [bad, good.to_dict()]})
    )

    with pytest.raises(faults.FaultError) as failed:
        faults.rollback(target)

    assert seal_can_use_kms(target.stack)
    assert "freeze-node (id broken000001): unreadable journal record" in str(failed.value)
    assert "undo must be a list" in str(failed.value)
    assert by_id(target)["revoked00001"].status == "undone"


# -- corrupt-latest-snapshot, killed mid-way ---------------------------------------------


def upload_snapshot(
    aws: Aws, body: bytes, *, taken_at: dt.datetime | None = None, key: str | None = None
) -> tuple[str, bytes, str]:
    """A snapshot-like object where ``list_snapshots`` finds it, with the agent's metadata;
    (key, body, version id)."""
    taken_at = taken_at or dt.datetime.now(dt.UTC)
    key = key or snap.snapshot_key(PREFIX, CLUSTER_ID, taken_at)
    metadata = {
        "sha256": hashlib.sha256(body).hexdigest(),
        "size": str(len(body)),
        "engine": "openbao",
        "engine-version": "2.2.0",
        "raft-index": "42",
        "raft-term": "3",
        "cluster-id": CLUSTER_ID,
        "cluster-name": "journal",
        "taken-at": taken_at.isoformat(),
    }
    version = aws.put_object(BUCKET, key, body, metadata=metadata)
    assert version
    return key, body, version


def versions_of(aws: Aws, key: str) -> list[str]:
    return [v["version_id"] for v in aws.list_object_versions(BUCKET, key)]


class KilledAfterUpload(Aws):
    """The admin's Aws in the child: SIGKILLs the process as soon as the upload answered."""

    def put_object(self, *args: Any, **kwargs: Any) -> str | None:
        version = super().put_object(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        return version


def corrupt_and_die(config: dict[str, Any]) -> None:
    """Run in a child process: inject corrupt-latest-snapshot and die mid-way."""
    stack = AwsStack.from_dict(config["stack"])
    admin = KilledAfterUpload(stack.target(stack.admin))
    faults.inject(
        EmulatorTarget(Path(config["state_dir"]), stack, admin=admin), "corrupt-latest-snapshot"
    )
    raise AssertionError("the child outlived its upload")


def test_a_corrupt_latest_snapshot_killed_after_its_upload_is_undone(
    target: EmulatorTarget,
) -> None:
    admin = target.stack.admin_aws()
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)  # newer than other tests' snapshots
    older_key, _, older_version = upload_snapshot(admin, os.urandom(2048), taken_at=start)
    newest = start + dt.timedelta(minutes=5)
    key, _, first_version = upload_snapshot(admin, b"an earlier copy " * 100, taken_at=newest)
    key, good, good_version = upload_snapshot(admin, os.urandom(8192), taken_at=newest, key=key)
    other = f"{PREFIX}/notes/readme.txt"
    admin.put_object(BUCKET, other, b"v1")
    admin.put_object(BUCKET, other, b"v2")
    other_versions = versions_of(admin, other)

    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys\n"
            "from tests.test_rollback_journal import corrupt_and_die\n"
            "corrupt_and_die(json.load(sys.stdin))\n",
        ],
        input=json.dumps({"stack": target.stack.to_dict(), "state_dir": str(target.state_dir)}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]

    # Killed between the upload and the journal update: the undo knows no version yet.
    [entry] = faults.RollbackJournal(target.state_dir).in_force()
    [step] = entry.undo
    assert (step["key"], step["version"], step["good_version"]) == (key, None, good_version)
    corrupt = admin.get_object(BUCKET, key)
    assert corrupt != good and len(corrupt) == len(good)
    assert hashlib.md5(corrupt, usedforsecurity=False).hexdigest() == step["corrupt_md5"]
    assert len(versions_of(admin, key)) == 3

    [result] = faults.rollback(target)

    assert result.steps == [f"removed the corrupt version of {key} (found by its checksum)"]
    assert hashlib.sha256(admin.get_object(BUCKET, key)).digest() == hashlib.sha256(good).digest()
    assert versions_of(admin, key) == [good_version, first_version]
    assert versions_of(admin, older_key) == [older_version]
    assert versions_of(admin, other) == other_versions
    assert admin.get_object(BUCKET, other) == b"v2"
    assert not faults.RollbackJournal(target.state_dir).in_force()
    assert faults.rollback(target) == []
