"""One error hierarchy, each error saying what failed and what to do next.

Every error raised to the CLI is a :class:`VaultdrError`; the CLI prints its
message and hint and exits non-zero. Messages must never carry a token, key or
secret value: build them from names, paths and addresses only.
"""

from __future__ import annotations


class VaultdrError(Exception):
    """A failure the user can act on: ``message`` says what, ``hint`` says what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(VaultdrError):
    """stack.yaml (or another input file) is malformed or names an unknown field."""

    exit_code = 2


class StackStateError(VaultdrError):
    """The stack is not in the state the command needs (already up, not up)."""

    exit_code = 3


class EnvironmentStartError(VaultdrError):
    """A part of the environment did not start or never became healthy."""

    exit_code = 4


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
