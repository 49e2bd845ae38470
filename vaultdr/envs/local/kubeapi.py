"""A stand-in for the slice of the Kubernetes API that Vault/OpenBao kubernetes auth uses.

The local environment has no cluster, but kubernetes auth must still be real:
OpenBao parses the service-account JWT a workload presents, then asks the API
server's TokenReview endpoint whether that token is still valid. This module is
that API server, cut down to what the drills need:

* ``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`` (TokenRequest)
  issues RS256 tokens shaped like projected service-account tokens;
* ``POST /apis/authentication.k8s.io/v1/tokenreviews`` checks signature,
  expiry, audience, and that the service account still exists with the uid in
  the token (so a deleted-and-recreated account rejects its old tokens);
* ``GET``/``POST``/``DELETE`` on service accounts, so faults can remove one;
* ``/healthz``, ``/readyz``, ``/livez`` and ``/version``.

Run it as ``python -m vaultdr.envs.local.kubeapi --dir DIR --port PORT --cert
CERT --key KEY``; :func:`start_kubeapi` does that and waits until it is healthy,
and :class:`KubeApiClient` is the admin client the rest of vaultdr uses.

State lives in ``DIR``: ``sa-signing-key.pem`` and ``admin-token`` (both 0600,
created once and reused across restarts), ``serviceaccounts.json`` (the source
of truth, re-read on every request and replaced atomically), and
``config.json`` (issuer, declared service accounts, token reviewers), written
by the caller before start. Declared service accounts that are missing from
``serviceaccounts.json`` are created at every start, like re-applying
manifests.

Hazards:

* Whoever can read ``DIR`` can mint a token for any service account: the
  signing key and admin token are the cluster's crown jewels here.
* Tokens never appear in the request log, in TokenReview responses (the
  ``spec.token`` is not echoed back, unlike kube-apiserver) or in exception
  messages. Keep it that way when changing this file.
* It is not Kubernetes: there are no namespace objects, no RBAC beyond "the
  admin token may do everything, the declared reviewers may create
  TokenReviews", no bound object references, zero expiry leeway
  (kube-apiserver allows 60 s) and ``expirationSeconds`` down to 1 s
  (kube-apiserver's minimum is 600), so expiry drills do not have to wait.
* One server per ``DIR``: writes are serialized by an in-process lock only.
* It listens on 127.0.0.1 only, over TLS only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import signal
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vaultdr.envs.local.processes import LOOPBACK, ProcessRecord, spawn, stop_pid, tail, wait_for
from vaultdr.errors import EnvironmentStartError, KubeApiError

MODULE = "vaultdr.envs.local.kubeapi"
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 366 * 24 * 3600
HEALTH_TIMEOUT_SECONDS = 15.0

SIGNING_KEY_FILE = "sa-signing-key.pem"
SERVICE_ACCOUNTS_FILE = "serviceaccounts.json"
ADMIN_TOKEN_FILE = "admin-token"
CONFIG_FILE = "config.json"

_MAX_BODY_BYTES = 1 << 20
_SA_PREFIX = "system:serviceaccount:"
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_AUTHN_V1 = "authentication.k8s.io/v1"
_TOKENREVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"

JsonObject = dict[str, Any]


# --------------------------------------------------------------------------- files


def _create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` as 0600 with ``data``; False (and nothing written) if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return True


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_or_create_signing_key(directory: Path) -> rsa.RSAPrivateKey:
    """The service-account signing key in ``directory``, created (RSA 2048, 0600) if absent."""
    path = directory / SIGNING_KEY_FILE
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _create_private(path, pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return loaded


def load_or_create_admin_token(directory: Path) -> str:
    """The admin bearer token in ``directory``, created (random, 0600) if absent."""
    path = directory / ADMIN_TOKEN_FILE
    _create_private(path, secrets.token_urlsafe(32).encode())
    return read_admin_token(directory)


def read_admin_token(directory: Path) -> str:
    """The admin bearer token the server in ``directory`` accepts."""
    path = directory / ADMIN_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise KubeApiError(
            f"cannot read the Kubernetes API stand-in's admin token at {path}: {exc.strerror}",
            hint="start the stand-in (start_kubeapi) first; it creates the token",
        ) from None
    if not token:
        raise KubeApiError(f"{path} is empty", hint="delete it and restart the stand-in")
    return token


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """The ``kid`` for ``public_key``: base64url SHA-256 of its DER SPKI, as kube-apiserver does."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


