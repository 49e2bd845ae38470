"""The drill session of a Chaos Toolkit run, shared by its activities.

Chaos Toolkit calls each activity as a plain function in one process, so the
run's :class:`~vaultdr.session.DrillSession` (the timeline polling every node,
the write ledger writing at a steady rate) lives here, keyed by the stack's
state directory, from ``start_measuring`` until the experiment's end, when the
vaultdr control stops it and writes its records next to the journal.

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
from pathlib import Path
from typing import Any

from vaultdr.checks import CheckResult
from vaultdr.config import load_stack
from vaultdr.envs.factory import AnyEnvironment, open_environment
from vaultdr.errors import ConfigError, StackStateError
from vaultdr.files import write_json_atomic
from vaultdr.session import DrillSession, fault_summary
from vaultdr.statedir import resolve_state_dir
from vaultdr.timeline import LoginCheck

log = logging.getLogger("vaultdr.chaos")

RESULTS_ENV_VAR = "VAULTDR_RESULTS_DIR"
DEFAULT_LOGIN = {
    "namespace": "apps",
    "service_account": "web",
    "role": "web",
    "read": "secret/apps/web/config",
}


class Drill(DrillSession):
    """The drill session of one experiment run, with the probes' verdicts and a place
    (``results_dir``) for its records."""

    def __init__(
        self,
        env: AnyEnvironment,
        *,
        results_dir: Path,
        started_at: str | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(env, token=token, started_at=started_at)
        self.results_dir = results_dir
        self.checks: list[dict[str, Any]] = []

    @property
    def faults(self) -> list[dict[str, Any]]:
        """Every fault injected so far: fault, id, nodes, at."""
        return [fault_summary(e) for e in self.injected]

    def start(self, *, write_rate: float, interval: float, login: dict[str, str]) -> None:
        """The timeline with ``login``'s check and read, then (``write_rate`` > 0) the ledger."""
        mount, _, path = login["read"].partition("/")
        check = LoginCheck(
            namespace=login["namespace"],
            service_account=login["service_account"],
            role=login["role"],
            mount=mount,
            path=path,
        )
        self.start_timeline(interval=interval, login=check, read_path=(mount, path))
        if write_rate > 0:
            self.start_ledger(rate=write_rate, warm_up=False)

    def record_check(self, result: CheckResult, at: float) -> dict[str, Any]:
        """Keep a probe's verdict for the journal; the probe's answer."""
        answer = result.to_dict()
        self.checks.append({**answer, "at": at})
        return answer

    def finish(self) -> dict[str, Any]:
        """Stop the instruments, write their records; a summary for the journal."""
        if self.ledger is not None and self.ledger_report is None:
            self.ledger.stop()
        if self.timeline is not None:
            if self.recovery is None and self.injected:
                self.recovery = self.timeline.measure()
            self.timeline.stop()
            self.timeline.save(self.results_dir / "timeline.json")
        summary = self.summary()
        write_json_atomic(self.results_dir / "drill.json", summary)
        return summary

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "results_dir": str(self.results_dir), "checks": self.checks}


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
            found = Drill(env, results_dir=results)
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
