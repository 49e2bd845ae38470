"""The full drill suite: its wall time beside the recovery time it actually measures.

Runs ``vaultdr drill`` over every feature (a fresh stack per feature), then
reads the run's evidence and prints: the suite's wall time, the sum of the
measured RTOs of its scenarios, their ratio (the framework's overhead:
deploying, writing, waiting for full health, tearing down), and the time per
scenario. Goal: the full suite under 5 minutes on this 2-core machine.

Usage: python benchmarks/drill_suite.py [--tags EXPR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", help="only these scenarios (pytest -m expression)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vaultdr-drill-bench-") as tmp:
        command = [sys.executable, "-m", "vaultdr.cli", "drill", "--report-dir", tmp]
        if args.tags:
            command += ["--tags", args.tags]
        start = time.monotonic()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.monotonic() - start
        runs = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if not runs:
            print(done.stdout + done.stderr)
            raise SystemExit("the drill wrote no evidence")
        evidence = json.loads((runs[0] / "evidence.json").read_text())
    print(f"{'scenario':<22} {'verdict':<8} {'scenario s':>10} {'RTO s':>8}")
    rtos = []
    for s in evidence["scenarios"]:
        rto = s["measurements"].get("rto_seconds")
        if rto is not None:
            rtos.append(float(rto))
        shown = f"{rto:.2f}" if rto is not None else "-"
        print(f"{s['id']:<22} {s['verdict']:<8} {s['duration_seconds']:>10.1f} {shown:>8}")
    total = sum(rtos)
    print(
        f"suite wall time: {wall:.1f} s ({len(evidence['scenarios'])} scenarios, exit {done.returncode})"
    )
    print(f"sum of measured RTOs: {total:.2f} s")
    print(f"ratio wall time / RTOs (framework overhead): {wall / total:.1f}" if total else "no RTO")
    print(
        f"full suite under {GOAL_SECONDS / 60:.0f} minutes: {'yes' if wall < GOAL_SECONDS else 'no'}"
    )


if __name__ == "__main__":
    main()
