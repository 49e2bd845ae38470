"""The local AWS: moto with IAM enforcement on, bootstrapped for the stack.

:func:`start_moto` runs the emulator on loopback (moto's own server application behind
:mod:`vaultdr.envs.local.emulator`, which closes moto's control API to callers without
the stack's control token); :func:`bootstrap` creates what the stack
needs (the seal's KMS key, the snapshot bucket, and one IAM user per principal of
:mod:`vaultdr.principals`, each with the policy that module renders for the emulator) and
returns it as an :class:`AwsStack` for the state file. The kind environment's bootstrap
Job runs the same code (``vaultdr agent aws-bootstrap``, :mod:`vaultdr.envs.kube.aws_bootstrap`).
The revoke-KMS fault (an explicit IAM Deny on the seal's principal, which a restarted
node feels as a failed ``kms:Decrypt``) is :func:`vaultdr.envs.common.revoke_kms`, the
same on every environment.

How IAM enforcement is switched on: moto lets the first ``INITIAL_NO_AUTH_ACTION_COUNT``
AWS requests through unauthenticated (it counts every request that reaches an AWS
service handler, whatever its outcome, and nothing else: the emulator's readiness path
``/vaultdr-emulator/ready`` never reaches moto and does not count)
and checks signature and IAM policy on every request after that. The bootstrap makes
exactly :data:`UNAUTHENTICATED_CALLS` requests before it holds admin credentials
(CreateUser, PutUserPolicy, CreateAccessKey, sent with retries off so none is repeated)
and then proves enforcement is on by being refused with unknown credentials.

Hazards:

* moto keeps everything in memory. Stopping or restarting the emulator loses the KMS
  key, and with it every cluster sealed by that key: the raft data can never be
  unsealed again. Stop it only together with the stack it seals.
* Any AWS call that reaches the emulator before :func:`bootstrap` (a health probe that
  lists buckets, say) uses up the unauthenticated allowance; the bootstrap then fails
  and the emulator must be restarted. Probe readiness with :func:`moto_ready` only.
* moto's control API (``/moto-api/*``: ``data.json`` dumps every secret in plain text,
  ``reset`` wipes all state, ``reset-auth`` turns enforcement off) and its instance
  metadata answer only requests that carry the control token (header
  ``X-Vaultdr-Control-Token``); everyone else gets 403. The token is created at each
  :func:`start_moto` in ``<dir>/control-token`` (mode 0600): whoever can read that file
  (or the moto directory) holds the whole emulator. :func:`control_request` uses it.
* It listens on loopback only, and is an emulator, not a security boundary: the AWS
  APIs are moto's, with moto's IAM enforcement and its gaps (below).
* moto matches KMS and SSM policy statements only when ``Resource`` is ``"*"``, so
  those statements are scoped to ``*`` here; on real AWS they name the key ARN and the
  parameter path (:func:`vaultdr.principals.for_aws`). S3 does check resource ARNs, so
  bucket statements name the bucket.
* The process gets fake ``AWS_*`` credentials and empty credential/config files, so no
  real credential of the user's environment can leak into it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultdr import principals
from vaultdr.aws import Aws, AwsCredentials, AwsTarget
from vaultdr.envs.local.processes import (
    LOOPBACK,
    ProcessRecord,
    port_in_use,
    spawn,
    stop_pid,
    tail,
    wait_for,
)
from vaultdr.errors import AwsError, EnvironmentStartError, StackStateError
from vaultdr.principals import Principal

#: AWS requests the bootstrap makes before it has admin credentials:
#: iam:CreateUser, iam:PutUserPolicy, iam:CreateAccessKey (each exactly once).
UNAUTHENTICATED_CALLS = 3
#: How long start_moto waits for the emulator to answer.
START_TIMEOUT = 20.0
#: The emulator's control token, in start_moto's ``dir`` (mode 0600).
CONTROL_TOKEN_FILE = "control-token"

_BOOTSTRAP_CREDENTIALS = AwsCredentials("vaultdr-bootstrap", "not-checked-before-enforcement")
_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "moto-emulator-fake",
    "AWS_SECRET_ACCESS_KEY": "moto-emulator-fake",
    "AWS_SESSION_TOKEN": "",
    "AWS_SECURITY_TOKEN": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def endpoint_url(port: int) -> str:
    """The emulator's URL for a port."""
    return f"http://{LOOPBACK}:{port}"


# -- the process ---------------------------------------------------------------------------


