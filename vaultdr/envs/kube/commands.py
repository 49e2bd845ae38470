"""``vaultdr agent snapshot|restore|configure|aws-bootstrap|health`` (in pods) and ``vaultdr kube plan``.

:func:`register` adds the subcommands to the CLI's subparsers.

``agent`` commands run inside the cluster (see :mod:`vaultdr.envs.kube.agents`):
``snapshot`` and ``restore`` loop until SIGTERM; ``configure`` runs once and exits 0
on success; ``aws-bootstrap`` is the kind AWS emulator's bootstrap Job
(:mod:`vaultdr.envs.kube.aws_bootstrap`), configured by its environment, not by a
stack file, and run once per emulator; ``health`` is the agents' exec probe (exit 0 while
the agent's heartbeat is fresh, see :func:`agent_health`). ``kube values --env eks --terraform-output FILE``
fills the eks chart values from ``terraform output -json`` into the state directory
(:mod:`vaultdr.envs.kube.terraform`); ``up --terraform-output FILE`` does the same first.
``kube plan`` prints every step ``vaultdr up`` (or ``down``) would run
for ``--env kind|eks``, command lines included, and runs nothing. For ``down`` on eks it
also says (on stderr) what ``down`` needs not to be refused: the namespace's opt-in
annotation and the confirmation flag (:data:`~vaultdr.envs.kube.env.CONFIRM_FLAG`, the
same one ``fault``, ``chaos`` and ``drill`` take) or its environment variable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from vaultdr.config import load_stack
from vaultdr.envs.kube import agents, deploy
from vaultdr.envs.kube.aws_bootstrap import run_aws_bootstrap
from vaultdr.envs.kube.clusters import kube_environment_for
from vaultdr.envs.kube.env import ALLOW_ANNOTATION, CONFIRM_ENV_VAR, CONFIRM_FLAG
from vaultdr.errors import ConfigError

__all__ = [
    "add_terraform_output",
    "agent_health",
    "cmd_agent",
    "cmd_kube",
    "cmd_kube_plan",
    "cmd_kube_values",
    "down_confirmation_note",
    "fill_terraform_values",
    "register",
]

Handler = Callable[[argparse.Namespace], int]


def cmd_agent(args: argparse.Namespace) -> int:

    if args.agent == "health":
        return agent_health(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.agent == "aws-bootstrap":
        return run_aws_bootstrap()
    stack = load_stack(Path(args.config or "/etc/vaultdr/stack.yaml"))
    if args.agent == "snapshot":
        return agents.run_snapshot(stack)
    if args.agent == "restore":
        return agents.run_restore_watcher(stack)
    return agents.run_configure(stack, timeout=args.timeout)


def agent_health(args: argparse.Namespace) -> int:
    """``vaultdr agent health --max-age S``: the agents' exec probe. Exit 0 when the agent's
    heartbeat (:class:`~vaultdr.envs.kube.agents.Heartbeat`) is fresh, 1 when it is stale
    or missing; one line on stdout either way (the kubelet keeps it in the pod's events)."""
    if args.max_age <= 0:
        raise ConfigError(f"--max-age must be positive (it is {args.max_age:g})")
    path = (
        Path(args.heartbeat) if args.heartbeat else agents.agent_work_dir() / agents.HEARTBEAT_FILE
    )
    code, line = agents.check_health(path, max_age=args.max_age)
    print(line)
    return code


def cmd_kube(args: argparse.Namespace) -> int:
    """``vaultdr kube plan up|down`` or ``vaultdr kube values --terraform-output FILE``."""
    if args.verb == "values":
        return cmd_kube_values(args)
    return cmd_kube_plan(args)


def cmd_kube_values(args: argparse.Namespace) -> int:
    """Fill the eks chart values from ``terraform output -json`` into the state directory."""
    if args.env != "eks":
        raise ConfigError(
            f"kube values is for --env eks (the values of --env {args.env} need no filling)",
            hint="vaultdr kube values --env eks --terraform-output FILE",
        )
    if not args.terraform_output:
        raise ConfigError(
            "kube values needs --terraform-output FILE (`terraform output -json`, - for stdin)",
            hint="terraform -chdir=environments/eks/terraform output -json | "
            "vaultdr kube values --env eks --terraform-output -",
        )
    fill_terraform_values(args)
    return 0


def fill_terraform_values(args: argparse.Namespace) -> None:
    """What ``kube values`` and ``up --terraform-output`` do: fill, keep, and say what."""
    if args.env != "eks":
        raise ConfigError(
            f"--terraform-output is for --env eks, not --env {args.env}",
            hint="kind's values are complete as shipped",
        )
    # Without the outputs kept before: these replace them, even a corrupt copy.
    env = kube_environment_for(
        args.env, config=args.config, state_dir=args.state_dir, dry_run=True, kept_outputs=False
    )
    for line in deploy.fill_values_from_terraform(env, args.terraform_output):
        print(line, file=sys.stderr)


def cmd_kube_plan(args: argparse.Namespace) -> int:

    if args.env not in ("kind", "eks"):
        raise ConfigError("kube plan is for --env kind or --env eks")
    if args.action is None:
        raise ConfigError("kube plan needs what to plan: up or down", hint="vaultdr kube plan up")
    env = kube_environment_for(args.env, config=args.config, state_dir=args.state_dir, dry_run=True)
    lines = env.plan_up() if args.action == "up" else env.plan_down(keep_data=args.keep_data)
    for line in lines:
        print(line)
    if args.action == "down" and args.env == "eks":
        print(down_confirmation_note(env.namespace), file=sys.stderr)
    print(f"dry run: {args.action} for --env {args.env} was not run", file=sys.stderr)
    return 0


def down_confirmation_note(namespace: str) -> str:
    """What ``vaultdr down --env eks`` needs, as the refusal of an unconfirmed one says it."""

    return (
        f"without the dry run, `vaultdr down --env eks` is refused unless namespace {namespace} "
        f'carries {ALLOW_ANNOTATION}="true" and the command names the current kube context: '
        f"{CONFIRM_FLAG} CONTEXT (or {CONFIRM_ENV_VAR}=CONTEXT)"
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``agent`` and ``kube`` to the CLI."""
    agent = sub.add_parser(
        "agent",
        parents=[common],
        help="run an agent inside the cluster (the ops chart's pods, the kind emulator's Job)",
        description="Run the snapshot agent, the restore watcher or configure inside the "
        "cluster, or bootstrap the kind AWS emulator (aws-bootstrap, once per emulator).",
    )
    agent.add_argument(
        "agent", choices=["snapshot", "restore", "configure", "aws-bootstrap", "health"]
    )
    agent.add_argument(
        "--timeout", type=float, default=600.0, help="configure: give up after this many seconds"
    )
    agent.add_argument(
        "--max-age",
        type=float,
        default=600.0,
        help="health: unhealthy when the agent made no progress for this many seconds",
    )
    agent.add_argument(
        "--heartbeat",
        default=None,
        help="health: the heartbeat file (default $VAULTDR_STATE_DIR/heartbeat.json)",
    )
    agent.set_defaults(handler=cmd_agent)
    kube = sub.add_parser(
        "kube",
        parents=[common],
        help="print what `up`/`down` would run on kind/eks; fill the eks values from Terraform",
        description="`kube plan up|down`: print every step `vaultdr up` or `down` would run "
        "for --env kind|eks. `kube values --env eks --terraform-output FILE`: fill the eks "
        "chart values from `terraform output -json` (FILE, or - for stdin) into the state "
        "directory, where `up --env eks` takes them from.",
    )
    kube.add_argument("verb", choices=["plan", "values"])
    kube.add_argument("action", nargs="?", choices=["up", "down"], help="plan: up or down")
    kube.add_argument("--keep-data", action="store_true", help="down: keep the PVCs")
    add_terraform_output(kube)
    kube.set_defaults(handler=cmd_kube)


def add_terraform_output(parser: argparse.ArgumentParser) -> None:
    """``--terraform-output FILE``, for ``kube values`` and ``up --env eks``."""
    parser.add_argument(
        "--terraform-output",
        metavar="FILE",
        help="eks: `terraform output -json` (a file, - for stdin) to fill the chart values "
        "from; kept in the state directory",
    )
