"""The vaultdr control: at the end of a run, stop the instruments, roll back, report.

Declared in every experiment of ``drills/``. Whatever happened during the run
(a failed activity, a deviation, an interruption), it rolls back every fault
still in force, so KMS access is never left revoked, and adds the drill's
measurements to the journal under ``vaultdr``.
"""

import logging
from typing import Any

from vaultdr import faults
from vaultdr.chaos.actions import ensure_app_secret
from vaultdr.chaos.session import end_drill, environment
from vaultdr.errors import VaultdrError

__all__ = ["after_experiment_control", "before_experiment_control"]

log = logging.getLogger("vaultdr.chaos")


def before_experiment_control(
    context: dict[str, Any],
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """Make sure the app secret the login probes read exists (a canary when absent)."""

    path = str((configuration or {}).get("vaultdr_app_secret") or "secret/apps/web/config")
    try:
        ensure_app_secret(path, configuration=configuration)
    except Exception as exc:  # noqa: BLE001 - the steady-state probes will say what is wrong
        log.warning("could not prepare %s: %s", path, exc)


def after_experiment_control(
    context: dict[str, Any],
    state: dict[str, Any],
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    summary = end_drill(configuration) or {}
    rolled_back: list[str] = []
    try:
        rolled_back = [r.fault for r in faults.rollback(environment(configuration))]
    except VaultdrError as exc:
        log.error("vaultdr rollback at the end of the experiment failed: %s", exc)
        summary["rollback_error"] = exc.message
    if rolled_back:
        log.warning("rolled back what the experiment left in force: %s", ", ".join(rolled_back))
    summary["rolled_back_by_control"] = rolled_back
    state["vaultdr"] = summary
