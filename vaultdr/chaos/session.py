"""One drill's measuring instruments, shared by the activities of a Chaos Toolkit run.

Chaos Toolkit calls each activity as a plain function in one process, so the
timeline (polling every node) and the write ledger (writing at a steady rate)
live here, keyed by the stack's state directory, from ``start_measuring``
until the experiment's end, when the vaultdr control stops them and writes
their records next to the journal.

Configuration keys an experiment may set (all optional):
``vaultdr_state_dir`` (default ``$VAULTDR_STATE_DIR`` or ``./.vaultdr``),
``vaultdr_env`` (``local``, ``kind`` or ``eks``; default ``$VAULTDR_ENV`` or ``local``),
``vaultdr_config`` (the stack file for kind/eks; default ``$VAULTDR_CONFIG`` or
``environments/<env>/stack.yaml``), ``vaultdr_results_dir`` (where timeline and
ledger records go; default ``<state dir>/drills/<run>``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaultdr.config import load_stack
from vaultdr.envs.factory import AnyEnvironment, open_environment
from vaultdr.envs.local.state import resolve_state_dir, write_json_atomic
from vaultdr.errors import ConfigError, StackStateError, VaultdrError
from vaultdr.ledger import LedgerReport, WriteLedger
from vaultdr.timeline import STABLE_FOR, LoginCheck, Recovery, Timeline, write_events_source

log = logging.getLogger("vaultdr.chaos")

RESULTS_ENV_VAR = "VAULTDR_RESULTS_DIR"
DEFAULT_LOGIN = {
    "namespace": "apps",
    "service_account": "web",
    "role": "web",
    "read": "secret/apps/web/config",
}


@dataclass
class Drill:
    """The instruments of one experiment run against one stack."""

    env: AnyEnvironment
    results_dir: Path
    started_at: str
    timeline: Timeline | None = None
    ledger: WriteLedger | None = None
    ledger_report: LedgerReport | None = None
    recovery: Recovery | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    _token: str | None = field(default=None, repr=False)

    @property
    def token(self) -> str:
        """The break-glass root token from SSM: kept in memory, never written anywhere."""
        if self._token is None:
            self._token = self.env.root_token()
        return self._token

    def stable_for(self) -> float:
        """stack.yaml's ``objectives.stable_for``, or the timeline's default without one."""
        try:
            return float(self.env.stack_config().objectives.stable_for)
        except VaultdrError:
            return STABLE_FOR

    def start(self, *, write_rate: float, interval: float, login: dict[str, str]) -> None:
        if self.timeline is None:
            mount, _, path = login["read"].partition("/")
            self.timeline = Timeline(
                self.env,
                self.token,
                interval=interval,
                login=LoginCheck(
                    namespace=login["namespace"],
                    service_account=login["service_account"],
                    role=login["role"],
                    mount=mount,
                    path=path,
                ),
                read_path=(mount, path),
            )
            from vaultdr.timeline import local_events_source

            self.timeline.add_source(local_events_source(self.env.state_dir))
            self.timeline.start()
        if self.ledger is None and write_rate > 0:
            self.ledger = WriteLedger(self.env, self.token, rate=write_rate)
            if self.timeline is not None:  # writes back is part of the RTO
                self.timeline.add_write_source(write_events_source(self.ledger))
            self.ledger.start()

    def finish(self) -> dict[str, Any]:
        """Stop the instruments, write their records; a summary for the journal."""
        if self.ledger is not None and self.ledger_report is None:
            self.ledger.stop()
        if self.timeline is not None:
            if self.recovery is None and self.faults:
                self.recovery = self.timeline.measure()
            self.timeline.stop()
            self.timeline.save(self.results_dir / "timeline.json")
        summary = self.summary()
        write_json_atomic(self.results_dir / "drill.json", summary)
        return summary

    def summary(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "results_dir": str(self.results_dir),
            "faults": self.faults,
            "recovery": self.recovery.to_dict() if self.recovery else None,
            "ledger": self.ledger_report.to_dict() if self.ledger_report else None,
            "checks": self.checks,
        }


_DRILLS: dict[Path, Drill] = {}
_LOCK = threading.Lock()


ENV_VAR = "VAULTDR_ENV"
CONFIG_ENV_VAR = "VAULTDR_CONFIG"


def environment(configuration: dict[str, Any] | None) -> AnyEnvironment:
    config = configuration or {}
    name = str(config.get("vaultdr_env") or os.environ.get(ENV_VAR) or "local")
    state_dir = resolve_state_dir(config.get("vaultdr_state_dir"))
    if name in ("kind", "eks"):
        stack_file = str(
            config.get("vaultdr_config")
            or os.environ.get(CONFIG_ENV_VAR)
            or f"environments/{name}/stack.yaml"
        )
        return open_environment(name, state_dir, load_stack(stack_file), stack_file=stack_file)
    if name != "local":
        raise ConfigError(
            f"vaultdr_env {name!r} is not available in this version", hint="use local"
        )
    env = open_environment("local", state_dir)
    if not (state_dir / "state.json").exists():
        raise StackStateError(
            f"no stack in {state_dir}: the drill needs a running stack",
            hint="start one with `vaultdr up` (or set vaultdr_state_dir / $VAULTDR_STATE_DIR)",
        )
    return env


def drill(configuration: dict[str, Any] | None) -> Drill:
    """The drill of this run (created on first use, found by its state directory)."""
    state_dir = resolve_state_dir((configuration or {}).get("vaultdr_state_dir"))
    with _LOCK:
        found = _DRILLS.get(state_dir)
    if found is not None:
        return found
    env = environment(configuration)
    with _LOCK:
        found = _DRILLS.get(env.state_dir)
        if found is None:
            config = configuration or {}
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            chosen = config.get("vaultdr_results_dir") or os.environ.get(RESULTS_ENV_VAR)
            results = (
                Path(chosen)
                if chosen
                else env.state_dir / "drills" / f"{stamp}-{uuid.uuid4().hex[:6]}"
            )
            results.mkdir(parents=True, exist_ok=True)
            found = Drill(
                env=env,
                results_dir=results,
                started_at=dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            )
            _DRILLS[env.state_dir] = found
        return found


def end_drill(configuration: dict[str, Any] | None) -> dict[str, Any] | None:
    """Finish and forget the drill of this run; its summary, or None if none ran."""
    try:
        state_dir = resolve_state_dir((configuration or {}).get("vaultdr_state_dir"))
    except OSError:
        return None
    with _LOCK:
        found = _DRILLS.pop(state_dir, None)
    return found.finish() if found else None


def restore_since(env: AnyEnvironment, since: str) -> dict[str, Any] | None:
    """The auto-restore record written after ``since`` (ISO time), if any, read through
    the environment (local: the watcher's file; kind/eks: the StatefulSet's annotation)."""
    record = env.last_restore()
    if record is None:
        return None
    return record if str(record.get("started_at", "")) >= since else None
