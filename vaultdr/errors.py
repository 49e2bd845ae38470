"""One error hierarchy, each error saying what failed and what to do next, and the
exit-code table every command keeps to.

Every error raised to the CLI is a :class:`VaultdrError`; the CLI prints its
message and hint and exits with the error's code. Messages must never carry a
token, key or secret value: build them from names, paths and addresses only.

The exit codes, each with one meaning (the README prints this table):

==  ==========================================================================
0   success: the command did what it was asked; a drill or check passed
1   checked and not good: ``status`` found the stack unhealthy, a snapshot
    failed verification (the thing looked at is bad, not vaultdr)
2   bad input or usage: a flag, a stack.yaml, an experiment, a state file or a
    journal that cannot be used as given; nothing was changed
3   the stack or its state directory is not in the state the command needs
    (not up, already up, held by another vaultdr command, not vaultdr's own)
4   the harness or its environment failed: a process did not start, an API
    could not be reached, an unexpected error inside vaultdr
5   refused by a safety interlock (an unconfirmed destructive fault on a real
    cluster, a restore onto an initialized cluster); nothing was changed
6   a fault could not be injected, or a rollback left something in force
7   a drill ran and missed: an objective was not met or a scenario failed
8   evidence is missing, invalid, unsigned where a signature was asked for, or
    was tampered with
9   an optional tool that the command needs is not installed (the Allure CLI)
130 interrupted (Ctrl-C, SIGTERM, SIGHUP), after stopping what was started
==  ==========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_GOOD = 1
EXIT_BAD_INPUT = 2
EXIT_STATE = 3
EXIT_HARNESS = 4
EXIT_REFUSED = 5
EXIT_FAULT = 6
EXIT_DRILL_FAILED = 7
EXIT_EVIDENCE = 8
EXIT_TOOL_MISSING = 9
EXIT_INTERRUPTED = 130

#: (code, meaning) for the README and ``vaultdr --help``.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success; a drill or check passed"),
    (EXIT_NOT_GOOD, "checked and not good (unhealthy stack, snapshot failed verification)"),
    (EXIT_BAD_INPUT, "bad input or usage; nothing was changed"),
    (EXIT_STATE, "stack or state directory not in the needed state (not up, busy, not ours)"),
    (EXIT_HARNESS, "the harness or its environment failed"),
    (EXIT_REFUSED, "refused by a safety interlock; nothing was changed"),
    (EXIT_FAULT, "a fault could not be injected, or rollback left something in force"),
    (EXIT_DRILL_FAILED, "a drill ran and an objective was missed or a scenario failed"),
    (EXIT_EVIDENCE, "evidence missing, invalid or tampered with"),
    (EXIT_TOOL_MISSING, "an optional tool the command needs is not installed"),
    (EXIT_INTERRUPTED, "interrupted; what was started has been stopped"),
)


class VaultdrError(Exception):
    """A failure the user can act on: ``message`` says what, ``hint`` says what to do.

    A bare VaultdrError is the harness failing (an API that did not answer as it
    should); subclasses name the other codes.
    """

    exit_code = EXIT_HARNESS

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(VaultdrError):
    """stack.yaml (or another input file) is malformed or names an unknown field."""

    exit_code = EXIT_BAD_INPUT


class StackStateError(VaultdrError):
    """The stack is not in the state the command needs (already up, not up)."""

    exit_code = EXIT_STATE


class EnvironmentStartError(VaultdrError):
    """A part of the environment did not start or never became healthy."""

    exit_code = EXIT_HARNESS


class ToolMissing(EnvironmentStartError):
    """A command-line tool the command needs (kind, docker, helm) is not on PATH."""

    exit_code = EXIT_TOOL_MISSING


class Refused(VaultdrError):
    """A safety interlock refused the command; nothing was changed."""

    exit_code = EXIT_REFUSED


class FaultError(VaultdrError):
    """A fault could not be injected (or cannot apply here), or a rollback left something
    in force. ``results`` holds what each undo of a failed rollback did
    (:class:`vaultdr.faults.RolledBack`)."""

    exit_code = EXIT_FAULT
    results: tuple[object, ...] = ()


class VaultApiError(VaultdrError):
    """The Vault/OpenBao API answered with an error or could not be reached."""


class SealedError(VaultApiError):
    """The node answered 503: sealed, uninitialized, or in standby without a leader."""


class AwsError(VaultdrError):
    """The AWS API (real or emulated) refused or failed a call."""


class AccessDenied(AwsError):
    """IAM denied the call."""


class KubeApiError(VaultdrError):
    """The Kubernetes API (real or stand-in) refused or failed a call."""