# --------------------------------------------------------------------------- config


def _check_name(kind: str, value: object) -> str:
    pattern = _NAMESPACE_RE if kind == "namespace" else _NAME_RE
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"invalid {kind} {value!r}: must be a lowercase RFC 1123 name")
    return value


def _account_ref(entry: object) -> tuple[str, str]:
    """(namespace, name) from ``{"namespace":..,"name":..}`` or ``[namespace, name]``."""
    if isinstance(entry, Mapping):
        namespace, name = entry.get("namespace"), entry.get("name")
    elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
        namespace, name = entry[0], entry[1]
    else:
        raise ValueError(f"service account reference {entry!r} is not {{namespace, name}}")
    return _check_name("namespace", namespace), _check_name("name", name)


@dataclass(frozen=True)
class KubeApiConfig:
    """What ``config.json`` declares."""

    issuer: str = DEFAULT_ISSUER
    service_accounts: tuple[tuple[str, str], ...] = ()
    token_reviewers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> KubeApiConfig:
        unknown = set(raw) - {"issuer", "service_accounts", "token_reviewers"}
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        issuer = raw.get("issuer", DEFAULT_ISSUER)
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer must be a non-empty string")
        return cls(
            issuer=issuer,
            service_accounts=tuple(_account_ref(e) for e in raw.get("service_accounts", [])),
            token_reviewers=tuple(_account_ref(e) for e in raw.get("token_reviewers", [])),
        )

    @classmethod
    def load(cls, directory: Path) -> KubeApiConfig:
        path = directory / CONFIG_FILE
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a JSON object")
        return cls.from_dict(raw)


