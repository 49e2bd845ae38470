"""``vaultdr upgrade-check``: the CLI over :mod:`vaultdr.upgrade.check`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vaultdr.errors import ConfigError
from vaultdr.upgrade.check import UpgradeCheckOptions, run_upgrade_check

Handler = Callable[[argparse.Namespace], int]
DEFAULT_STACK = Path("environments/local/stack.yaml")


def cmd_upgrade_check(args: argparse.Namespace) -> int:
    if args.env != "local":
        raise ConfigError(
            f"upgrade-check --env {args.env}: the check runs on its own local stack",
            hint="run it without --env; it never touches a running cluster",
        )
    config = Path(args.config) if args.config else DEFAULT_STACK
    if not config.exists():
        raise ConfigError(f"no stack file at {config}", hint="pass --config PATH")
    options = UpgradeCheckOptions(
        config=config,
        to_version=args.to,
        from_version=args.from_version,
        binary=Path(args.binary) if args.binary else None,
        report_dir=Path(args.report_dir),
        state_dir=Path(args.work_dir or os.environ.get("VAULTDR_UPGRADE_DIR", ".vaultdr-upgrade")),
        drills=not args.no_drills,
        drill_tags=args.tags,
    )
    result = run_upgrade_check(options, say=lambda text: print(text, flush=True))
    print(f"\n{result.verdict.upper()}: {result.previous} -> {result.target}")
    print(result.explanation)
    print(f"evidence: {result.run_dir}/report.html")
    sys.stdout.flush()
    return result.exit_code


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``upgrade-check`` to the CLI's subparsers."""
    text = "prove an engine upgrade on a copy of the stack: rolling, restore, drills"
    check = sub.add_parser("upgrade-check", parents=[common], help=text, description=text)
    check.set_defaults(handler=cmd_upgrade_check)
    check.add_argument("--to", metavar="VERSION", help="the engine version to upgrade to")
    check.add_argument(
        "--from",
        dest="from_version",
        metavar="VERSION",
        help="the version running today (default: engine.version in stack.yaml)",
    )
    check.add_argument("--binary", help="the target server binary, e.g. a HashiCorp vault build")
    check.add_argument("--report-dir", default="reports", help="where runs go (default reports/)")
    check.add_argument("--work-dir", help="the check's own stack state (default .vaultdr-upgrade/)")
    check.add_argument("--no-drills", action="store_true", help="skip the drill features")
    check.add_argument("--tags", help="only drill scenarios matching this tag expression")
