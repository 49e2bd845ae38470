"""The one wrapper around boto3: IAM, KMS, S3, SSM and STS calls, with errors vaultdr understands.

Every other module talks to AWS (real, or the local moto emulator) through :class:`Aws`;
this is the only module that imports ``boto3``/``botocore``. Each method is one AWS API
call (or one paginated listing), named ``verb_noun``, and its docstring names the API.

Errors: a refused or failed call raises :class:`~vaultdr.errors.AccessDenied` when IAM
denied it and :class:`~vaultdr.errors.AwsError` otherwise, naming the service, the
operation and the resource. An endpoint that does not answer fails within seconds
(short connect/read timeouts, few retries) instead of hanging a drill.

Hazards:

* Messages never carry a secret value. Calls whose parameters carry one (SSM
  ``PutParameter``, KMS ``Encrypt``/``Decrypt``, ``CreateAccessKey``'s answer) drop the
  AWS-provided message, which may echo parameters, and do not chain the original
  exception, whose text may hold them.
* ``AwsTarget.credentials = None`` means boto3's default chain (environment, profile,
  instance role): right for real AWS, wrong for the emulator, which is why the local
  environment always passes explicit credentials.
* A secret read from SSM is returned as ``str``: the caller must keep it out of logs,
  reports and exceptions.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

import boto3  # type: ignore[import-untyped, unused-ignore]
from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from vaultdr.errors import AccessDenied, AwsError

T = TypeVar("T")

#: Error codes that mean "IAM (or a key/bucket policy) said no".
_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "Forbidden",
        "403",  # HEAD requests have no body, so S3 reports only the status
    }
)
#: Error codes that mean "these credentials are unknown or the signature is wrong".
_BAD_CREDENTIALS_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
    }
)
_ENDPOINT_HINT = "is the AWS endpoint up? (vaultdr status)"


def _error_fields(exc: Any) -> tuple[str, str]:
    """The error code and message of a ClientError.

    moto answers some JSON-protocol services (KMS, SSM) with an XML error body that
    botocore cannot parse; it then reports the HTTP status as the code and the raw body
    as the message. Dig the real code and message out of that body.
    """
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "") or "Unknown")
    message = str(error.get("Message", "") or "").strip()
    if message.startswith("<"):
        inner_code = re.search(r"<Code>([^<]*)</Code>", message)
        inner_message = re.search(r"<Message>([^<]*)</Message>", message)
        if inner_code:
            code = inner_code.group(1)
        message = inner_message.group(1).strip() if inner_message else ""
    return code, message


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


class _Absent(Exception):
    """Internal: the call failed only because its subject does not exist."""


@dataclass(frozen=True)
class AwsCredentials:
    """A static access key pair. ``repr`` shows the key id only, never the secret."""

    access_key_id: str
    secret_access_key: str = field(repr=False)

    def to_dict(self) -> dict[str, str]:
        """For a state file (which must be private to the user: it holds the secret)."""
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AwsCredentials:
        return cls(
            access_key_id=str(data["access_key_id"]),
            secret_access_key=str(data["secret_access_key"]),
        )


@dataclass(frozen=True)
class AwsTarget:
    """Where to send AWS calls and as whom.

    ``endpoint_url`` None means the real AWS endpoints; ``credentials`` None means
    boto3's default credential chain (for real AWS only).
    """

    region: str
    endpoint_url: str | None = None
    credentials: AwsCredentials | None = None


class Aws:
    """AWS API calls for one target; clients are created on first use and reused (thread-safe).

    ``connect_timeout``/``read_timeout`` are per socket operation; ``max_attempts`` counts
    the first try (1 = never retry, which a caller that must know exactly how many
    requests reached the server uses).
    """

    def __init__(
        self,
        target: AwsTarget,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        self.target = target
        options: dict[str, Any] = {}
        if target.endpoint_url and _is_loopback(target.endpoint_url):
            # Never send the emulator's traffic through an HTTP(S)_PROXY from the environment.
            options["proxies"] = {}
        self._config = Config(
            region_name=target.region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            # Path-style addressing: an emulator on 127.0.0.1:PORT has no DNS for
            # virtual-hosted bucket names.
            s3={"addressing_style": "path" if target.endpoint_url else "auto"},
            **options,
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._session: Any = None

    def __repr__(self) -> str:
        creds = self.target.credentials
        who = creds.access_key_id if creds else "default chain"
        where = self.target.endpoint_url or "AWS"
        return f"Aws(region={self.target.region!r}, endpoint={where!r}, as={who!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                try:
                    if self._session is None:
                        creds = self.target.credentials
                        self._session = boto3.session.Session(
                            aws_access_key_id=creds.access_key_id if creds else None,
                            aws_secret_access_key=creds.secret_access_key if creds else None,
                            region_name=self.target.region,
                        )
                    client = self._session.client(
                        service, endpoint_url=self.target.endpoint_url, config=self._config
                    )
                except BotoCoreError as exc:
                    raise AwsError(
                        f"cannot create the AWS {service} client: {type(exc).__name__}",
                        hint="check the AWS region and profile configuration",
                    ) from None
                self._clients[service] = client
            return client

    def _call(
        self,
        service: str,
        operation: str,
        resource: str,
        call: Callable[[], T],
        *,
        sensitive: bool = False,
        absent: frozenset[str] = frozenset(),
    ) -> T:
        """Run ``call`` and translate botocore's errors into vaultdr's.

        ``sensitive``: the call carries a secret in its parameters or answer, so the
        AWS message (which may echo parameters) is dropped and the cause not chained.
        ``absent``: error codes meaning "no such thing", raised as :class:`_Absent` for
        the caller to turn into None/False/no-op.
        """
        what = f"{service} {operation} on {resource}"
        try:
            return call()
        except ClientError as exc:
            code, detail = _error_fields(exc)
            if code in absent:
                raise _Absent(code) from None
            detail = "" if sensitive else detail
            message = f"{what} failed: {code}" + (f": {detail}" if detail else "")
            cause = None if sensitive else exc
            if code in _ACCESS_DENIED_CODES or code.startswith("AccessDenied"):
                raise AccessDenied(
                    message, hint="the caller's IAM policy does not allow this action"
                ) from cause
            if code in _BAD_CREDENTIALS_CODES:
                raise AwsError(
                    message, hint="the credentials are unknown to this AWS endpoint"
                ) from cause
            raise AwsError(message) from cause
        except (
            EndpointConnectionError,
            ConnectTimeoutError,
            ReadTimeoutError,
            ConnectionClosedError,
        ) as exc:
            where = self.target.endpoint_url or f"AWS {self.target.region}"
            raise AwsError(
                f"{what} failed: cannot reach {where} ({type(exc).__name__})",
                hint=_ENDPOINT_HINT,
            ) from None
        except NoCredentialsError:
            raise AwsError(
                f"{what} failed: no AWS credentials found",
                hint="configure credentials (environment, profile or instance role)",
            ) from None
        except BotoCoreError as exc:
            # ParamValidationError and friends may quote parameter values: name the type only.
            raise AwsError(f"{what} failed: {type(exc).__name__}") from None

    def _pages(
        self, service: str, operation: str, resource: str, method: str, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        paginator = self._client(service).get_paginator(method)
        pages = iter(paginator.paginate(**kwargs))
        while True:
            page = self._call(service, operation, resource, lambda: next(pages, None))
            if page is None:
                return
            yield page

    # -- IAM ------------------------------------------------------------------------------

    def create_user(self, user: str) -> str:
        """IAM ``CreateUser``; returns the user's ARN."""
        answer = self._call(
            "iam", "CreateUser", user, lambda: self._client("iam").create_user(UserName=user)
        )
        return str(answer["User"]["Arn"])

    def create_access_key(self, user: str) -> AwsCredentials:
        """IAM ``CreateAccessKey``; the secret exists only in the returned value."""
        answer = self._call(
            "iam",
            "CreateAccessKey",
            user,
            lambda: self._client("iam").create_access_key(UserName=user),
            sensitive=True,
        )
        key = answer["AccessKey"]
        return AwsCredentials(
            access_key_id=str(key["AccessKeyId"]), secret_access_key=str(key["SecretAccessKey"])
        )

    def list_user_policies(self, user: str) -> list[str]:
        """IAM ``ListUserPolicies`` (all pages): the names of ``user``'s inline policies."""
        names: list[str] = []
        for page in self._pages(
            "iam", "ListUserPolicies", user, "list_user_policies", UserName=user
        ):
            names.extend(str(n) for n in page.get("PolicyNames", []))
        return names

    # Inline policies of a user or a role: the same three IAM calls for either kind of
    # principal (PutUserPolicy / PutRolePolicy, and so on).
    def put_user_policy(self, user: str, name: str, document: Mapping[str, Any]) -> None:
        """IAM ``PutUserPolicy``: create or replace the inline policy ``name`` of ``user``."""
        self._put_inline_policy("User", user, name, document)

    def delete_user_policy(self, user: str, name: str) -> None:
        """IAM ``DeleteUserPolicy``; a policy that is already absent is not an error."""
        self._delete_inline_policy("User", user, name)

    def get_user_policy(self, user: str, name: str) -> dict[str, Any] | None:
        """IAM ``GetUserPolicy``: the inline policy document, or None if there is none."""
        return self._get_inline_policy("User", user, name)

    def put_role_policy(self, role: str, name: str, document: Mapping[str, Any]) -> None:
        """IAM ``PutRolePolicy``: create or replace the inline policy ``name`` of ``role``."""
        self._put_inline_policy("Role", role, name, document)

    def delete_role_policy(self, role: str, name: str) -> None:
        """IAM ``DeleteRolePolicy``; a policy that is already absent is not an error."""
        self._delete_inline_policy("Role", role, name)

    def get_role_policy(self, role: str, name: str) -> dict[str, Any] | None:
        """IAM ``GetRolePolicy``: the inline policy document, or None if there is none."""
        return self._get_inline_policy("Role", role, name)

    def _inline_policy_call(
        self, kind: str, verb: str, principal: str, name: str, **extra: Any
    ) -> Callable[[], Any]:
        method = f"{verb}_{kind.lower()}_policy"  # e.g. put_user_policy, get_role_policy
        arguments = {f"{kind}Name": principal, "PolicyName": name, **extra}
        return lambda: getattr(self._client("iam"), method)(**arguments)

    def _put_inline_policy(
        self, kind: str, principal: str, name: str, document: Mapping[str, Any]
    ) -> None:
        call = self._inline_policy_call(
            kind, "put", principal, name, PolicyDocument=json.dumps(document)
        )
        self._call("iam", f"Put{kind}Policy", f"{principal}/{name}", call)

    def _delete_inline_policy(self, kind: str, principal: str, name: str) -> None:
        call = self._inline_policy_call(kind, "delete", principal, name)
        with contextlib.suppress(_Absent):
            self._call(
                "iam",
                f"Delete{kind}Policy",
                f"{principal}/{name}",
                call,
                absent=frozenset({"NoSuchEntity"}),
            )

    def _get_inline_policy(self, kind: str, principal: str, name: str) -> dict[str, Any] | None:
        call = self._inline_policy_call(kind, "get", principal, name)
        try:
            answer = self._call(
                "iam",
                f"Get{kind}Policy",
                f"{principal}/{name}",
                call,
                absent=frozenset({"NoSuchEntity"}),
            )
        except _Absent:
            return None
        document = answer["PolicyDocument"]
        if isinstance(document, str):  # botocore usually decodes it; be lenient
            document = json.loads(unquote(document))
        return dict(document)

    # -- KMS ------------------------------------------------------------------------------

    def create_key(self, description: str) -> str:
        """KMS ``CreateKey`` (symmetric, ENCRYPT_DECRYPT); returns the key id."""
        answer = self._call(
            "kms",
            "CreateKey",
            description,
            lambda: self._client("kms").create_key(
                Description=description,
                KeySpec="SYMMETRIC_DEFAULT",
                KeyUsage="ENCRYPT_DECRYPT",
            ),
        )
        return str(answer["KeyMetadata"]["KeyId"])

    def create_alias(self, alias: str, key_id: str) -> None:
        """KMS ``CreateAlias``: ``alias`` (``alias/...``) names ``key_id``."""
        self._call(
            "kms",
            "CreateAlias",
            alias,
            lambda: self._client("kms").create_alias(AliasName=alias, TargetKeyId=key_id),
        )

    def describe_key(self, key_id: str) -> dict[str, Any]:
        """KMS ``DescribeKey``: the key's metadata (``KeyId``, ``Arn``, ``KeyState``, ...)."""
        answer = self._call(
            "kms", "DescribeKey", key_id, lambda: self._client("kms").describe_key(KeyId=key_id)
        )
        return dict(answer["KeyMetadata"])

    def encrypt(self, key_id: str, data: bytes) -> bytes:
        """KMS ``Encrypt``: the ciphertext blob of ``data`` under ``key_id``."""
        answer = self._call(
            "kms",
            "Encrypt",
            key_id,
            lambda: self._client("kms").encrypt(KeyId=key_id, Plaintext=data),
            sensitive=True,
        )
        return bytes(answer["CiphertextBlob"])

    def decrypt(self, blob: bytes) -> bytes:
        """KMS ``Decrypt`` of a symmetric ciphertext blob (the blob names its key)."""
        answer = self._call(
            "kms",
            "Decrypt",
            "ciphertext",
            lambda: self._client("kms").decrypt(CiphertextBlob=blob),
            sensitive=True,
        )
        return bytes(answer["Plaintext"])

    def key_reachable(self, key_id: str) -> bool:
        """True when KMS ``DescribeKey`` on ``key_id`` succeeds for these credentials."""
        try:
            self.describe_key(key_id)
        except AwsError:
            return False
        return True

    # -- S3 -------------------------------------------------------------------------------

    def create_bucket(self, name: str, *, versioning: bool = True) -> None:
        """S3 ``CreateBucket`` (+ ``PutBucketVersioning`` Enabled when ``versioning``)."""
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.target.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.target.region}
        s3 = self._client("s3")
        self._call("s3", "CreateBucket", name, lambda: s3.create_bucket(**kwargs))
        if versioning:
            self._call(
                "s3",
                "PutBucketVersioning",
                name,
                lambda: s3.put_bucket_versioning(
                    Bucket=name, VersioningConfiguration={"Status": "Enabled"}
                ),
            )

    def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes | Path,
        *,
        metadata: Mapping[str, str] | None = None,
        sse_kms_key_id: str | None = None,
    ) -> str | None:
        """S3 ``PutObject`` (one request, so the object appears whole or not at all).

        ``body`` is bytes or a file path (streamed). With ``sse_kms_key_id`` the object
        is encrypted server-side with that KMS key. Returns the version id, if any.
        """
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Metadata": dict(metadata or {})}
        if sse_kms_key_id:
            kwargs["ServerSideEncryption"] = "aws:kms"
            kwargs["SSEKMSKeyId"] = sse_kms_key_id
        s3 = self._client("s3")
        resource = f"s3://{bucket}/{key}"
        if isinstance(body, Path):
            with body.open("rb") as stream:
                kwargs["ContentLength"] = os.fstat(stream.fileno()).st_size
                answer = self._call(
                    "s3", "PutObject", resource, lambda: s3.put_object(Body=stream, **kwargs)
                )
        else:
            answer = self._call(
                "s3", "PutObject", resource, lambda: s3.put_object(Body=body, **kwargs)
            )
        version = answer.get("VersionId")
        return str(version) if version else None

    def stat_object(self, bucket: str, key: str) -> dict[str, Any]:
        """S3 ``HeadObject``: ``metadata``, ``size``, ``last_modified``, ``etag``,
        ``version_id``, ``sse`` and ``sse_kms_key_id``."""
        answer = self._call(
            "s3",
            "HeadObject",
            f"s3://{bucket}/{key}",
            lambda: self._client("s3").head_object(Bucket=bucket, Key=key),
        )
        return {
            "metadata": {str(k): str(v) for k, v in answer.get("Metadata", {}).items()},
            "size": int(answer.get("ContentLength", 0)),
            "last_modified": answer.get("LastModified"),
            "etag": str(answer.get("ETag", "")).strip('"'),
            "version_id": answer.get("VersionId"),
            "sse": answer.get("ServerSideEncryption"),
            "sse_kms_key_id": answer.get("SSEKMSKeyId"),
        }

    def head_object(self, bucket: str, key: str) -> dict[str, str]:
        """S3 ``HeadObject``: the object's user metadata (``x-amz-meta-*``, lower-cased keys)."""
        metadata: dict[str, str] = self.stat_object(bucket, key)["metadata"]
        return metadata

    def get_object(self, bucket: str, key: str) -> bytes:
        """S3 ``GetObject``: the whole body in memory (use download_object for big ones)."""
        resource = f"s3://{bucket}/{key}"

        def read() -> bytes:
            answer = self._client("s3").get_object(Bucket=bucket, Key=key)
            return bytes(answer["Body"].read())

        return self._call("s3", "GetObject", resource, read)

    def download_object(self, bucket: str, key: str, path: Path) -> None:
        """S3 ``GetObject`` streamed to ``path``; written to a temporary file then renamed,
        so ``path`` never holds a partial download."""
        resource = f"s3://{bucket}/{key}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:

                def fetch() -> None:
                    answer = self._client("s3").get_object(Bucket=bucket, Key=key)
                    stream: BinaryIO = answer["Body"]
                    for chunk in iter(lambda: stream.read(1 << 20), b""):
                        out.write(chunk)

                self._call("s3", "GetObject", resource, fetch)
            tmp.replace(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def list_objects(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """S3 ``ListObjectsV2`` (all pages): ``key``, ``size``, ``last_modified`` per object."""
        objects: list[dict[str, Any]] = []
        for page in self._pages(
            "s3",
            "ListObjectsV2",
            f"s3://{bucket}/{prefix}",
            "list_objects_v2",
            Bucket=bucket,
            Prefix=prefix,
        ):
            for item in page.get("Contents", []):
                objects.append(
                    {
                        "key": str(item["Key"]),
                        "size": int(item.get("Size", 0)),
                        "last_modified": item.get("LastModified"),
                    }
                )
        return objects

    def delete_object(self, bucket: str, key: str) -> None:
        """S3 ``DeleteObject`` (on a versioned bucket: adds a delete marker)."""
        self._call(
            "s3",
            "DeleteObject",
            f"s3://{bucket}/{key}",
            lambda: self._client("s3").delete_object(Bucket=bucket, Key=key),
        )

    def delete_object_version(self, bucket: str, key: str, version_id: str) -> None:
        """S3 ``DeleteObject`` of one version: the version before it becomes current again."""
        self._call(
            "s3",
            "DeleteObject",
            f"s3://{bucket}/{key}?versionId={version_id}",
            lambda: self._client("s3").delete_object(Bucket=bucket, Key=key, VersionId=version_id),
        )

    def list_object_versions(self, bucket: str, key: str) -> list[dict[str, Any]]:
        """S3 ``ListObjectVersions`` (all pages) of exactly ``key``, newest first.

        Per version or delete marker: ``version_id``, ``etag`` (without quotes, lower
        case; None for a delete marker), ``size``, ``last_modified``, ``is_latest`` and
        ``delete_marker``. An ETag is the body's md5 only for a single unencrypted or
        SSE-S3 PutObject; with SSE-KMS or multipart it is not.
        """
        resource = f"s3://{bucket}/{key}"
        found: list[dict[str, Any]] = []
        for page in self._pages(
            "s3", "ListObjectVersions", resource, "list_object_versions", Bucket=bucket, Prefix=key
        ):
            for marker, items in (
                (False, page.get("Versions", [])),
                (True, page.get("DeleteMarkers", [])),
            ):
                for item in items:
                    if item.get("Key") != key:
                        continue
                    etag = item.get("ETag")
                    found.append(
                        {
                            "version_id": str(item["VersionId"]),
                            "etag": str(etag).strip('"').lower() if etag else None,
                            "size": int(item.get("Size", 0)),
                            "last_modified": item.get("LastModified"),
                            "is_latest": bool(item.get("IsLatest", False)),
                            "delete_marker": marker,
                        }
                    )

        # S3 lists each kind newest first; merge the two by time (a stable sort keeps
        # S3's own order among versions with the same timestamp).
        def newest(v: dict[str, Any]) -> tuple[bool, float]:
            when = v["last_modified"]
            return v["is_latest"], when.timestamp() if when is not None else 0.0

        found.sort(key=newest, reverse=True)
        return found

    def get_object_version(self, bucket: str, key: str, version_id: str) -> bytes:
        """S3 ``GetObject`` of one version (``VersionId``): its whole body in memory."""
        resource = f"s3://{bucket}/{key}?versionId={version_id}"

        def read() -> bytes:
            answer = self._client("s3").get_object(Bucket=bucket, Key=key, VersionId=version_id)
            return bytes(answer["Body"].read())

        return self._call("s3", "GetObject", resource, read)

    def delete_all_versions(self, bucket: str, key: str) -> int:
        """S3 ``ListObjectVersions`` + ``DeleteObject`` with each ``VersionId``: removes every
        version and delete marker of exactly ``key``. Returns how many were deleted."""
        resource = f"s3://{bucket}/{key}"
        versions: list[str] = []
        for page in self._pages(
            "s3", "ListObjectVersions", resource, "list_object_versions", Bucket=bucket, Prefix=key
        ):
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if item.get("Key") == key:
                    versions.append(str(item["VersionId"]))
        s3 = self._client("s3")
        for version in versions:
            self._call(
                "s3",
                "DeleteObject",
                f"{resource}?versionId={version}",
                partial(s3.delete_object, Bucket=bucket, Key=key, VersionId=version),
            )
        return len(versions)

    # -- SSM ------------------------------------------------------------------------------

    def put_secure_parameter(self, name: str, value: str, *, overwrite: bool = True) -> None:
        """SSM ``PutParameter`` as a ``SecureString`` (encrypted with the account's SSM key)."""
        self._call(
            "ssm",
            "PutParameter",
            name,
            lambda: self._client("ssm").put_parameter(
                Name=name, Value=value, Type="SecureString", Overwrite=overwrite
            ),
            sensitive=True,
        )

    def get_secure_parameter(self, name: str) -> str:
        """SSM ``GetParameter`` with decryption: the plaintext value (keep it out of logs)."""
        answer = self._call(
            "ssm",
            "GetParameter",
            name,
            lambda: self._client("ssm").get_parameter(Name=name, WithDecryption=True),
            sensitive=True,
        )
        return str(answer["Parameter"]["Value"])

    def delete_parameter(self, name: str) -> None:
        """SSM ``DeleteParameter``; a parameter that is already absent is not an error."""
        with contextlib.suppress(_Absent):
            self._call(
                "ssm",
                "DeleteParameter",
                name,
                lambda: self._client("ssm").delete_parameter(Name=name),
                absent=frozenset({"ParameterNotFound"}),
            )

    def parameter_exists(self, name: str) -> bool:
        """SSM ``GetParameter`` without decryption: True when ``name`` exists."""
        try:
            self._call(
                "ssm",
                "GetParameter",
                name,
                lambda: self._client("ssm").get_parameter(Name=name, WithDecryption=False),
                sensitive=True,
                absent=frozenset({"ParameterNotFound"}),
            )
        except _Absent:
            return False
        return True

    # -- STS ------------------------------------------------------------------------------

    def caller_identity(self) -> dict[str, str]:
        """STS ``GetCallerIdentity``: ``Account``, ``Arn`` and ``UserId`` of these credentials."""
        answer = self._call(
            "sts", "GetCallerIdentity", "caller", lambda: self._client("sts").get_caller_identity()
        )
        return {k: str(answer[k]) for k in ("Account", "Arn", "UserId") if k in answer}
