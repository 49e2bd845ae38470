"""The ``vaultdr`` command line: thin over the library, errors a user can act on.

Every command exits 0 on success; a :class:`VaultdrError` prints what failed
and what to do, and exits non-zero. Nothing here prints a token, key or secret
value: commands that hand one out (``sa-token``) print only that, to stdout,
for a pipe.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from vaultdr import __version__
from vaultdr.config import DEFAULT_STACK, Stack, load_stack
from vaultdr.envs.base import StackStatus
from vaultdr.envs.local.env import LocalEnvironment
from vaultdr.envs.local.state import resolve_state_dir
from vaultdr.errors import ConfigError, VaultdrError

Handler = Callable[[argparse.Namespace], int]


def _default_stack_file() -> Path:
    """``environments/local/stack.yaml`` here, or the one in the vaultdr checkout."""
    if DEFAULT_STACK.exists():
        return DEFAULT_STACK
    return Path(__file__).resolve().parent.parent / DEFAULT_STACK


def _stack(args: argparse.Namespace) -> tuple[Stack, str]:
    path = Path(args.config) if args.config else _default_stack_file()
    return load_stack(path), str(path.resolve())


def _environment(args: argparse.Namespace, *, with_stack: bool = False) -> LocalEnvironment:
    if args.env != "local":
        raise ConfigError(
            f"--env {args.env}: not available in this version",
            hint="use --env local (the default)",
        )
    state_dir = resolve_state_dir(args.state_dir)
    if with_stack:
        stack, path = _stack(args)
        return LocalEnvironment(state_dir, stack, stack_file=path)
    return LocalEnvironment(state_dir)


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
    print("healthy" if status.healthy else "NOT healthy")


def cmd_up(args: argparse.Namespace) -> int:
    env = _environment(args, with_stack=True)
    print(f"starting the local stack in {env.state_dir} ...", file=sys.stderr)
    status = env.up()
    _print_status(status)
    print('\npoint the CLI at it:  eval "$(vaultdr env)"', file=sys.stderr)
    return 0 if status.healthy else 1


def cmd_status(args: argparse.Namespace) -> int:
    status = _environment(args).status()
    if args.json:
        print(json.dumps(asdict(status) | {"healthy": status.healthy}, indent=2))
    else:
        _print_status(status)
    return 0 if status.healthy else 1


def cmd_down(args: argparse.Namespace) -> int:
    env = _environment(args)
    env.down(keep_data=args.keep_data)
    kept = f" (data kept in {env.state_dir})" if args.keep_data else ""
    print(f"stopped the local stack{kept}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    env = _environment(args)
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
    env = _environment(args)
    audiences = args.audience or None
    print(env.service_account_token(args.namespace, args.name, audiences=audiences, ttl=args.ttl))
    return 0


def cmd_configure(args: argparse.Namespace) -> int:
    env = _environment(args)
    if args.config:
        env.stack, env.stack_file = _stack(args)
    changes = env.configure(dry_run=args.dry_run)
    verb = "would make" if args.dry_run else "made"
    for change in changes:
        print(f"  {change}")
    print(f"configure {verb} {len(changes)} change(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultdr",
        description="DR drills and chaos testing for Vault/OpenBao.",
    )
    parser.add_argument("--version", action="version", version=f"vaultdr {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", default="local", choices=["local", "kind", "eks"])
    common.add_argument("--config", help="stack.yaml (default: environments/local/stack.yaml)")
    common.add_argument(
        "--state-dir", help="state directory (default: $VAULTDR_STATE_DIR or ./.vaultdr)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        cmd.set_defaults(handler=handler)
        return cmd

    add("up", cmd_up, "start the stack and wait until it is healthy")
    status = add("status", cmd_status, "show every node: initialized, sealed, active, voter")
    status.add_argument("--json", action="store_true")
    down = add("down", cmd_down, "stop every process of the stack")
    down.add_argument("--keep-data", action="store_true", help="keep the state directory")
    add("env", cmd_env, "print export lines for the bao/vault CLI")
    sa = add("sa-token", cmd_sa_token, "print a service-account token from the Kubernetes API")
    sa.add_argument("namespace")
    sa.add_argument("name")
    sa.add_argument("--audience", action="append", help="token audience (default: vault)")
    sa.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    configure = add("configure", cmd_configure, "apply stack.yaml's configuration (idempotent)")
    configure.add_argument("--dry-run", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except VaultdrError as exc:
        print(f"vaultdr {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vaultdr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
