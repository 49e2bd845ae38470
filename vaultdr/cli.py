"""The ``vaultdr`` command line: thin over the library, errors a user can act on.

Every command exits 0 on success; a :class:`VaultdrError` prints what failed
and what to do, and exits with the code of the table in :mod:`vaultdr.errors`.
No traceback reaches a user unless ``--debug`` asks for it: an unexpected error
is named by its type and place only (its message might carry a value). Nothing
here prints a token, key or secret value: commands that hand one out
(``sa-token``) print only that, to stdout, for a pipe.

Commands that change a state directory (``up``, ``down``, ``rollback``,
``fault inject``, ``restore``, ``chaos run``, ``drill`` on a cluster) hold its
lock for as long as they run; SIGTERM and SIGHUP interrupt a command like
Ctrl-C does, so ``up`` stops everything it started before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from vaultdr import __version__, faults, statedir
from vaultdr.agents import snapshot as snap
from vaultdr.agents.restore import RestorePlan
from vaultdr.chaos.runner import run_experiment
from vaultdr.config import Stack, load_stack, load_stack_for
from vaultdr.drill.plan import plan_drill
from vaultdr.drill.runner import FEATURES, run_drill
from vaultdr.envs.base import Environment, StackStatus
from vaultdr.envs.factory import open_environment
from vaultdr.envs.kube.clusters import kube_environment_for
from vaultdr.envs.kube.commands import add_terraform_output, fill_terraform_values
from vaultdr.envs.kube.commands import register as register_kube
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.healing import run_restore
from vaultdr.errors import (
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_DRILL_FAILED,
    EXIT_HARNESS,
    EXIT_INTERRUPTED,
    EXIT_NOT_GOOD,
    ConfigError,
    StackStateError,
    VaultdrError,
)
from vaultdr.evidence.commands import register as register_evidence
from vaultdr.faults import RolledBack
from vaultdr.statedir import resolve_state_dir
from vaultdr.upgrade.commands import register as register_upgrade

Handler = Callable[[argparse.Namespace], int]


def _stack(args: argparse.Namespace) -> tuple[Stack, str]:
    return load_stack_for(args.env, args.config)


def kube_environment(args: argparse.Namespace, *, dry_run: bool = False) -> Environment:
    """The environment of ``--env kind|eks``, its state in ``.vaultdr-<env>`` unless told."""
    return kube_environment_for(
        args.env,
        config=args.config,
        state_dir=args.state_dir,
        confirm_context=getattr(args, "i_know_this_breaks", None),
        dry_run=dry_run or bool(getattr(args, "dry_run", False)),
    )


def _any_environment(args: argparse.Namespace, *, with_stack: bool = False) -> Environment:
    """The environment of ``--env``: local processes, or a kind/eks cluster."""
    if args.env in ("kind", "eks"):
        return kube_environment(args)
    state_dir = resolve_state_dir(args.state_dir)
    dry_run = bool(getattr(args, "dry_run", False))
    if with_stack:
        stack, path = _stack(args)
        return open_environment("local", state_dir, stack, stack_file=path, dry_run=dry_run)
    # The stack is read from the running stack's state.
    return open_environment("local", state_dir, dry_run=dry_run)


def _local_only(args: argparse.Namespace) -> None:
    if args.env != "local":
        raise ConfigError(
            f"vaultdr {args.command} --env {args.env}: this command is local-only",
            hint="use --env local (the default)",
        )


def _local_environment(args: argparse.Namespace) -> LocalEnvironment:
    """The local stack itself, for the commands whose library is local-only (restore)."""
    _local_only(args)
    return LocalEnvironment(resolve_state_dir(args.state_dir))


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C, so what was started is stopped."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # Later signals are ignored: the first one's cleanup must be allowed to finish.
    for other in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def _holding(state_dir: Path, command: str, *, required: bool = False) -> Iterator[None]:
    """Hold ``state_dir``'s lock while ``command`` runs (no lock when it does not exist)."""
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(
            f"state directory {state_dir} is a file, not a directory",
            hint="pass --state-dir where the stack runs",
        )
    if not state_dir.is_dir():
        if required:
            raise StackStateError(
                f"there is no state directory at {state_dir}",
                hint="pass the --state-dir the stack was started with (or set $VAULTDR_STATE_DIR)",
            )
        yield
        return
    ours = statedir.is_owned(state_dir, legacy_file="state.json")
    journals = ("rollback-journal.json", "rollback-journal.jsonl")
    if not ours and any((state_dir / name).is_file() for name in journals):  # older vaultdr's
        statedir.write_marker(state_dir, purpose="state (adopted)")
        ours = True
    if not ours:
        if required:
            raise statedir.NotOurDirectory(
                f"{state_dir} is not a vaultdr state directory (vaultdr did not create it)",
                hint="pass the --state-dir the stack was started with",
            )
        yield  # nothing of ours to guard, and no lock file is left in someone else's directory
        return
    with statedir.locked(state_dir, command=command):
        yield


