"""What a timeline is made of: events, the recovery they measure, and the checks' settings.

See :mod:`vaultdr.timeline` for what each event kind and recovery phase means.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

DEGRADED = {
    "node-unreachable",
    "node-sealed",
    "node-uninitialized",
    "leader-lost",
    "read-failed",
    "login-failed",
    "write-failed",
}
PHASES = (
    "detected",
    "leader",
    "unsealed",
    "restored",
    "serving",
    "auth_ready",
    "writing",
    "healthy",
)
#: The checks apps feel: (phase, its success event, its failure event, the check's key).
APP_CHECKS = (
    ("serving", "read-ok", "read-failed", "read"),
    ("auth_ready", "login-ok", "login-failed", "login"),
    ("writing", "write-ok", "write-failed", "write"),
)
#: How long a phase must stay up before a wait concludes it is back (stack.yaml's default).
STABLE_FOR = 3.0


def _wall() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Event:
    mono: float
    wall: str
    kind: str
    node: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    recorded: float = 0.0  # monotonic time the event was appended (detection latency)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoginCheck:
    namespace: str
    service_account: str
    role: str
    mount: str = "secret"
    path: str = "apps/web/config"
    audience: str = "vault"
    auth_mount: str = "kubernetes"


@dataclass
class Recovery:
    fault: str | None
    fault_wall: str | None
    detected: float | None = None
    leader: float | None = None
    unsealed: float | None = None
    restored: float | None = None
    serving: float | None = None
    auth_ready: float | None = None
    writing: float | None = None
    healthy: float | None = None
    interrupted: bool = False
    required: tuple[str, ...] = ("serving", "auth_ready", "healthy")
    #: Failures after a check had come back: {"check", "failed_at", "back_at", "seconds"}.
    flaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rto(self) -> float | None:
        """The later of reads, logins and writes back (and staying back)."""
        parts = [self.serving, self.auth_ready, self.writing]
        known = [p for p in parts if p is not None]
        return max(known) if known else None

    @property
    def recovered(self) -> bool:
        return all(getattr(self, name) is not None for name in self.required)

    @property
    def missing(self) -> list[str]:
        """The required phases not reached (yet)."""
        return [name for name in self.required if getattr(self, name) is None]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["required"] = list(self.required)
        data["flaps"] = [dict(f) for f in self.flaps]
        data["rto"] = self.rto
        data["recovered"] = self.recovered
        return data


Source = Callable[[], list[Event]]
