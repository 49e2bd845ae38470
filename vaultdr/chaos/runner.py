"""``vaultdr chaos run``: run an experiment with Chaos Toolkit and judge it from the journal.

Plain ``chaos run`` exits 0 when the steady state was already broken before
the method and when an action raised; an SRE's drill must fail in both cases.
So the experiment runs under the real ``chaos`` command (rollbacks always
played), the journal is kept, and the verdict is read from it:

- the steady state must hold before the method (``steady_states.before``);
- it must not deviate after it (``deviated``);
- every activity of the method and of the rollbacks must have succeeded;
- the run must have completed (not failed, aborted or interrupted).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslib.exceptions import ChaosException
from chaoslib.experiment import ensure_experiment_is_valid

from vaultdr.chaos.session import RESULTS_ENV_VAR
from vaultdr.errors import ConfigError, VaultdrError
from vaultdr.statedir import STATE_ENV_VAR


class DrillFailed(VaultdrError):
    """The experiment ran and its verdict is: failed."""

    exit_code = 7


@dataclass
class Verdict:
    journal_path: Path
    passed: bool
    reasons: list[str] = field(default_factory=list)
    activities: list[tuple[str, str]] = field(default_factory=list)
    vaultdr: dict[str, Any] = field(default_factory=dict)


def judge(journal: dict[str, Any], journal_path: Path) -> Verdict:
    """The verdict on a finished experiment, from its journal alone."""
    reasons: list[str] = []
    before = (journal.get("steady_states") or {}).get("before")
    if not before or not before.get("steady_state_met"):
        reasons.append("the steady state was not met before the method: " + _failing_probes(before))
    if journal.get("deviated"):
        after = (journal.get("steady_states") or {}).get("after")
        reasons.append("the steady state deviated after the method: " + _failing_probes(after))
    activities: list[tuple[str, str]] = []
    for section in ("run", "rollbacks"):
        for run in journal.get(section) or []:
            name = run.get("activity", {}).get("name", "?")
            status = str(run.get("status"))
            activities.append((name, status))
            if status != "succeeded":
                why = run.get("exception") or run.get("output") or ""
                if isinstance(why, list):
                    why = why[-1] if why else ""
                reasons.append(
                    f"{section[:-1] if section == 'rollbacks' else 'activity'} {name} {status}: {str(why).strip()[:300]}"
                )
    final = journal.get("status")
    if final != "completed":
        reasons.append(f"the experiment ended {final}")
    return Verdict(
        journal_path=journal_path,
        passed=not reasons,
        reasons=reasons,
        activities=activities,
        vaultdr=dict(journal.get("vaultdr") or {}),
    )


def _failing_probes(state: dict[str, Any] | None) -> str:
    if not state:
        return "it was not evaluated"
    failing = []
    for probe in state.get("probes") or []:
        if not probe.get("tolerance_met"):
            name = probe.get("activity", {}).get("name", "?")
            output = probe.get("output")
            detail = output.get("detail") if isinstance(output, dict) else output
            failing.append(f"{name} ({detail})" if detail else name)
    return ", ".join(failing) or "no probe failed (see the journal)"


def validate_experiment(experiment: Path) -> None:
    """Refuse, as bad input, a file Chaos Toolkit would not run as an experiment.

    ``chaos run`` itself exits with a failure for these, which would look like a
    failed DR drill; checked here first, they are a ConfigError instead.
    """
    try:
        data = json.loads(experiment.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{experiment} is not a text file") from None
    except RecursionError:
        raise ConfigError(f"{experiment} is nested too deeply to be an experiment") from None
    except ValueError as exc:
        raise ConfigError(f"{experiment} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{experiment} cannot be read ({exc.strerror})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{experiment}: an experiment is a JSON object, not {type(data).__name__}",
            hint="see drills/ for the shipped ones",
        )
    try:
        ensure_experiment_is_valid(data)
    except ChaosException as exc:
        raise ConfigError(
            f"{experiment} is not a valid experiment: {exc}",
            hint="fix it (see drills/ for the shipped ones); `chaos validate` says the same",
        ) from None
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"{experiment} is not a valid experiment: a field has the wrong shape "
            f"({type(exc).__name__})",
            hint="compare it with drills/kill-leader.json",
        ) from None


def run_experiment(
    experiment: Path,
    *,
    state_dir: Path,
    journal_path: Path | None = None,
    variables: list[str] | None = None,
) -> Verdict:
    """Run ``experiment`` with ``chaos run`` against the stack in ``state_dir``."""
    if not experiment.is_file():
        raise ConfigError(f"no experiment at {experiment}", hint="see drills/ for the shipped ones")
    validate_experiment(experiment)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = (
        journal_path.parent if journal_path else state_dir / "drills" / f"{stamp}-{experiment.stem}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    journal_path = journal_path or out_dir / "journal.json"
    chaos = Path(sys.executable).with_name("chaos")
    command = [str(chaos) if chaos.exists() else "chaos", "--no-version-check"]
    command += ["--log-file", str(out_dir / "chaostoolkit.log"), "run"]
    command += ["--journal-path", str(journal_path), "--rollback-strategy", "always"]
    for item in variables or []:
        command += ["--var", item]
    command.append(str(experiment))
    environ = {**os.environ, STATE_ENV_VAR: str(state_dir), RESULTS_ENV_VAR: str(out_dir)}
    try:
        subprocess.run(command, env=environ, check=False, timeout=3600)
    except FileNotFoundError:
        raise ConfigError(
            "the `chaos` command (Chaos Toolkit) is not installed",
            hint="run `make setup`, or `pip install chaostoolkit`",
        ) from None
    if not journal_path.exists():
        raise DrillFailed(
            f"chaos run wrote no journal for {experiment}",
            hint=f"see {out_dir / 'chaostoolkit.log'}",
        )
    return judge(json.loads(journal_path.read_text()), journal_path)