# --------------------------------------------------------------------------- service accounts


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    uid: str

    @property
    def username(self) -> str:
        return f"{_SA_PREFIX}{self.namespace}:{self.name}"

    def to_k8s(self) -> JsonObject:
        return {
            "kind": "ServiceAccount",
            "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


class ServiceAccountStore:
    """``serviceaccounts.json``: re-read on every call, replaced atomically under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _load(self) -> list[ServiceAccount]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        return [ServiceAccount(str(e["namespace"]), str(e["name"]), str(e["uid"])) for e in raw]

    def _save(self, accounts: Iterable[ServiceAccount]) -> None:
        rows = [{"namespace": a.namespace, "name": a.name, "uid": a.uid} for a in accounts]
        _atomic_write(self.path, (json.dumps(rows, indent=2) + "\n").encode())

    def get(self, namespace: str, name: str) -> ServiceAccount | None:
        with self._lock:
            return _find(self._load(), namespace, name)

    def create(self, namespace: str, name: str) -> ServiceAccount | None:
        """The new account, or None if one with that name already exists."""
        with self._lock:
            accounts = self._load()
            if _find(accounts, namespace, name) is not None:
                return None
            account = ServiceAccount(namespace, name, str(uuid.uuid4()))
            self._save([*accounts, account])
            return account

    def delete(self, namespace: str, name: str) -> ServiceAccount | None:
        """The deleted account, or None if there was none."""
        with self._lock:
            accounts = self._load()
            found = _find(accounts, namespace, name)
            if found is not None:
                self._save([a for a in accounts if a != found])
            return found

    def ensure(self, refs: Iterable[tuple[str, str]]) -> None:
        """Create each (namespace, name) in ``refs`` that does not exist yet."""
        for namespace, name in refs:
            self.create(namespace, name)


def _find(accounts: Iterable[ServiceAccount], namespace: str, name: str) -> ServiceAccount | None:
    return next((a for a in accounts if a.namespace == namespace and a.name == name), None)


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenAuthority:
    """Signs and verifies service-account tokens with one RSA key."""

    key: rsa.RSAPrivateKey
    issuer: str

    @property
    def kid(self) -> str:
        return key_id(self.key.public_key())

    def issue(
        self, account: ServiceAccount, audiences: Sequence[str], ttl_seconds: int
    ) -> tuple[str, int]:
        """A signed token for ``account`` and its expiry (Unix seconds)."""
        now = int(time.time())
        claims = {
            "aud": list(audiences),
            "exp": now + ttl_seconds,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "sub": account.username,
            "kubernetes.io": {
                "namespace": account.namespace,
                "serviceaccount": {"name": account.name, "uid": account.uid},
            },
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return token, now + ttl_seconds

    def verify(self, token: str) -> JsonObject:
        """The claims of ``token``; ``jwt.InvalidTokenError`` if it is not ours or is stale."""
        claims: JsonObject = jwt.decode(
            token,
            self.key.public_key(),
            algorithms=["RS256"],
            issuer=self.issuer,
            options={"verify_aud": False, "require": ["exp", "iat", "iss", "sub"]},
        )
        return claims


def _claimed_account(claims: Mapping[str, Any]) -> ServiceAccount | None:
    """The service account a verified token names, or None if its claims are malformed."""
    kube = claims.get("kubernetes.io")
    if not isinstance(kube, Mapping):
        return None
    sa = kube.get("serviceaccount")
    if not isinstance(sa, Mapping):
        return None
    fields = (kube.get("namespace"), sa.get("name"), sa.get("uid"))
    if not all(isinstance(f, str) and f for f in fields):
        return None
    account = ServiceAccount(*cast(tuple[str, str, str], fields))
    return account if claims.get("sub") == account.username else None


def _token_audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def _review_failure(reason: str) -> JsonObject:
    return {"authenticated": False, "user": {}, "error": f"invalid bearer token, {reason}"}


def review_token(
    authority: TokenAuthority,
    store: ServiceAccountStore,
    token: str,
    audiences: Sequence[str],
) -> JsonObject:
    """The TokenReview ``status`` for ``token`` reviewed for ``audiences``."""
    try:
        claims = authority.verify(token)
    except jwt.ExpiredSignatureError:
        return _review_failure("token has expired")
    except jwt.InvalidSignatureError:
        return _review_failure("token signature is invalid")
    except jwt.InvalidTokenError as exc:
        return _review_failure(f"token is not valid ({type(exc).__name__})")
    claimed = _claimed_account(claims)
    if claimed is None:
        return _review_failure("token does not name a service account")
    token_auds = _token_audiences(claims)
    overlap = [a for a in audiences if a in token_auds]
    if not overlap:
        return _review_failure(
            f"token audiences {token_auds} is invalid for the target audiences {list(audiences)}"
        )
    current = store.get(claimed.namespace, claimed.name)
    if current is None:
        return _review_failure(
            f"service account {claimed.namespace}/{claimed.name} has been deleted"
        )
    if current.uid != claimed.uid:
        return _review_failure(
            f"service account UID ({current.uid}) does not match claim ({claimed.uid})"
        )
    return {"authenticated": True, "user": _user_info(current), "audiences": overlap}


def _user_info(account: ServiceAccount) -> JsonObject:
    return {
        "username": account.username,
        "uid": account.uid,
        "groups": [
            "system:serviceaccounts",
            f"system:serviceaccounts:{account.namespace}",
            "system:authenticated",
        ],
    }


# --------------------------------------------------------------------------- API


@dataclass(frozen=True)
class ServerState:
    """Everything a request handler needs; built once at start."""

    authority: TokenAuthority
    store: ServiceAccountStore
    admin_token: str
    reviewers: frozenset[str]

    @property
    def issuer(self) -> str:
        return self.authority.issuer


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authorization: str | None
    body: bytes


@dataclass(frozen=True)
class Response:
    code: int
    body: JsonObject | str


class _Refused(Exception):
    """Raised by request helpers to answer with ``response`` at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.code)
        self.response = response


