"""Allure HTML from the run's ``allure-results``, with the npm ``allure`` package's CLI.

vaultdr does not ship Node: it uses ``allure`` from PATH, or ``npx --no-install
allure`` (a project-local install), and says what to install when neither works.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from vaultdr.errors import VaultdrError

INSTALL_HINT = (
    "install the Allure CLI (it needs Node.js): `npm install -g allure`, or `npm install allure` "
    "in this directory; then run `vaultdr report DIR --allure` again"
)


class AllureUnavailable(VaultdrError):
    exit_code = 9


def allure_command() -> list[str]:
    found = shutil.which("allure")
    if found:
        return [found]
    npx = shutil.which("npx")
    if npx:
        probe = subprocess.run(
            [npx, "--no-install", "allure", "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if probe.returncode == 0:
            return [npx, "--no-install", "allure"]
    raise AllureUnavailable(
        "the Allure CLI (npm package `allure`) was not found", hint=INSTALL_HINT
    )


def render_allure(run_dir: Path) -> Path:
    results = run_dir / "allure-results"
    if not results.is_dir() or not any(results.iterdir()):
        raise VaultdrError(
            f"no Allure results in {results}",
            hint="`vaultdr drill` writes them; this run has none",
        )
    command = allure_command()
    output = run_dir / "allure-report"
    done = subprocess.run(
        [*command, "generate", str(results), "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise VaultdrError(
            f"allure generate failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}",
            hint=INSTALL_HINT,
        )
    return output