def control_token_file(dir: Path) -> Path:
    """Where :func:`start_moto` keeps the emulator's control token (mode 0600)."""
    return dir / CONTROL_TOKEN_FILE


def _write_control_token(path: Path) -> None:
    """A fresh random token in ``path``, created 0600 (and made 0600 if it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its old mode otherwise
        handle.write(secrets.token_urlsafe(32))


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def moto_ready(url: str, *, timeout: float = 1.0) -> bool:
    """True when the emulator at ``url`` answers its readiness path.

    That path is served by :mod:`vaultdr.envs.local.emulator` itself and never reaches
    moto, so it does not count against the unauthenticated allowance (any AWS request
    would).
    """
    from vaultdr.envs.local.emulator import READY_PATH  # imports moto: only when needed

    try:
        with _opener().open(f"{url}{READY_PATH}", timeout=timeout) as answer:
            return int(answer.status) == 200 and answer.read(16) == b"ready"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def control_request(
    url: str,
    path: str,
    *,
    token_file: Path,
    method: str = "GET",
    data: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """Call moto's control API (``path``, e.g. ``/moto-api/data.json``) with the control
    token from ``token_file``; returns the HTTP status and the body.

    The body of ``/moto-api/data.json`` holds every secret of the emulator in plain text:
    never log or print it. Raises AwsError when the emulator cannot be reached.
    """
    from vaultdr.envs.local.emulator import CONTROL_TOKEN_HEADER  # imports moto: only when needed

    token = token_file.read_text(encoding="ascii").strip()
    request = urllib.request.Request(
        f"{url}{path}", data=data, method=method, headers={CONTROL_TOKEN_HEADER: token}
    )
    try:
        with _opener().open(request, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as refused:
        with refused:
            return int(refused.code), bytes(refused.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AwsError(
            f"cannot reach the AWS emulator's control API at {url}: {type(exc).__name__}",
            hint="is the emulator running? see `vaultdr status`",
        ) from None


def start_moto(
    dir: Path,
    *,
    port: int,
    log: Path,
    python: str | None = None,
) -> ProcessRecord:
    """Start the emulator (moto behind :mod:`vaultdr.envs.local.emulator`) on
    127.0.0.1:``port`` with IAM enforcement armed and its control API closed.

    Enforcement starts after :data:`UNAUTHENTICATED_CALLS` requests, i.e. once
    :func:`bootstrap` has run. ``dir`` is the process's working directory; a fresh
    control token is written to :func:`control_token_file` (``dir/control-token``, 0600)
    at every start. ``python`` is the interpreter that runs the emulator module (default:
    this one, whose environment has moto[server]). Waits up to
    :data:`START_TIMEOUT` seconds for it to answer; raises EnvironmentStartError (with
    the log's tail) when the port is taken or the server does not come up.
    """
    if port_in_use(port):
        raise EnvironmentStartError(
            f"cannot start the AWS emulator: port {port} on {LOOPBACK} is already in use",
            hint="stop what listens there, or let vaultdr pick a free port",
        )
    from vaultdr.envs.local.emulator import MODULE  # imports moto: only when needed

    dir.mkdir(parents=True, exist_ok=True)
    token_file = control_token_file(dir)
    _write_control_token(token_file)
    argv = [python or sys.executable, "-m", MODULE, "-H", LOOPBACK, "-p", str(port)]
    argv += ["--control-token-file", str(token_file)]
    env = {**_FAKE_ENV, "INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED_CALLS)}
    try:
        proc, record = spawn("moto", argv, log=log, env=env, cwd=dir)
    except OSError as exc:
        raise EnvironmentStartError(
            f"cannot start the AWS emulator ({argv[0]}): {exc.strerror or exc}",
            hint="check that moto[server] is installed in this environment",
        ) from None
    return _await_moto(proc, record, endpoint_url(port), log=log)


def _await_moto(
    proc: subprocess.Popen[bytes], record: ProcessRecord, url: str, *, log: Path
) -> ProcessRecord:
    """``record`` once the emulator at ``url`` answers and stays up; else stop it and raise
    EnvironmentStartError with the log's tail."""
    ready = wait_for(
        lambda: proc.poll() is None and moto_ready(url), timeout=START_TIMEOUT, interval=0.1
    )
    # A server that died at once may have lost the port to another listener: insist it lives.
    if ready and not wait_for(lambda: proc.poll() is not None, timeout=0.3, interval=0.05):
        return record
    exited = proc.poll()
    stop_pid(record.pid, record.start_time, grace=2.0)
    state = f"exited with status {exited}" if exited is not None else "did not answer"
    raise EnvironmentStartError(
        f"the AWS emulator on {url} {state} within {START_TIMEOUT:.0f}s; log {log}:\n{tail(log)}",
        hint="read the log above; a port taken in the meantime shows as 'Address already in use'",
    )


# -- the bootstrap -------------------------------------------------------------------------

#: Called with each principal's access key as soon as it exists (the admin's first), so a
#: caller that keeps them elsewhere (the kind Job's Secrets) never loses one.
KeepCredentials = Callable[[Principal, AwsCredentials], None]


@dataclass(frozen=True)
class AwsStack:
    """What the bootstrap created: enough for every part of the stack to reach AWS.

    One access key per principal of :mod:`vaultdr.principals` (``admin``, ``seal``,
    ``snapshot``, ``restore``, ``configure``) and the IAM user it belongs to. ``repr``
    hides every secret (the credentials' own repr does); ``to_dict`` does not: the state
    file it goes to must be private to the user.
    """

    endpoint_url: str
    region: str
    admin: AwsCredentials
    seal: AwsCredentials
    seal_user: str
    kms_key_id: str
    kms_key_arn: str
    bucket: str
    snapshot: AwsCredentials
    snapshot_user: str
    restore: AwsCredentials
    restore_user: str
    configure: AwsCredentials
    configure_user: str

    def target(self, credentials: AwsCredentials) -> AwsTarget:
        return AwsTarget(
            region=self.region, endpoint_url=self.endpoint_url, credentials=credentials
        )

    def credentials(self, principal: str) -> AwsCredentials:
        """The access key of ``principal`` (a name of :data:`vaultdr.principals.PRINCIPALS`)."""
        found: AwsCredentials = getattr(self, principals.principal(principal).name)
        return found

    def aws(self, principal: str) -> Aws:
        """An Aws client acting as ``principal``."""
        return Aws(self.target(self.credentials(principal)))

    def admin_aws(self) -> Aws:
        """An Aws client with the admin credentials (for faults, SSM, checks)."""
        return self.aws("admin")

    def seal_aws(self) -> Aws:
        """An Aws client acting as the seal."""
        return self.aws("seal")

    def snapshot_aws(self) -> Aws:
        """An Aws client acting as the snapshot agent."""
        return self.aws("snapshot")

    def restore_aws(self) -> Aws:
        """An Aws client acting as the restore watcher."""
        return self.aws("restore")

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "admin": self.admin.to_dict(),
            "seal": self.seal.to_dict(),
            "seal_user": self.seal_user,
            "kms_key_id": self.kms_key_id,
            "kms_key_arn": self.kms_key_arn,
            "bucket": self.bucket,
            "snapshot": self.snapshot.to_dict(),
            "snapshot_user": self.snapshot_user,
            "restore": self.restore.to_dict(),
            "restore_user": self.restore_user,
            "configure": self.configure.to_dict(),
            "configure_user": self.configure_user,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AwsStack:
        """The stack of a state file. One written before a principal existed lacks it:
        StackStateError (state files are per stack, and ``up`` writes a new one)."""
        try:
            return cls._from_dict(data)
        except KeyError as missing:
            raise StackStateError(
                f"the stack's AWS state has no {missing.args[0]!r} (written by an older vaultdr)",
                hint="recreate the stack: vaultdr down && vaultdr up",
            ) from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> AwsStack:
        def key(name: str) -> AwsCredentials:
            return AwsCredentials.from_dict(data[name])

        return cls(
            endpoint_url=str(data["endpoint_url"]),
            region=str(data["region"]),
            admin=key("admin"),
            seal=key("seal"),
            seal_user=str(data["seal_user"]),
            kms_key_id=str(data["kms_key_id"]),
            kms_key_arn=str(data["kms_key_arn"]),
            bucket=str(data["bucket"]),
            snapshot=key("snapshot"),
            snapshot_user=str(data["snapshot_user"]),
            restore=key("restore"),
            restore_user=str(data["restore_user"]),
            configure=key("configure"),
            configure_user=str(data["configure_user"]),
        )


def create_admin(url: str, region: str) -> AwsCredentials:
    """Create ``vaultdr-admin`` (its policy allows ``*``) and its access key with the
    emulator's unauthenticated allowance: exactly :data:`UNAUTHENTICATED_CALLS` requests,
    none retried.

    Raises EnvironmentStartError when the allowance is already used up (someone called
    the emulator first, or it was bootstrapped already).
    """
    admin, user = principals.ADMIN, principals.ADMIN_USER
    bootstrap_aws = Aws(AwsTarget(region, url, _BOOTSTRAP_CREDENTIALS), max_attempts=1)
    try:
        bootstrap_aws.create_user(user)
        bootstrap_aws.put_user_policy(user, admin.policy_name, principals.for_emulator(admin))
        return bootstrap_aws.create_access_key(user)
    except AwsError as exc:
        raise EnvironmentStartError(
            f"cannot bootstrap the AWS emulator at {url}: {exc.message}",
            hint="its unauthenticated allowance was used up or it was bootstrapped already: "
            "restart it (vaultdr down && vaultdr up)",
        ) from None


def require_enforcement(url: str, region: str) -> None:
    """Unknown credentials must be refused now; EnvironmentStartError if they are not."""
    try:
        Aws(AwsTarget(region, url, _BOOTSTRAP_CREDENTIALS), max_attempts=1).caller_identity()
    except AwsError:
        return
    raise EnvironmentStartError(
        f"the AWS emulator at {url} still accepts unknown credentials after the bootstrap",
        hint="IAM enforcement is off: was INITIAL_NO_AUTH_ACTION_COUNT overridden?",
    )


def create_principal(admin: Aws, who: Principal, *, cluster: str, bucket: str) -> AwsCredentials:
    """IAM user ``who.user_name(cluster)``, its inline policy from
    :func:`vaultdr.principals.for_emulator`, and its access key."""
    user = who.user_name(cluster)
    admin.create_user(user)
    admin.put_user_policy(user, who.policy_name, principals.for_emulator(who, bucket=bucket))
    return admin.create_access_key(user)


def provision_cluster(
    admin: Aws, *, cluster: str, bucket: str, keep: KeepCredentials | None = None
) -> AwsStack:
    """With admin credentials, create for ``cluster`` the seal's KMS key and alias, the
    snapshot bucket (versioned) and one IAM user per principal of the stack
    (:data:`vaultdr.principals.STACK_PRINCIPALS`); ``keep`` gets each new access key."""
    target = admin.target
    if target.endpoint_url is None or target.credentials is None:
        raise ValueError("provision_cluster needs an emulator target with explicit credentials")
    key_id = admin.create_key(f"vaultdr {cluster} seal")
    admin.create_alias(principals.seal_alias(cluster), key_id)
    key_arn = str(admin.describe_key(key_id)["Arn"])
    admin.create_bucket(bucket, versioning=True)
    keys: dict[str, AwsCredentials] = {}
    for who in principals.STACK_PRINCIPALS:
        keys[who.name] = create_principal(admin, who, cluster=cluster, bucket=bucket)
        if keep is not None:
            keep(who, keys[who.name])
    return AwsStack(
        endpoint_url=target.endpoint_url,
        region=target.region,
        admin=target.credentials,
        seal=keys["seal"],
        seal_user=principals.SEAL.user_name(cluster),
        kms_key_id=key_id,
        kms_key_arn=key_arn,
        bucket=bucket,
        snapshot=keys["snapshot"],
        snapshot_user=principals.SNAPSHOT.user_name(cluster),
        restore=keys["restore"],
        restore_user=principals.RESTORE.user_name(cluster),
        configure=keys["configure"],
        configure_user=principals.CONFIGURE.user_name(cluster),
    )


def bootstrap(
    endpoint_url: str,
    region: str,
    *,
    cluster: str,
    bucket: str,
    keep: KeepCredentials | None = None,
) -> AwsStack:
    """Bootstrap a freshly started emulator for one cluster (see the module docstring):
    the admin, then proof that enforcement is on, then :func:`provision_cluster`.

    ``keep`` gets each access key as soon as it exists, the admin's first (before
    anything else can fail). Nothing goes into SSM here: the caller stores break-glass
    material under ``/vaultdr/<cluster>/...`` with the admin credentials.
    """
    admin = create_admin(endpoint_url, region)
    if keep is not None:
        keep(principals.ADMIN, admin)
    require_enforcement(endpoint_url, region)
    return provision_cluster(
        Aws(AwsTarget(region, endpoint_url, admin)), cluster=cluster, bucket=bucket, keep=keep
    )