def _status(code: int, reason: str, message: str, **details: str) -> Response:
    body: JsonObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return Response(code, body)


def _not_found(name: str) -> Response:
    return _status(
        404, "NotFound", f'serviceaccounts "{name}" not found', name=name, kind="serviceaccounts"
    )


def _caller(state: ServerState, authorization: str | None) -> str | None:
    """``"admin"``, the username of a service account, or None if the bearer is nobody."""
    scheme, _, bearer = (authorization or "").partition(" ")
    bearer = bearer.strip()
    if scheme.lower() != "bearer" or not bearer:
        return None
    if hmac.compare_digest(bearer.encode(), state.admin_token.encode()):
        return "admin"
    status = review_token(state.authority, state.store, bearer, [state.issuer])
    return str(status["user"]["username"]) if status["authenticated"] else None


def _authorize(state: ServerState, req: Request, *, resource: str, reviewer_ok: bool) -> None:
    """Raise a 401/403 Status unless the caller may act on ``resource``."""
    caller = _caller(state, req.authorization)
    if caller is None:
        raise _Refused(_status(401, "Unauthorized", "Unauthorized"))
    if caller == "admin" or (reviewer_ok and caller in state.reviewers):
        return
    raise _Refused(
        _status(
            403,
            "Forbidden",
            f'{resource} is forbidden: User "{caller}" cannot {req.method.lower()} it',
        )
    )


def _json_body(req: Request) -> JsonObject:
    if not req.body.strip():
        return {}
    try:
        body = json.loads(req.body)
    except (ValueError, UnicodeDecodeError):
        raise _Refused(_status(400, "BadRequest", "request body is not JSON")) from None
    if not isinstance(body, dict):
        raise _Refused(_status(400, "BadRequest", "request body must be a JSON object"))
    return body


def _validated(kind: str, value: str) -> str:
    try:
        return _check_name(kind, value)
    except ValueError as exc:
        raise _Refused(_status(422, "Invalid", str(exc))) from None


def _string_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _Refused(_status(422, "Invalid", f"{field} must be a list of non-empty strings"))
    return list(value)


def _token_spec(state: ServerState, body: JsonObject) -> tuple[list[str], int]:
    spec = body.get("spec", {})
    if not isinstance(spec, dict):
        raise _Refused(_status(400, "BadRequest", "spec must be an object"))
    audiences = _string_list(spec.get("audiences") or [state.issuer], "spec.audiences")
    ttl = spec.get("expirationSeconds", DEFAULT_TTL_SECONDS)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise _Refused(
            _status(422, "Invalid", f"spec.expirationSeconds must be 1..{MAX_TTL_SECONDS}")
        )
    return audiences, ttl


def _rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token_request(state: ServerState, req: Request, args: Sequence[str]) -> Response:
    _authorize(state, req, resource="serviceaccounts/token", reviewer_ok=False)
    namespace, name = (_validated("namespace", args[0]), _validated("name", args[1]))
    audiences, ttl = _token_spec(state, _json_body(req))
    account = state.store.get(namespace, name)
    if account is None:
        return _not_found(name)
    token, expires = state.authority.issue(account, audiences, ttl)
    return Response(
        201,
        {
            "kind": "TokenRequest",
            "apiVersion": _AUTHN_V1,
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"audiences": audiences, "expirationSeconds": ttl, "boundObjectRef": None},
            "status": {"token": token, "expirationTimestamp": _rfc3339(expires)},
        },
    )


def _get_account(state: ServerState, req: Request, args: Sequence[str]) -> Response:
    _authorize(state, req, resource="serviceaccounts", reviewer_ok=False)
    namespace, name = (_validated("namespace", args[0]), _validated("name", args[1]))
    account = state.store.get(namespace, name)
    return Response(200, account.to_k8s()) if account else _not_found(name)