def _print_status(status: StackStatus) -> None:
    kms = {True: "reachable", False: "UNREACHABLE", None: "unknown"}[status.kms_reachable]
    access = status.extras.get("kms_access", "unknown")
    print(
        f"cluster {status.cluster} ({status.environment}), seal {status.seal}: KMS {kms}, access {access}"
    )
    header = f"{'NODE':<20} {'ADDRESS':<26} {'RUN':<4} {'INIT':<5} {'SEALED':<7} {'ACTIVE':<7} {'VOTER':<6} VERSION"
    print(header)
    for n in status.nodes:

        def flag(value: bool | None) -> str:
            return "-" if value is None else ("yes" if value else "no")

        line = (
            f"{n.name:<20} {n.api_addr:<26} {flag(n.running):<4} {flag(n.initialized):<5} "
            f"{flag(n.sealed):<7} {flag(n.active):<7} {flag(n.voter):<6} {n.version or '-'}"
        )
        print(line + (f"  ({n.error})" if n.error else ""))
    for name, state in status.extras.get("services", {}).items():
        print(f"service {name}: {state}")
    for name, state in status.agents.items():
        print(f"agent {name}: {state}")
    if "snapshots" in status.extras:
        print(f"snapshots: {status.extras['snapshots']}")
    if "last_restore" in status.extras:
        print(f"last restore: {status.extras['last_restore']}")
    print("healthy" if status.healthy else "NOT healthy")


def cmd_up(args: argparse.Namespace) -> int:
    if getattr(args, "terraform_output", None):
        fill_terraform_values(args)  # eks: the chart values from Terraform, then up
    env = _any_environment(args, with_stack=True)
    if env.dry_run:
        print("\n".join(env.plan_up()))
        return 0
    print(f"starting the {env.name} stack ({env.state_dir}) ...", file=sys.stderr)
    with env.claimed_for_up():
        status = env.up()
    _print_status(status)
    print('\npoint the CLI at it:  eval "$(vaultdr env)"', file=sys.stderr)
    return 0 if status.healthy else EXIT_NOT_GOOD


def cmd_status(args: argparse.Namespace) -> int:
    status = _any_environment(args).status()
    if args.json:
        print(json.dumps(asdict(status) | {"healthy": status.healthy}, indent=2))
    else:
        _print_status(status)
    return 0 if status.healthy else EXIT_NOT_GOOD


