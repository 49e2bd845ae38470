"""One drill session: one drill's instruments against one environment, for every front end.

The Gherkin steps (:mod:`vaultdr.drill.scenario`), the Chaos Toolkit activities
(:mod:`vaultdr.chaos.session`) and ``vaultdr upgrade-check`` all play a drill
the same way, through a :class:`DrillSession`:

1. :meth:`~DrillSession.start_timeline` polls every node, reads the app secret and
   (optionally) logs in with kubernetes auth, merging the local supervisor's events;
   :meth:`~DrillSession.start_ledger` writes at a steady rate and feeds its writes to
   the timeline, so ``writing`` is a recovery phase and part of the RTO;
2. :meth:`~DrillSession.inject` breaks the stack through the fault catalogue
   (journaled for rollback) and marks the fault on the timeline;
3. :meth:`~DrillSession.wait_recovered` waits until the required phases are back and
   have stayed back for ``objectives.stable_for`` (``writing`` is required with
   ``serving`` whenever a ledger runs);
4. :meth:`~DrillSession.verify_ledger` reads every acknowledged write back; after a
   restore the restored snapshot's time (from the environment's restore record,
   :meth:`~DrillSession.read_restore`) is the RPO base;
5. :meth:`~DrillSession.measurements` and :meth:`~DrillSession.timeline_for_evidence`
   are what the scenario's evidence records; when it failed,
   :meth:`~DrillSession.collect_diagnostics` keeps the stack's logs, events and status
   beside it (before :meth:`~DrillSession.close` rolls the faults back).

Hazards: the root token is read from the environment (SSM) once and kept in memory
only: never written, logged or put in a repr. :meth:`~DrillSession.close` rolls back
every fault still in force, so a session must be closed even when the drill fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from pathlib import Path
from typing import Any

from vaultdr import checks, faults
from vaultdr.agents.snapshot import parse_key_time
from vaultdr.config import Stack
from vaultdr.envs.diagnostics import redact
from vaultdr.envs.factory import AnyEnvironment
from vaultdr.errors import VaultdrError
from vaultdr.evidence.models import DiagnosticsRecord, Measurements, TimelineEvent
from vaultdr.evidence.record import measurements_from, now_iso
from vaultdr.ledger import LedgerReport, WriteLedger
from vaultdr.polling import wait_for
from vaultdr.timeline import (
    STABLE_FOR,
    LoginCheck,
    Recovery,
    Timeline,
    environment_events_source,
    write_events_source,
)

__all__ = [
    "APP_LOGIN",
    "APP_SECRET",
    "RECOVERY_TIMEOUT",
    "DrillSession",
]

#: The app secret the timeline reads (mount, path) and the app login it tries.
APP_SECRET = ("secret", "apps/web/config")
APP_LOGIN = LoginCheck("apps", "web", "web", mount="secret", path="apps/web/config")
#: How long a drill waits for a recovery unless told otherwise.
RECOVERY_TIMEOUT = 180.0
#: How long a drill waits for every node to be a voter again.
HEALTHY_TIMEOUT = 120.0


class DrillSession:
    """The instruments and the record of one drill against one environment."""

    def __init__(
        self,
        env: AnyEnvironment,
        *,
        stack: Stack | None = None,
        token: str | None = None,
        started_at: str | None = None,
    ) -> None:
        self.env = env
        self.started_at = started_at or now_iso()
        self.timeline: Timeline | None = None
        self.ledger: WriteLedger | None = None
        self.ledger_report: LedgerReport | None = None
        self.recovery: Recovery | None = None
        self.restore: dict[str, Any] | None = None
        self.injected: list[faults.JournalEntry] = []
        self._stack = stack
        self._token = token

    def __repr__(self) -> str:  # nothing secret in here (the token never is)
        return f"{type(self).__name__}({self.env.name}, started {self.started_at})"

    @property
    def token(self) -> str:
        """The break-glass root token from SSM: kept in memory, never written anywhere."""
        if self._token is None:
            self._token = self.env.root_token()
        return self._token

    def stable_for(self) -> float:
        """How long reads, logins and writes must stay back: stack.yaml's
        ``objectives.stable_for`` (the timeline's default when there is no stack file)."""
        if self._stack is None:
            try:
                self._stack = self.env.stack_config()
            except VaultdrError:
                return STABLE_FOR
        return float(self._stack.objectives.stable_for)

    # --- instruments ------------------------------------------------------------------------
    def start_timeline(
        self,
        *,
        interval: float = 0.1,
        login: LoginCheck | None = APP_LOGIN,
        read_path: tuple[str, str] | None = APP_SECRET,
    ) -> Timeline:
        """Start the recovery timeline (once): node polls, the read and login checks, the
        local supervisor's events and, when a ledger runs, its writes."""
        if self.timeline is None:
            self.timeline = Timeline(
                self.env, self.token, interval=interval, login=login, read_path=read_path
            )
            events = environment_events_source(self.env)  # local: the supervisor's file
            if events is not None:
                self.timeline.add_source(events)
            if self.ledger is not None:
                self.timeline.add_write_source(write_events_source(self.ledger))
            self.timeline.start()
        return self.timeline

    def start_ledger(self, *, rate: float = 10.0, warm_up: bool = True) -> WriteLedger:
        """Start the write ledger (once), feeding the timeline; with ``warm_up``, wait for a
        second's worth of acknowledged writes, so some exist before the fault."""
        if self.ledger is None:
            self.ledger = WriteLedger(self.env, self.token, rate=rate)
            if self.timeline is not None:  # writes back is part of the RTO
                self.timeline.add_write_source(write_events_source(self.ledger))
            self.ledger.start()
        if warm_up and not self.ledger.wait_acknowledged(max(1, int(self.ledger.rate))):
            raise VaultdrError("the write ledger had no write acknowledged within 30 s")
        return self.ledger

    def stop(self) -> None:
        """Stop the ledger and the timeline (what they recorded stays)."""
        if self.ledger is not None:
            self.ledger.stop()
        if self.timeline is not None:
            self.timeline.stop()

    def close(self) -> None:
        """Stop the instruments and roll back every fault still in force."""
        self.stop()
        faults.rollback(self.env)

    # --- faults -------------------------------------------------------------------------------
    def mark(self, kind: str, node: str | None = None, **detail: Any) -> None:
        """Record an action on the timeline now (when one runs)."""
        if self.timeline is not None:
            self.timeline.mark(kind, node, **detail)

    def inject(self, name: str, *args: str, mark: bool = True) -> faults.JournalEntry:
        """Inject the catalogue's fault ``name`` (journaled for rollback), marked on the
        timeline unless ``mark`` is False (a fault that only prepares the drill)."""
        timeline = self.timeline if mark else None

        def on_mark(kind: str, detail: dict[str, Any]) -> None:
            if timeline is not None:
                timeline.mark(kind, **detail)

        entry = faults.inject(self.env, name, list(args), mark=on_mark)
        self.injected.append(entry)
        return entry

    # --- recovery -----------------------------------------------------------------------------
    def wait_recovered(
        self,
        *require: str,
        timeout: float = RECOVERY_TIMEOUT,
        stable_for: float | None = None,
    ) -> Recovery:
        """Wait until the ``require`` phases (the timeline's default without any) are back
        after the last fault and have stayed back; ``writing`` is required with ``serving``
        when a ledger runs. The recovery either way (``recovered`` False on timeout)."""
        if self.timeline is None:
            raise VaultdrError("no timeline: start measuring before waiting for a recovery")
        phases = tuple(require) or self.timeline.default_required()
        if self.ledger is not None and "serving" in phases and "writing" not in phases:
            phases += ("writing",)  # apps write too: writes back is part of the outage
        window = self.stable_for() if stable_for is None else stable_for
        self.recovery = self.timeline.wait_recovered(timeout, require=phases, stable_for=window)
        return self.recovery

    def fully_healthy(
        self, timeout: float = HEALTHY_TIMEOUT, *, interval: float = 0.5
    ) -> checks.CheckResult:
        """Wait (at most ``timeout`` s) until every node is unsealed and a raft voter, one
        active (autopilot promotion included); the last check either way."""
        last = [checks.CheckResult("cluster-healthy", False, "not checked yet")]

        def healthy() -> bool:
            last[0] = checks.cluster_healthy(self.env, self.token)
            return last[0].ok

        wait_for(healthy, timeout=timeout, interval=interval)
        return last[0]

    def read_restore(self) -> dict[str, Any] | None:
        """The auto-restore record written since the first fault (or the session's start),
        read through the environment (local: the watcher's file; kind/eks: the
        StatefulSet's annotation)."""
        since = self.injected[0].started_at if self.injected else self.started_at
        record = self.env.last_restore()
        if record is None or str(record.get("started_at", "")) < since:
            return None
        self.restore = record
        return record

    def verify_ledger(self, *, after_restore: bool = False, timeout: float = 60.0) -> LedgerReport:
        """Stop the ledger and read every acknowledged write back. With ``after_restore``,
        writes acknowledged after the restored snapshot was taken are the measured RPO
        (up to the last fault), not losses."""
        if self.ledger is None:
            raise VaultdrError("no write load ran in this drill")
        self.ledger.stop()
        restore = self.read_restore() if after_restore else None
        taken_at = parse_key_time(str(restore["snapshot_key"])) if restore else None
        fault_at = (
            dt.datetime.fromisoformat(self.injected[-1].started_at) if self.injected else None
        )
        self.ledger_report = self.ledger.verify(
            snapshot_taken_at=taken_at, fault_at_wall=fault_at, timeout=timeout
        )
        return self.ledger_report

    # --- evidence -------------------------------------------------------------------------------
    def measurements(self, *, rto_phase: str = "rto") -> Measurements:
        """What was measured, as the evidence records it (``rto_phase``: the figure reported
        as ``rto_seconds``)."""
        return measurements_from(
            recovery=self.recovery.to_dict() if self.recovery else None,
            ledger=self.ledger_report.to_dict() if self.ledger_report else None,
            restore=self.restore,
            rto_phase=rto_phase,
        )

    def timeline_for_evidence(self) -> list[TimelineEvent]:
        """Every observed change (initial states left out), in seconds after the last
        fault this session injected, or after the first change when it injected none."""
        if self.timeline is None:
            return []
        events = [e for e in self.timeline.events if not e.detail.get("initial")]
        fault = self.timeline.last_fault() if self.injected else None
        base = fault.mono if fault else (events[0].mono if events else 0.0)
        return [TimelineEvent(t=round(e.mono - base, 3), kind=e.kind, node=e.node) for e in events]

    def summary(self) -> dict[str, Any]:
        """The session's JSON-able record (a Chaos Toolkit journal keeps it under
        ``vaultdr``): the faults, the recovery, the ledger's report and the restore."""
        return {
            "started_at": self.started_at,
            "faults": [fault_summary(e) for e in self.injected],
            "recovery": self.recovery.to_dict() if self.recovery else None,
            "ledger": self.ledger_report.to_dict() if self.ledger_report else None,
            "restore": self.restore,
        }

    def collect_diagnostics(self, run_dir: Path, scenario: str) -> DiagnosticsRecord:
        """The environment's diagnostics of a failed scenario, into
        ``<run_dir>/diagnostics/<scenario>/`` (``-2``, ``-3``... when that is taken), as the
        evidence records them. Never raises: a failed collection is recorded as an error
        and changes no verdict. The root token, when this session read it, and the recovery
        keys are redacted
        from every file besides everything shaped like a secret."""
        base = run_dir / "diagnostics"
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", scenario).strip("-.") or "scenario"
        name, n = stem, 1
        while (base / name).exists():
            n += 1
            name = f"{stem}-{n}"
        directory = f"diagnostics/{name}"
        known = [self._token] if self._token else []
        # The recovery keys too: with one share a key is 32 bytes, 64 hex characters,
        # which the redaction by shape keeps (it looks like a sha256). Never raises either.
        with contextlib.suppress(Exception):
            known += self.env.recovery_keys()
        try:
            found = self.env.diagnostics(base / name, known_secrets=known)
        except Exception as exc:  # noqa: BLE001 - diagnostics never change a drill's verdict
            reason = (
                exc.message if isinstance(exc, VaultdrError) else f"{type(exc).__name__}: {exc}"
            )
            return DiagnosticsRecord(
                directory=directory,
                files=[],
                errors=[redact(f"the collection failed: {reason}", known)],
            )
        return DiagnosticsRecord(
            directory=directory,
            files=[f"{directory}/{f}" for f in found.files],
            errors=list(found.errors),
        )


def fault_summary(entry: faults.JournalEntry) -> dict[str, Any]:
    """A fault as a journal or an activity's output shows it."""
    return {
        "fault": entry.fault,
        "id": entry.id,
        "nodes": entry.detail.get("nodes", []),
        "at": entry.started_at,
    }