def _delete_account(state: ServerState, req: Request, args: Sequence[str]) -> Response:
    _authorize(state, req, resource="serviceaccounts", reviewer_ok=False)
    namespace, name = (_validated("namespace", args[0]), _validated("name", args[1]))
    account = state.store.delete(namespace, name)
    return Response(200, account.to_k8s()) if account else _not_found(name)


def _create_account(state: ServerState, req: Request, args: Sequence[str]) -> Response:
    _authorize(state, req, resource="serviceaccounts", reviewer_ok=False)
    namespace = _validated("namespace", args[0])
    metadata = _json_body(req).get("metadata", {})
    if not isinstance(metadata, dict):
        raise _Refused(_status(400, "BadRequest", "metadata must be an object"))
    name = _validated("name", str(metadata.get("name", "")))
    if metadata.get("namespace", namespace) != namespace:
        message = "the namespace of the object does not match the namespace of the request"
        return _status(400, "BadRequest", message)
    account = state.store.create(namespace, name)
    if account is None:
        return _status(
            409,
            "AlreadyExists",
            f'serviceaccounts "{name}" already exists',
            name=name,
            kind="serviceaccounts",
        )
    return Response(201, account.to_k8s())


def _token_review(state: ServerState, req: Request, args: Sequence[str]) -> Response:
    _authorize(state, req, resource="tokenreviews.authentication.k8s.io", reviewer_ok=True)
    spec = _json_body(req).get("spec", {})
    if not isinstance(spec, dict):
        raise _Refused(_status(400, "BadRequest", "spec must be an object"))
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        return _status(400, "BadRequest", "token is required for TokenReview in authentication")
    requested = spec.get("audiences")
    audiences = _string_list(requested, "spec.audiences") if requested else [state.issuer]
    status = review_token(state.authority, state.store, token, audiences)
    echoed: JsonObject = {"audiences": requested} if requested else {}
    return Response(
        201,
        {
            "kind": "TokenReview",
            "apiVersion": _AUTHN_V1,
            "metadata": {"creationTimestamp": None},
            "spec": echoed,
            "status": status,
        },
    )


def _ok(state: ServerState, req: Request, args: Sequence[str]) -> Response:
    return Response(200, "ok")


def _version(state: ServerState, req: Request, args: Sequence[str]) -> Response:
    return Response(
        200,
        {
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-vaultdr-standin",
            "platform": "linux/amd64",
        },
    )


_Handler = Callable[[ServerState, Request, Sequence[str]], Response]
_SEGMENT = r"([^/]+)"
_SA_BASE = rf"/api/v1/namespaces/{_SEGMENT}/serviceaccounts"
_ROUTES: list[tuple[re.Pattern[str], dict[str, _Handler]]] = [
    (re.compile(rf"^{_SA_BASE}/{_SEGMENT}/token$"), {"POST": _token_request}),
    (re.compile(rf"^{_SA_BASE}/{_SEGMENT}$"), {"GET": _get_account, "DELETE": _delete_account}),
    (re.compile(rf"^{_SA_BASE}$"), {"POST": _create_account}),
    (re.compile(rf"^{_TOKENREVIEWS_PATH}$"), {"POST": _token_review}),
    (re.compile(r"^/(healthz|readyz|livez)$"), {"GET": _ok}),
    (re.compile(r"^/version$"), {"GET": _version}),
]


def handle(state: ServerState, req: Request) -> Response:
    """Answer one API request (no I/O beyond the state directory)."""
    for pattern, methods in _ROUTES:
        match = pattern.match(req.path)
        if match is None:
            continue
        handler = methods.get(req.method)
        if handler is None:
            return _status(405, "MethodNotAllowed", f"{req.method} is not supported here")
        try:
            return handler(state, req, match.groups())
        except _Refused as refused:
            return refused.response
    return _status(404, "NotFound", "the server could not find the requested resource")


# --------------------------------------------------------------------------- HTTP server


