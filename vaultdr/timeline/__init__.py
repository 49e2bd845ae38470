"""The recovery timeline: every fault and every observed state change, on one clock.

A poller asks every node, at a fixed interval (100 ms by default), for its seal
status and whether it is the leader, reads a secret through the cluster and,
if asked, logs in with kubernetes auth. It records only *changes*, each with
the monotonic time at which the poll that saw it started, so a change is
recorded at most one interval plus one request after it happened. Faults are
marked by the code that injects them (``mark("fault:kill-leader")``), and
events from the environment (the local supervisor's restore watcher) are merged
in, so recovery times are read off the timeline, never from sleeps.

The first poll records the initial state with the same kinds (``node-unsealed``,
``leader-elected``, ``read-ok``...), flagged ``initial: true`` in ``detail``.

Recovery phases after a fault (seconds after it; None when never reached):

- ``detected``: the first degraded observation (node unreachable, sealed or
  uninitialized, leader lost, read or login failed);
- ``leader``: the first leader elected;
- ``unsealed``: every node unsealed again (after the last node went bad);
- ``restored``: the auto-restore finished;
- ``serving``: reads work again (0.0 if they never stopped);
- ``auth_ready``: a kubernetes login + read works again (0.0 if it never stopped);
- ``writing``: the write ledger's writes are acknowledged again (when a ledger
  feeds the timeline; 0.0 if they never stopped);
- ``healthy``: every node unsealed, a leader, reads working.

Each of ``serving``, ``auth_ready`` and ``writing`` means back *and staying
back*: it is the first success after the last failure, so a read that works,
fails again (a flap: the restore's reseal drops reads for ~0.6 s) and then
stays up is back only at the end of the flap. Every flap is recorded in
``Recovery.flaps`` and its failing event carries ``detail.flap``.
:meth:`Timeline.wait_recovered` concludes only once each of them has stayed up
for ``stable_for`` seconds (``objectives.stable_for`` in stack.yaml).

The RTO is the later of ``serving``, ``auth_ready`` and ``writing``: the time
until apps can authenticate, read and write again, and keep doing so, which is
what an outage means to them. Full redundancy (``healthy``) is reported beside
it.
"""

from __future__ import annotations

from vaultdr.timeline.events import (
    APP_CHECKS,
    DEGRADED,
    PHASES,
    STABLE_FOR,
    Event,
    LoginCheck,
    Recovery,
    Source,
)
from vaultdr.timeline.poller import Timeline
from vaultdr.timeline.sources import (
    environment_events_source,
    events_file_source,
    local_events_source,
    write_events_source,
)

__all__ = [
    "APP_CHECKS",
    "DEGRADED",
    "PHASES",
    "STABLE_FOR",
    "Event",
    "LoginCheck",
    "Recovery",
    "Source",
    "Timeline",
    "environment_events_source",
    "events_file_source",
    "local_events_source",
    "write_events_source",
]
