"""``vaultdr upgrade-check``: the CLI over :mod:`vaultdr.upgrade.check` (its own local
stack) and :mod:`vaultdr.upgrade.kube` (``--env kind|eks``: the cluster ``up`` made)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from vaultdr.envs.kube.clusters import kube_environment_for
from vaultdr.envs.kube.env import CONFIRM_ENV_VAR, CONFIRM_FLAG
from vaultdr.errors import ConfigError
from vaultdr.statedir import STATE_ENV_VAR
from vaultdr.upgrade.check import UpgradeCheckOptions, UpgradeResult, run_upgrade_check
from vaultdr.upgrade.kube import KubeUpgradeOptions, plan_upgrade, run_kube_upgrade_check

Handler = Callable[[argparse.Namespace], int]
DEFAULT_STACK = Path("environments/local/stack.yaml")


def cmd_upgrade_check(args: argparse.Namespace) -> int:
    if args.env in ("kind", "eks"):
        return cmd_kube_upgrade_check(args)
    for flag, given in (
        ("--chart-version", args.chart_version),
        ("--dry-run", args.dry_run),
        ("--strict-values", args.strict_values),
    ):
        if given:
            raise ConfigError(
                f"upgrade-check {flag} is for a cluster (--env kind|eks)",
                hint="the local check runs on its own stack: run it without " + flag,
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
    return _report(run_upgrade_check(options, say=lambda text: print(text, flush=True)))


def cmd_kube_upgrade_check(args: argparse.Namespace) -> int:
    """``upgrade-check --env kind|eks``: on the cluster ``vaultdr up`` made."""
    for flag, given in (("--from", args.from_version), ("--binary", args.binary)):
        if given:
            raise ConfigError(
                f"upgrade-check --env {args.env} {flag}: on a cluster the version today is "
                "the one the nodes report, and the target is the chart's server image",
                hint="pass --to VERSION (and --chart-version V for a chart upgrade)",
            )
    if not args.to:
        raise ConfigError("say which version to check", hint="pass --to VERSION")
    env = kube_environment_for(
        args.env,
        config=args.config,
        state_dir=args.state_dir,
        confirm_context=args.i_know_this_breaks,
        dry_run=args.dry_run,
    )
    try:
        if args.dry_run:
            lines = plan_upgrade(
                env, version=args.to, chart_version=args.chart_version, drills=not args.no_drills
            )
            print(f"upgrade-check --env {args.env} --to {args.to} would:")
            for line in lines:
                print(f"  {line}")
            return 0
        # The drills' pytest process finds the same cluster state and confirmation.
        os.environ[STATE_ENV_VAR] = str(env.state_dir)
        if args.i_know_this_breaks:
            os.environ[CONFIRM_ENV_VAR] = args.i_know_this_breaks
        options = KubeUpgradeOptions(
            config=Path(env.stack_file),
            to_version=args.to,
            report_dir=Path(args.report_dir),
            drills=not args.no_drills,
            drill_tags=args.tags,
            chart_version=args.chart_version,
            strict_values=args.strict_values,
        )
        result = run_kube_upgrade_check(options, env, say=lambda text: print(text, flush=True))
    finally:
        env.close()
    return _report(result)


def _report(result: UpgradeResult) -> int:
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
        "--chart-version",
        metavar="V",
        help="kind/eks: also upgrade the official chart to V (its values are checked first)",
    )
    check.add_argument(
        "--strict-values",
        action="store_true",
        help="kind/eks: stop (exit 2) if the new chart lacks a value our values file sets",
    )
    check.add_argument(
        "--dry-run", action="store_true", help="kind/eks: print every step, run none"
    )
    check.add_argument(
        CONFIRM_FLAG,
        metavar="CONTEXT",
        default=os.environ.get(CONFIRM_ENV_VAR),
        help="eks: the kube context you expect this check to break (total loss is part of it)",
    )
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