def _log(line: str) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sys.stderr.write(f"{stamp} kubeapi {line}\n")
    sys.stderr.flush()


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vaultdr-kubeapi"
    sys_version = ""
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # The listening socket defers the TLS handshake to this thread, so one
        # slow client cannot stall the accept loop.
        cast(ssl.SSLSocket, self.connection).do_handshake()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        state = cast(_Server, self.server).state
        try:
            req = Request(self.command, self._clean_path(), self._authorization(), self._body())
            response = handle(state, req)
        except _Refused as refused:
            response = refused.response
        except Exception as exc:  # noqa: BLE001 - answer 500, log the type only (no token)
            _log(f"internal error: {type(exc).__name__}")
            response = _status(500, "InternalError", "internal error; see the stand-in's log")
        self._send(response)

    def _authorization(self) -> str | None:
        return self.headers.get("Authorization")

    def _clean_path(self) -> str:
        return urlsplit(self.path or "").path

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _Refused(_status(400, "BadRequest", "bad Content-Length")) from None
        if length > _MAX_BODY_BYTES:
            self.close_connection = True
            raise _Refused(_status(413, "RequestEntityTooLarge", "request body too large"))
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, response: Response) -> None:
        if isinstance(response.body, str):
            payload, content_type = response.body.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(response.body).encode(), "application/json"
        self.send_response(response.code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path (query dropped) and status only: never headers or bodies.
        method = self.command or "-"
        _log(f"{self.client_address[0]} {method} {self._clean_path() or '-'} {code}")

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the base class would log raw request lines; log_request covers it."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], state: ServerState):
        super().__init__((LOOPBACK, port), handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        _log(f"{client_address[0]} connection error: {type(exc).__name__}")


def _tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


def load_state(directory: Path) -> ServerState:
    """Read (or create) everything in ``directory`` and create the declared service accounts."""
    directory.mkdir(parents=True, exist_ok=True)
    config = KubeApiConfig.load(directory)
    store = ServiceAccountStore(directory / SERVICE_ACCOUNTS_FILE)
    store.ensure([*config.service_accounts, *config.token_reviewers])
    return ServerState(
        authority=TokenAuthority(load_or_create_signing_key(directory), config.issuer),
        store=store,
        admin_token=load_or_create_admin_token(directory),
        reviewers=frozenset(f"{_SA_PREFIX}{ns}:{name}" for ns, name in config.token_reviewers),
    )


def serve(directory: Path, *, port: int, cert: Path, key: Path) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    state = load_state(directory)
    server = _Server(port, _RequestHandler, state)
    server.socket = _tls_context(cert, key).wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    thread.start()
    _log(f"listening on https://{LOOPBACK}:{port} (state in {directory})")
    stop.wait()
    server.shutdown()
    thread.join()
    server.server_close()
    _log("stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="state directory")
    parser.add_argument("--port", type=int, required=True, help=f"port on {LOOPBACK}")
    parser.add_argument("--cert", type=Path, required=True, help="server certificate (PEM)")
    parser.add_argument("--key", type=Path, required=True, help="server private key (PEM)")
    args = parser.parse_args(argv)
    try:
        serve(args.dir, port=args.port, cert=args.cert, key=args.key)
    except (OSError, ValueError, KeyError) as exc:
        _log(f"cannot start: {type(exc).__name__}: {exc}")
        return 1
    return 0


# --------------------------------------------------------------------------- client


_HINTS = {
    401: "the admin token is not the one in the stand-in's directory (admin-token)",
    403: "this call needs the admin token",
    404: "create the service account first (config.json or create_service_account)",
    409: "it already exists: delete it first, or use get_service_account",
    422: "names must be lowercase RFC 1123 names; check audiences and expirationSeconds",
}


class KubeApiClient:
    """Admin client for the stand-in (or any API server that accepts the same calls).

    Verifies TLS against ``ca_file``. The admin token and every token it
    handles stay out of ``repr`` and of every exception message.
    """

    def __init__(
        self, base_url: str, ca_file: Path, admin_token: str, *, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise KubeApiError(
                f"Kubernetes API URL {base_url!r} is not https://host[:port]",
                hint="the stand-in serves TLS only",
            )
        self.base_url = base_url.rstrip("/")
        self._host = parts.hostname
        self._port = parts.port or 443
        self._admin_token = admin_token
        self._timeout = timeout
        try:
            self._context = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise KubeApiError(
                f"cannot load the CA file {ca_file}: {exc}",
                hint="pass the PEM of the CA that signed the API server's certificate",
            ) from None

    def __repr__(self) -> str:
        return f"KubeApiClient({self.base_url!r})"

    def _call(
        self, method: str, path: str, payload: JsonObject | None = None
    ) -> tuple[int, JsonObject | str]:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Authorization": f"Bearer {self._admin_token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPSConnection(
            self._host, self._port, context=self._context, timeout=self._timeout
        )
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            code, raw = response.status, response.read()
            content_type = response.getheader("Content-Type", "")
        except ssl.SSLCertVerificationError as exc:
            raise KubeApiError(
                f"TLS verification of {self.base_url} failed: {exc.verify_message}",
                hint="ca_file must be the CA that signed the API server's certificate",
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise KubeApiError(
                f"cannot reach the Kubernetes API at {self.base_url}: {type(exc).__name__}: {exc}",
                hint="is the stand-in running? see its log in the environment's state directory",
            ) from None
        finally:
            conn.close()
        return code, _decode(raw, content_type)

    def _expect(
        self, what: str, expected: int, method: str, path: str, payload: JsonObject | None = None
    ) -> JsonObject:
        code, body = self._call(method, path, payload)
        if code != expected or not isinstance(body, dict):
            raise _api_error(what, code, body)
        return body

    def healthy(self) -> bool:
        """True when ``/healthz`` answers ``ok`` over verified TLS."""
        try:
            code, body = self._call("GET", "/healthz")
        except KubeApiError:
            return False
        return code == 200 and body == "ok"

    def request_token(
        self,
        namespace: str,
        name: str,
        *,
        audiences: Sequence[str] | None = None,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ) -> str:
        """A fresh token for service account ``namespace/name`` (secret: do not log it)."""
        spec: JsonObject = {"expirationSeconds": ttl_seconds}
        if audiences:
            spec["audiences"] = list(audiences)
        body = self._expect(
            f"TokenRequest for service account {namespace}/{name}",
            201,
            "POST",
            f"{_sa_path(namespace, name)}/token",
            {"apiVersion": _AUTHN_V1, "kind": "TokenRequest", "spec": spec},
        )
        token = body.get("status", {}).get("token")
        if not isinstance(token, str) or not token:
            raise KubeApiError(
                f"TokenRequest for {namespace}/{name} answered without a token",
                hint="is base_url the stand-in (or a real API server)?",
            )
        return token

    def create_service_account(self, namespace: str, name: str) -> JsonObject:
        """Create ``namespace/name``; the new ServiceAccount object (with its uid)."""
        return self._expect(
            f"creating service account {namespace}/{name}",
            201,
            "POST",
            _sa_path(namespace),
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )

    def delete_service_account(
        self, namespace: str, name: str, *, missing_ok: bool = False
    ) -> None:
        """Delete ``namespace/name``; a missing one is an error unless ``missing_ok``."""
        what = f"deleting service account {namespace}/{name}"
        code, body = self._call("DELETE", _sa_path(namespace, name))
        if code == 200 or (code == 404 and missing_ok):
            return
        raise _api_error(what, code, body)

    def get_service_account(self, namespace: str, name: str) -> JsonObject | None:
        """The ServiceAccount object, or None if it does not exist."""
        code, body = self._call("GET", _sa_path(namespace, name))
        if code == 404:
            return None
        if code != 200 or not isinstance(body, dict):
            raise _api_error(f"reading service account {namespace}/{name}", code, body)
        return body

    def review(self, token: str, audiences: Sequence[str] | None = None) -> JsonObject:
        """The TokenReview ``status`` for ``token`` (``authenticated``, ``user``, ``audiences``)."""
        spec: JsonObject = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        body = self._expect(
            "TokenReview",
            201,
            "POST",
            _TOKENREVIEWS_PATH,
            {"apiVersion": _AUTHN_V1, "kind": "TokenReview", "spec": spec},
        )
        status = body.get("status")
        if not isinstance(status, dict):
            raise KubeApiError("TokenReview answered without a status", hint="is base_url right?")
        return status


def _sa_path(namespace: str, name: str | None = None) -> str:
    for kind, value in (("namespace", namespace), ("name", name)):
        if value is not None:
            try:
                _check_name(kind, value)
            except ValueError as exc:
                raise KubeApiError(str(exc), hint="use a lowercase RFC 1123 name") from None
    base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
    return f"{base}/{name}" if name else base


def _decode(raw: bytes, content_type: str) -> JsonObject | str:
    text = raw.decode("utf-8", errors="replace")
    if "json" not in content_type:
        return text
    try:
        parsed = json.loads(text)
    except ValueError:
        return text
    return cast(JsonObject, parsed) if isinstance(parsed, dict) else text


def _api_error(what: str, code: int, body: JsonObject | str) -> KubeApiError:
    """A KubeApiError from a k8s Status (reason and message only; bodies are never echoed)."""
    if isinstance(body, dict) and body.get("kind") == "Status":
        detail = f"{body.get('reason', '')}: {str(body.get('message', ''))[:200]}"
    else:
        detail = "unexpected response"
    return KubeApiError(
        f"{what} failed: HTTP {code} {detail}",
        hint=_HINTS.get(code, "see the Kubernetes API stand-in's log"),
    )


# --------------------------------------------------------------------------- process


def _probe_health(port: int, cert: Path) -> bool:
    """True when 127.0.0.1:``port`` answers /healthz with the certificate ``cert`` exactly."""
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # trust the leaf itself
    conn = http.client.HTTPSConnection(LOOPBACK, port, context=context, timeout=2.0)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _child_env() -> dict[str, str]:
    """PYTHONPATH so the child imports this very copy of vaultdr."""
    root = str(Path(__file__).resolve().parents[3])
    current = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": f"{root}{os.pathsep}{current}" if current else root}


def start_kubeapi(
    dir: Path,
    *,
    port: int,
    cert: Path,
    key: Path,
    config: Mapping[str, Any],
    log: Path,
    python: str = sys.executable,
) -> ProcessRecord:
    """Write ``config.json`` into ``dir``, start the stand-in, and wait until it is healthy.

    Raises EnvironmentStartError (with the log tail) when it does not answer
    ``/healthz`` within 15 s; the process is stopped in that case.
    """
    try:
        KubeApiConfig.from_dict(config)
    except ValueError as exc:
        raise EnvironmentStartError(
            f"invalid Kubernetes API stand-in config: {exc}",
            hint="see KubeApiConfig: issuer, service_accounts, token_reviewers",
        ) from None
    dir.mkdir(parents=True, exist_ok=True)
    os.chmod(dir, 0o700)
    _atomic_write(dir / CONFIG_FILE, (json.dumps(dict(config), indent=2) + "\n").encode())
    load_or_create_admin_token(dir)
    argv = [python, "-m", MODULE, "--dir", str(dir), "--port", str(port)]
    argv += ["--cert", str(cert), "--key", str(key)]
    proc, record = spawn("kubeapi", argv, log=log, env=_child_env())
    healthy = wait_for(
        lambda: not record.alive() or _probe_health(port, cert),
        timeout=HEALTH_TIMEOUT_SECONDS,
        interval=0.1,
    )
    if healthy and record.alive():
        return record
    stop_pid(record.pid, record.start_time)
    proc.poll()
    raise EnvironmentStartError(
        f"the Kubernetes API stand-in did not become healthy on https://{LOOPBACK}:{port} "
        f"within {HEALTH_TIMEOUT_SECONDS:.0f} s; last log lines:\n{tail(log)}",
        hint=f"see {log}; a port taken by another process shows as 'Address already in use'",
    )


if __name__ == "__main__":
    sys.exit(main())
