"""The plumbing under every AWS call: one boto3 session per target, clients reused,
and botocore's errors translated into vaultdr's (see the package docstring).

The service areas (:mod:`.iam`, :mod:`.kms`, :mod:`.s3`, :mod:`.ssm`, :mod:`.sts`) are
mixins over :class:`AwsBase`; :class:`vaultdr.aws.Aws` is all of them together.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

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
from botocore.parsers import ResponseParserError  # type: ignore[import-untyped, unused-ignore]

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
    """An access key pair, with the session token of temporary credentials (STS). ``repr``
    shows the key id only, never the secret or the token."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, str]:
        """For a state file (which must be private to the user: it holds the secret)."""
        data = {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}
        if self.session_token:
            data["session_token"] = self.session_token
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> AwsCredentials:
        token = data.get("session_token")
        return cls(
            access_key_id=str(data["access_key_id"]),
            secret_access_key=str(data["secret_access_key"]),
            session_token=str(token) if token else None,
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


class AwsBase:
    """The plumbing of :class:`vaultdr.aws.Aws` for one target: clients created on first
    use and reused (thread-safe), and every call's errors translated."""

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
                            aws_session_token=creds.session_token if creds else None,
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
        except (BotoCoreError, ResponseParserError) as exc:
            # ParamValidationError and friends may quote parameter values, an unparseable
            # answer (an emulator's HTML error page) its body: name the type only.
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
