"""The write ledger and the recovery timeline on a real stack (left healthy afterwards)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from pathlib import Path

import pytest

from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.ledger import WriteLedger
from vaultdr.polling import wait_for
from vaultdr.timeline import LoginCheck, Timeline

pytestmark = pytest.mark.stack


def written_ledger(env: LocalEnvironment, count: int) -> WriteLedger:
    ledger = WriteLedger(env, env.root_token(), rate=20.0, keys=4)
    ledger.start()
    try:
        assert wait_for(lambda: len(ledger.acked) >= count, timeout=60)
    finally:
        ledger.stop()
    return ledger


def destroy(env: LocalEnvironment, key: str, version: int) -> None:
    env.client(token=env.root_token()).write(f"secret/destroy/{key}", {"versions": [version]})


def test_every_acknowledged_write_reads_back(awskms_stack: LocalEnvironment) -> None:
    ledger = written_ledger(awskms_stack, 12)
    report = ledger.verify()
    assert report.ok
    assert report.verified == report.acknowledged >= 12
    assert report.lost == []


def test_a_lost_acknowledged_write_is_named_with_key_version_and_time(
    awskms_stack: LocalEnvironment,
) -> None:
    ledger = written_ledger(awskms_stack, 10)
    victim = ledger.acked[5]
    destroy(awskms_stack, victim.key, victim.version)
    report = ledger.verify()
    assert not report.ok
    assert report.lost == [
        {"seq": victim.seq, "key": victim.key, "version": victim.version, "wall": victim.wall}
    ]
    assert report.verified == report.acknowledged - 1
    text = json.dumps(report.to_dict())
    assert "nonce" not in text and awskms_stack.root_token() not in text


def test_writes_after_the_restored_snapshot_are_the_rpo_not_failures(
    awskms_stack: LocalEnvironment,
) -> None:
    ledger = written_ledger(awskms_stack, 12)
    cut = ledger.acked[7]
    snapshot_at = dt.datetime.fromisoformat(cut.wall) + dt.timedelta(microseconds=500)
    after = [a for a in ledger.acked if dt.datetime.fromisoformat(a.wall) > snapshot_at]
    for ack in after:  # what a restore from a snapshot taken at `snapshot_at` would lose
        destroy(awskms_stack, ack.key, ack.version)
    report = ledger.verify(snapshot_taken_at=snapshot_at)
    assert report.ok
    assert report.rpo_writes == len(after) > 0
    assert [x["seq"] for x in report.expected_losses] == [a.seq for a in after]
    assert report.rpo_seconds > 0


def test_timeline_sees_a_frozen_node_without_stalling(
    awskms_stack: LocalEnvironment, tmp_path: Path
) -> None:
    env = awskms_stack
    token = env.root_token()
    env.client(token=token).write_kv("secret", "apps/web/config", {"db": "web-db"})
    timeline = Timeline(
        env,
        token,
        interval=0.1,
        login=LoginCheck("apps", "web", "web", mount="secret", path="apps/web/config"),
        read_path=("secret", "apps/web/config"),
        request_timeout=0.5,
    )
    leader = env.leader()
    follower = next(n for n in env.node_names() if n != leader)
    timeline.start()
    try:
        assert wait_for(lambda: any(e.kind == "healthy" for e in timeline.events), timeout=30)
        fault = timeline.mark("fault:freeze-node", node=follower)
        pid, _start = env.freeze_node(follower)
        try:
            assert wait_for(
                lambda: any(
                    e.kind == "node-unreachable" and e.node == follower and e.mono >= fault.mono
                    for e in timeline.events
                ),
                timeout=30,
            )
            ticks = timeline.to_dict()["ticks"]
            time.sleep(2.0)
            # 0.5 s request timeouts against the frozen node: ticks keep coming.
            assert timeline.to_dict()["ticks"] >= ticks + 2
        finally:
            os.kill(pid, signal.SIGCONT)
        recovery = timeline.wait_recovered(60, require=("unsealed", "healthy"))
    finally:
        timeline.stop()
    assert recovery.recovered, recovery
    assert recovery.detected is not None and recovery.unsealed is not None
    assert recovery.detected <= recovery.unsealed
    assert recovery.serving == 0.0 and not recovery.interrupted  # reads never stopped
    saved = tmp_path / "timeline.json"
    timeline.save(saved)
    text = saved.read_text()
    assert token not in text and "web-db" not in text
    assert wait_for(lambda: env.status().healthy, timeout=60)
