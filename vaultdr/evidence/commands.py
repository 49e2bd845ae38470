"""``vaultdr report`` and ``vaultdr evidence verify``: rebuild and check a run's evidence.

:func:`register` adds both subcommands to the CLI's subparsers; ``python -m
vaultdr.evidence.commands`` runs them on their own.

Hazard: ``MANIFEST.sha256`` is a seal. ``report`` re-seals a run only when it
still matches its manifest apart from the files ``report`` regenerates itself
(``report.html``, and ``allure-report/`` with ``--allure``), and only after it
has regenerated them. Anything else that changed, went missing or was added is
named and the run is left exactly as it was: tampered evidence is never
re-sealed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vaultdr.errors import VaultdrError
from vaultdr.evidence.allure import allure_command, render_allure
from vaultdr.evidence.index import write_index
from vaultdr.evidence.manifest import MANIFEST, seal_run, verify_manifest
from vaultdr.evidence.report import REPORT, write_report
from vaultdr.evidence.schema import EvidenceError, load_evidence

__all__ = ["cmd_evidence", "cmd_report", "main", "register"]

ALLURE_REPORT = "allure-report"

Handler = Callable[[argparse.Namespace], int]


def _run_dir(value: str) -> Path:
    run_dir = Path(value)
    if not run_dir.is_dir():
        raise EvidenceError(
            f"{run_dir} is not a directory",
            hint="pass a run directory, e.g. reports/<run-id> (written by `vaultdr drill`)",
        )
    return run_dir


def _manifest_problems(run_dir: Path, *, ignore: frozenset[str] = frozenset()) -> list[str]:
    try:
        return verify_manifest(run_dir, ignore=ignore)
    except UnicodeDecodeError:
        return [f"{MANIFEST} is not text (not a sha256sum manifest)"]


def _regenerated(run_dir: Path, *, allure: bool) -> frozenset[str]:
    """The files ``report`` writes anew, as the manifest and the disk name them."""
    names = {REPORT}
    if allure:
        prefix = f"{ALLURE_REPORT}/"
        try:
            lines = (run_dir / MANIFEST).read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        names |= {
            n for _d, _s, n in (line.partition("  ") for line in lines) if n.startswith(prefix)
        }
        output = run_dir / ALLURE_REPORT
        if output.is_dir():
            names |= {f"{prefix}{p.relative_to(output).as_posix()}" for p in output.rglob("*")}
    return frozenset(names)


def cmd_report(args: argparse.Namespace) -> int:
    """``vaultdr report DIR [--allure]``: report.html (and Allure HTML) from evidence.json."""
    run_dir = _run_dir(args.dir)
    if args.allure:
        allure_command()  # no Allure CLI: say so before anything is touched
    sealed = (run_dir / MANIFEST).exists()
    if sealed:
        problems = _manifest_problems(run_dir, ignore=_regenerated(run_dir, allure=args.allure))
        if problems:
            raise EvidenceError(
                f"{run_dir} does not match its {MANIFEST}: " + "; ".join(problems),
                hint="the evidence changed after the drill sealed it, so it is not re-sealed; "
                "`vaultdr evidence verify DIR` lists every problem",
            )
    load_evidence(run_dir)  # evidence that does not validate: nothing is touched
    try:
        if args.allure:
            shutil.rmtree(run_dir / ALLURE_REPORT, ignore_errors=True)  # no stale pages survive
            print(f"wrote {render_allure(run_dir)}")
    finally:  # even when Allure failed: the page, and the seal over what is there now
        _rebuild(run_dir, seal=sealed)
    return 0


def _rebuild(run_dir: Path, *, seal: bool) -> None:
    """report.html again, sealed with the rest when the run was sealed; then the index."""
    if seal:  # verified before; what was written since is our own output
        manifest = seal_run(run_dir)
        print(f"wrote {run_dir / REPORT}")
        print(f"sealed {manifest}")
    else:
        print(f"wrote {write_report(run_dir)}")
    print(f"wrote {write_index(run_dir.resolve().parent)}")


def cmd_evidence(args: argparse.Namespace) -> int:
    """``vaultdr evidence verify DIR``: every file against MANIFEST.sha256, evidence.json valid."""
    run_dir = _run_dir(args.dir)
    problems = _manifest_problems(run_dir)
    try:
        load_evidence(run_dir)
    except EvidenceError as exc:
        problems.append(exc.message)
    if problems:
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        raise EvidenceError(
            f"the evidence in {run_dir} does NOT verify ({len(problems)} problem(s))",
            hint="it changed after the drill sealed it; keep it as found and rerun the drill "
            "for evidence you can submit",
        )
    count = len((run_dir / MANIFEST).read_text().splitlines())
    print(f"OK: {count} files in {run_dir} match {MANIFEST}")
    return 0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add ``report`` and ``evidence`` to the CLI's subparsers, each with ``handler`` set."""

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        cmd.set_defaults(handler=handler)
        return cmd

    report = add("report", cmd_report, "rebuild a run's report.html (and the index) from evidence")
    report.add_argument("dir", help="a run directory, e.g. reports/<run-id>")
    report.add_argument(
        "--allure", action="store_true", help="also render Allure HTML (needs the npm allure CLI)"
    )
    evidence = add("evidence", cmd_evidence, "check a run's evidence against its manifest")
    evidence.add_argument("action", choices=["verify"])
    evidence.add_argument("dir", help="a run directory, e.g. reports/<run-id>")


def main(argv: Sequence[str] | None = None) -> int:
    """The two commands without the rest of the CLI: ``python -m vaultdr.evidence.commands``."""
    parser = argparse.ArgumentParser(prog="vaultdr", description="vaultdr evidence commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except VaultdrError as exc:
        print(f"vaultdr {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
