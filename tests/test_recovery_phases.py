"""RTO as users feel it: back *and staying back*. A flap after the first good read is part
of the outage, writes count as well as reads and logins, and a wait for recovery concludes
only once the service has stayed up for ``objectives.stable_for``.

The phase arithmetic is checked on recorded event sequences (the timeline's own Event
records, as its poller writes them); the writes phase is then measured on a real stack.
"""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from vaultdr import faults
from vaultdr.config import parse_stack
from vaultdr.envs.base import Environment
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.errors import ConfigError
from vaultdr.ledger import WriteLedger
from vaultdr.polling import wait_for
from vaultdr.timeline import Event, Timeline, write_events_source


def recorded(*events: tuple[float, str]) -> Timeline:
    """A timeline holding these (seconds, kind) events, a fault at 10 s, a read before it."""
    timeline = Timeline(cast(Environment, None), "unused", read_path=("secret", "x"))
    for at, kind in ((1.0, "read-ok"), (1.0, "login-ok"), (10.0, "fault:restart-all"), *events):
        timeline._append(Event(at, "-", kind))
    return timeline


def test_a_read_that_fails_again_after_coming_back_is_back_only_after_the_flap() -> None:
    timeline = recorded(
        (10.2, "read-failed"), (18.2, "read-ok"), (19.1, "read-failed"), (19.7, "read-ok")
    )
    recovery = timeline.measure(require=("serving",))
    assert recovery.serving == pytest.approx(9.7)  # not 8.2: the flap is part of the outage
    assert recovery.rto == pytest.approx(9.7)
    assert recovery.flaps == [
        {"check": "read", "failed_at": pytest.approx(9.1), "back_at": pytest.approx(9.7),
         "seconds": pytest.approx(0.6)}
    ]  # fmt: skip


def test_a_read_that_never_stopped_has_no_outage_and_no_flap() -> None:
    recovery = recorded().measure(require=("serving",))
    assert recovery.serving == 0.0
    assert recovery.flaps == []


def test_the_rto_is_the_latest_of_reads_logins_and_writes() -> None:
    timeline = recorded(
        (10.1, "read-failed"), (12.0, "read-ok"), (10.1, "login-failed"), (14.0, "login-ok")
    )
    timeline._writes = True
    for at, kind in ((1.0, "write-ok"), (10.1, "write-failed"), (15.5, "write-ok")):
        timeline._append(Event(at, "-", kind))
    recovery = timeline.measure()
    assert "writing" in recovery.required
    assert (recovery.serving, recovery.auth_ready, recovery.writing) == pytest.approx(
        (2.0, 4.0, 5.5)
    )
    assert recovery.rto == pytest.approx(5.5)


class Ledgerish:
    """The two things write_events_source reads from a ledger, fed by the test."""

    def __init__(self) -> None:
        self.acked: list[Any] = []
        self.failed: list[Any] = []

    def outcomes_since(self, acked: int, failed: int) -> tuple[list[Any], list[Any]]:
        return self.acked[acked:], self.failed[failed:]


class Outcome:
    def __init__(self, mono: float) -> None:
        self.mono, self.wall = mono, "-"


def test_write_outcomes_become_changes_only() -> None:
    ledger = Ledgerish()
    source = write_events_source(cast(WriteLedger, ledger))
    ledger.acked += [Outcome(1.0), Outcome(1.1)]
    ledger.failed += [Outcome(1.2), Outcome(1.3)]
    assert [(e.mono, e.kind) for e in source()] == [(1.0, "write-ok"), (1.2, "write-failed")]
    ledger.acked += [Outcome(1.4), Outcome(1.5)]
    assert [(e.mono, e.kind) for e in source()] == [(1.4, "write-ok")]
    assert source() == []


def test_stable_for_defaults_to_three_seconds_and_is_refused_when_absurd() -> None:
    assert parse_stack({}).objectives.stable_for == 3.0
    assert parse_stack({"objectives": {"stable_for": "500ms"}}).objectives.stable_for == 0.5
    with pytest.raises(ConfigError, match=r"objectives\.stable_for"):
        parse_stack({"objectives": {"stable_for": "2h"}})


@pytest.mark.stack
def test_writes_back_after_a_leader_loss_are_a_phase_of_the_rto(
    awskms_stack: LocalEnvironment,
) -> None:
    env = awskms_stack
    assert wait_for(lambda: env.status().healthy, timeout=90)
    token = env.root_token()
    env.client(token=token).write_kv("secret", "apps/web/config", {"db": "web-db"})
    timeline = Timeline(env, token, interval=0.1, read_path=("secret", "apps/web/config"))
    ledger = WriteLedger(env, token, rate=20.0)
    timeline.add_write_source(write_events_source(ledger))
    timeline.start()
    ledger.start()
    try:
        assert ledger.wait_acknowledged(10)
        assert wait_for(lambda: any(e.kind == "write-ok" for e in timeline.events), timeout=10)
        faults.inject(env, "kill-leader", mark=lambda kind, detail: timeline.mark(kind, **detail))
        started = time.monotonic()
        recovery = timeline.wait_recovered(90, stable_for=2.0)
        waited = time.monotonic() - started
    finally:
        ledger.stop()
        timeline.stop()
    assert recovery.recovered, recovery
    assert "writing" in recovery.required
    assert recovery.writing is not None and recovery.writing > 0.0  # writes did stop
    assert recovery.rto is not None and recovery.rto >= recovery.writing
    assert waited >= recovery.rto + 2.0 - 0.5  # it waited for the window after the last phase
    flagged = [e for e in timeline.events if e.detail.get("flap")]
    assert len(flagged) == len(recovery.flaps)  # every flap is on the timeline too
    assert wait_for(lambda: env.status().healthy, timeout=90)
