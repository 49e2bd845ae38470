"""Events a timeline merges in from elsewhere: the write ledger, the environment's own log.

A source is a function the poller calls every tick; it returns the events that happened
since its last call (each stamped with the monotonic time it happened at).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from vaultdr.envs.base import Environment
from vaultdr.ledger import WriteLedger
from vaultdr.timeline.events import Event, Source


def write_events_source(ledger: WriteLedger) -> Source:
    """``write-ok`` / ``write-failed`` whenever the ledger's writes change between being
    acknowledged and failing, stamped with the write's own start (for ``writing``)."""
    seen = [0, 0]
    state: list[str | None] = [None]

    def read() -> list[Event]:
        acked, failed = ledger.outcomes_since(seen[0], seen[1])
        seen[0] += len(acked)
        seen[1] += len(failed)
        outcomes = sorted(
            [(a.mono, a.wall, "write-ok") for a in acked]
            + [(f.mono, f.wall, "write-failed") for f in failed]
        )
        found: list[Event] = []
        for mono, wall, kind in outcomes:
            if kind != state[0]:
                state[0] = kind
                found.append(Event(mono, wall, kind, None, {}))
        return found

    return read


def environment_events_source(env: Environment) -> Source | None:
    """The events ``env``'s supervisor and agents record from now on
    (:meth:`~vaultdr.envs.base.Environment.events_file`), or None where it records none."""
    path = env.events_file()
    return None if path is None else events_file_source(path)


def local_events_source(state_dir: Path) -> Source:
    """Events the local supervisor and its agents append to ``events.jsonl`` from now on."""
    return events_file_source(state_dir / "events.jsonl")


def events_file_source(path: Path) -> Source:
    """Node and restore events appended to the JSON-lines file ``path`` from now on."""
    offset = path.stat().st_size if path.exists() else 0
    kinds = {
        "node-started": "node-started",
        "node-exited": "node-exited",
        "restore-started": "restore-started",
        "restore-finished": "restore-finished",
    }

    def read() -> list[Event]:
        nonlocal offset
        if not path.exists():
            return []
        with open(path) as stream:
            stream.seek(offset)
            chunk = stream.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        offset += len(complete.encode())
        found: list[Event] = []
        for line in complete.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            kind = kinds.get(str(record.get("event")))
            if kind is None or "mono" not in record:
                continue
            wall = dt.datetime.fromtimestamp(float(record.get("t", time.time())), dt.UTC)
            detail = {
                k: v for k, v in record.items() if k in ("snapshot", "seconds", "pid", "code")
            }
            found.append(
                Event(
                    float(record["mono"]),
                    wall.isoformat(timespec="milliseconds"),
                    kind,
                    record.get("node"),
                    detail,
                )
            )
        return found

    return read