def cmd_down(args: argparse.Namespace) -> int:
    env = _any_environment(args)
    with _holding(env.state_dir, "down"):
        env.down(keep_data=args.keep_data)
    kept = f" (data kept in {env.state_dir})" if args.keep_data else ""
    print(f"stopped the {env.name} stack{kept}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    env = _any_environment(args)
    client = env.client()
    ca = env.ca_file()
    for prefix in ("BAO", "VAULT"):
        print(f"export {prefix}_ADDR={client.address}")
        print(f"export {prefix}_CACERT={ca}")
    print(
        "# a token: aws ssm get-parameter (break-glass) or a kubernetes login; never printed here"
    )
    return 0


def cmd_sa_token(args: argparse.Namespace) -> int:
    env = _any_environment(args)
    audiences = args.audience or None
    print(env.service_account_token(args.namespace, args.name, audiences=audiences, ttl=args.ttl))
    return 0


def cmd_configure(args: argparse.Namespace) -> int:
    env = _any_environment(args)
    stack = _stack(args)[0] if args.config else None  # --config: that stack file's configure
    changes = env.configure(dry_run=args.dry_run, stack=stack)
    verb = "would make" if args.dry_run else "made"
    for change in changes:
        print(f"  {change}")
    print(f"configure {verb} {len(changes)} change(s)")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:

    _local_only(args)
    env = _any_environment(args)
    bucket, prefix = env.snapshot_location()
    if args.action == "now":
        record = env.snapshot_agent().take()
        print(f"uploaded s3://{record.bucket}/{record.key}")
        print(f"  sha256 {record.sha256}  size {record.size}  raft index {record.raft_index}")
        for key in record.deleted:
            print(f"  retention deleted {key}")
        return 0
    if args.action == "list":
        for info in snap.list_snapshots(env.aws("admin"), bucket, prefix):
            meta = info.metadata
            print(
                f"{info.key}  {info.size:>10}  index {meta.get('raft-index', '?'):>8}  "
                f"{meta.get('engine', '?')} {meta.get('engine-version', '?')}"
            )
        return 0
    if not args.key:
        raise ConfigError("snapshot verify needs a KEY", hint="see `vaultdr snapshot list`")
    work = env.state_dir / "agents" / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    result = snap.verify_snapshot(env.aws("admin"), bucket, args.key, work)
    print(f"{args.key}: {'OK' if result.ok else 'BAD'}: {result.reason}")
    return 0 if result.ok else EXIT_NOT_GOOD


def cmd_restore(args: argparse.Namespace) -> int:

    env = _local_environment(args)
    with _holding(env.state_dir, "restore"):
        result = run_restore(env, key=args.key, force=args.force, dry_run=args.dry_run)
    if isinstance(result, RestorePlan):
        print(result.describe())
        print("dry run: nothing was changed")
        return 0 if result.snapshot and not result.refused else EXIT_NOT_GOOD
    for item in result.skipped:
        print(f"skipped {item['key']}: {item['reason']}")
    print(
        f"restored {result.snapshot_key} ({result.snapshot_age_seconds:.0f} s old) in {result.total_seconds:.1f} s"
    )
    for name, seconds in result.phases.items():
        print(f"  {name:<20} +{seconds:.2f} s")
    return 0


def cmd_fault(args: argparse.Namespace) -> int:

    if args.action == "list":
        for spec in faults.CATALOGUE.values():
            usage = " ".join([spec.name, *spec.params])
            print(f"{usage:<28} {spec.summary}")
            print(f"{'':<28} undo: {spec.undo}")
        return 0
    if args.action == "rollback":
        return cmd_rollback(args)
    if not args.fault:
        raise ConfigError("fault inject needs a NAME", hint="see `vaultdr fault list`")
    env = _any_environment(args)
    if args.dry_run:
        for change in faults.preview(env, args.fault, args.fault_args):
            print(f"would {change}")
        print("dry run: nothing was changed")
        return 0
    journal = faults.RollbackJournal(env.state_dir).path
    print(f"rollback journal: {journal}", file=sys.stderr)
    with _holding(env.state_dir, "fault inject"):
        entry = faults.inject(env, args.fault, args.fault_args)
    targets = ", ".join(entry.detail.get("nodes", [])) or "-"
    print(f"injected {entry.fault} (id {entry.id}) on {targets}")
    if entry.in_force:
        print("  in force until undone: `vaultdr rollback` (or the matching restore/thaw fault)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:

    env = _any_environment(args)
    journal = faults.RollbackJournal(env.state_dir).path
    with _holding(env.state_dir, "rollback", required=True):
        print(f"rollback journal: {journal}", file=sys.stderr)
        try:
            results = faults.rollback(env)
        except faults.FaultError as exc:  # every entry was tried: say what each one did
            _print_rolled_back([r for r in exc.results if isinstance(r, RolledBack)])
            raise
    if not results:
        print("nothing to roll back")
    _print_rolled_back(results)
    return 0


def _print_rolled_back(results: list[RolledBack]) -> None:
    for result in results:
        steps = "; ".join(result.steps) or "-"
        if result.error:
            print(f"NOT rolled back {result.fault} (id {result.entry_id}): {result.error}")
        else:
            print(f"rolled back {result.fault} (id {result.entry_id}): {steps}")


def cmd_chaos(args: argparse.Namespace) -> int:

    state_dir = resolve_state_dir(args.state_dir)
    if args.env in ("kind", "eks"):  # the experiment's activities find the cluster through these
        env = kube_environment(args)
        state_dir = env.state_dir
        os.environ.update({"VAULTDR_ENV": args.env, "VAULTDR_CONFIG": env.stack_file})
        if args.i_know_this_breaks:
            os.environ["VAULTDR_I_KNOW_THIS_BREAKS"] = args.i_know_this_breaks
    with _holding(state_dir, "chaos run"):
        verdict = run_experiment(
            Path(args.experiment),
            state_dir=state_dir,
            journal_path=Path(args.journal) if args.journal else None,
            variables=args.var,
        )
    for name, status in verdict.activities:
        print(f"  {status:<10} {name}")
    recovery = verdict.vaultdr.get("recovery") or {}
    if recovery.get("rto") is not None:
        print(f"RTO {recovery['rto']:.2f} s")
    ledger = verdict.vaultdr.get("ledger") or {}
    if ledger:
        line = (
            f"writes: {ledger.get('acknowledged')} acknowledged, {len(ledger.get('lost', []))} lost"
        )
        if ledger.get("snapshot_taken_at"):
            line += (
                f", RPO {ledger.get('rpo_writes', 0)} writes / {ledger.get('rpo_seconds', 0):.1f} s"
            )
        print(line)
    print(f"journal: {verdict.journal_path}")
    if verdict.passed:
        print(f"PASSED {args.experiment}")
        return 0
    print(f"FAILED {args.experiment}", file=sys.stderr)
    for reason in verdict.reasons:
        print(f"  - {reason}", file=sys.stderr)
    return EXIT_DRILL_FAILED


def cmd_drill(args: argparse.Namespace) -> int:

    _, stack_file = _stack(args)
    config = Path(stack_file)
    if args.dry_run:
        env = kube_environment(args, dry_run=True) if args.env in ("kind", "eks") else None
        for line in plan_drill(load_stack(config), args.env, FEATURES, tags=args.tags, env=env):
            print(line)
        print("dry run: nothing was changed")
        return 0
    if args.i_know_this_breaks:  # the drill's pytest process reads it from the environment
        os.environ["VAULTDR_I_KNOW_THIS_BREAKS"] = args.i_know_this_breaks
    # On a cluster the drill drives the stack of the state directory: nobody else may.
    held = kube_environment(args).state_dir if args.env in ("kind", "eks") else None
    with _holding(held, "drill") if held else contextlib.nullcontext():
        result = run_drill(
            config=config,
            env_name=args.env,
            tags=args.tags,
            report_dir=Path(args.report_dir),
            junit=args.junit,
            chaos=args.chaos,
        )
    print(
        f"{result.verdict.upper()}: {result.passed} of {result.scenarios} scenarios passed; "
        f"evidence: {result.run_dir}/report.html"
    )
    return result.exit_code


def _add_confirmation(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--i-know-this-breaks",
        metavar="CONTEXT",
        help="eks: the kube context you expect to break (or $VAULTDR_I_KNOW_THIS_BREAKS)",
    )


Add = Callable[[str, Handler, str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:

    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    parser = argparse.ArgumentParser(
        prog="vaultdr",
        description="DR drills and chaos testing for Vault/OpenBao.",
        epilog=f"exit codes:\n{codes}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vaultdr {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", default="local", choices=["local", "kind", "eks"])
    common.add_argument("--config", help="stack.yaml (default: environments/<env>/stack.yaml)")
    common.add_argument(
        "--state-dir", help="state directory (default: $VAULTDR_STATE_DIR or ./.vaultdr)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        cmd.set_defaults(handler=handler)
        return cmd

    _add_stack_commands(add)
    _add_snapshot_commands(add)
    _add_drill_commands(add)
    register_evidence(sub, common)
    register_kube(sub, common)
    register_upgrade(sub, common)
    add("rollback", cmd_rollback, "undo every fault still in force (from the rollback journal)")
    return parser


def _add_stack_commands(add: Add) -> None:
    """up, status, down, env, sa-token, configure: the stack's life and how to reach it."""
    up = add("up", cmd_up, "start the stack and wait until it is healthy")
    up.add_argument("--dry-run", action="store_true", help="print the steps, run none")
    add_terraform_output(up)
    status = add("status", cmd_status, "show every node: initialized, sealed, active, voter")
    status.add_argument("--json", action="store_true")
    down = add("down", cmd_down, "stop every process of the stack")
    down.add_argument("--keep-data", action="store_true", help="keep the state directory")
    _add_confirmation(down)
    add("env", cmd_env, "print export lines for the bao/vault CLI")
    sa = add("sa-token", cmd_sa_token, "print a service-account token from the Kubernetes API")
    sa.add_argument("namespace")
    sa.add_argument("name")
    sa.add_argument("--audience", action="append", help="token audience (default: vault)")
    sa.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    configure = add("configure", cmd_configure, "apply stack.yaml's configuration (idempotent)")
    configure.add_argument("--dry-run", action="store_true")


def _add_snapshot_commands(add: Add) -> None:
    """snapshot and restore."""
    snapshot = add("snapshot", cmd_snapshot, "take, list or verify raft snapshots in S3")
    snapshot.add_argument("action", choices=["now", "list", "verify"])
    snapshot.add_argument("key", nargs="?", help="the object key (verify)")
    restore = add("restore", cmd_restore, "restore an empty cluster from a snapshot")
    which = restore.add_mutually_exclusive_group()
    which.add_argument("--key", help="restore this snapshot (default: the newest that verifies)")
    which.add_argument("--latest", action="store_true", help="the newest that verifies (default)")
    restore.add_argument("--force", action="store_true", help="allow an old or foreign snapshot")
    restore.add_argument(
        "--dry-run", action="store_true", help="say what would happen, change nothing"
    )


def _add_drill_commands(add: Add) -> None:
    """fault, chaos and drill: breaking the stack on purpose."""
    fault = add("fault", cmd_fault, "list, inject or roll back faults")
    fault.add_argument("action", choices=["list", "inject", "rollback"])
    fault.add_argument("fault", nargs="?", metavar="NAME", help="the fault (inject)")
    fault.add_argument("fault_args", nargs="*", metavar="ARG", help="e.g. the NODE")
    fault.add_argument("--dry-run", action="store_true", help="print every change, make none")
    _add_confirmation(fault)
    chaos = add("chaos", cmd_chaos, "run a Chaos Toolkit experiment and judge it from its journal")
    chaos.add_argument("action", choices=["run"])
    chaos.add_argument("experiment", help="e.g. drills/kill-leader.json")
    chaos.add_argument("--journal", help="journal path (default: <state dir>/drills/<run>/)")
    chaos.add_argument("--var", action="append", help="configuration value key=value (repeatable)")
    _add_confirmation(chaos)
    drill = add("drill", cmd_drill, "deploy, play every DR scenario, tear down, write evidence")
    drill.add_argument("--tags", help="only scenarios matching this tag expression")
    drill.add_argument("--report-dir", default="reports", help="where runs go (default reports/)")
    drill.add_argument("--junit", action="store_true", help="also write junit.xml for CI")
    drill.add_argument(
        "--chaos", action="store_true", help="also run the Chaos Toolkit drills in drills/"
    )
    drill.add_argument("--dry-run", action="store_true", help="print every change, make none")
    _add_confirmation(drill)


def _where(exc: BaseException) -> str:
    """``file.py:123`` of the innermost frame inside vaultdr (the place, never a value)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "vaultdr" in f.filename]
    if not frames:
        return "outside vaultdr"
    last = frames[-1]
    return f"{Path(last.filename).name}:{last.lineno}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # not when embedded by a host
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGHUP, _interrupt)
    try:
        return int(args.handler(args))
    except VaultdrError as exc:
        print(f"vaultdr {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        why = f" by {exc}" if isinstance(exc, Interrupted) else ""
        print(f"vaultdr {args.command}: interrupted{why}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `vaultdr status | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RecursionError as exc:
        print(f"vaultdr {args.command}: error: input nested too deeply", file=sys.stderr)
        if args.debug:
            traceback.print_exception(exc)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 -- a defect of vaultdr's: say where, never the message
        print(
            f"vaultdr {args.command}: internal error: {type(exc).__name__} at {_where(exc)}\n"
            "  hint: rerun with --debug for the traceback, and report it",
            file=sys.stderr,
        )
        if args.debug:
            traceback.print_exception(exc)
        return EXIT_HARNESS


if __name__ == "__main__":
    sys.exit(main())
