"""The stand-in's HTTPS API server: routes, handlers, and ``python -m`` entry point.

:func:`handle` answers one request as a pure function of the state directory
(routes below); :func:`serve` puts it behind a threading HTTPS server on
127.0.0.1 until SIGTERM or SIGINT. ``python -m vaultdr.envs.local.kubeapi --dir
DIR --port PORT --cert CERT --key KEY`` runs :func:`main` (the package's
``__main__``); :func:`~vaultdr.envs.local.kubeapi.client.start_kubeapi` spawns
exactly that.

The endpoints:

* ``POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`` (TokenRequest)
  issues RS256 tokens shaped like projected service-account tokens;
* ``POST /apis/authentication.k8s.io/v1/tokenreviews`` checks signature,
  expiry, audience, and that the service account still exists with the uid in
  the token (so a deleted-and-recreated account rejects its old tokens);
* ``GET``/``POST``/``DELETE`` on service accounts, so faults can remove one;
* ``/healthz``, ``/readyz``, ``/livez`` and ``/version``.

Hazards:

* Tokens never appear in the request log, in TokenReview responses (the
  ``spec.token`` is not echoed back, unlike kube-apiserver) or in exception
  messages. Keep it that way when changing this file.
* It is not Kubernetes: there are no namespace objects, no RBAC beyond "the
  admin token may do everything, the declared reviewers may create
  TokenReviews".
* It listens on 127.0.0.1 only, over TLS only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import json
import re
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from vaultdr.envs.local.kubeapi.store import (
    SA_PREFIX,
    SERVICE_ACCOUNTS_FILE,
    JsonObject,
    KubeApiConfig,
    ServiceAccountStore,
    check_name,
    load_or_create_admin_token,
    load_or_create_signing_key,
)
from vaultdr.envs.local.kubeapi.tokens import (
    AUTHN_V1,
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    TOKENREVIEWS_PATH,
    TokenAuthority,
    review_token,
)
from vaultdr.envs.local.processes import LOOPBACK

_MAX_BODY_BYTES = 1 << 20
_DESCRIPTION = (
    "A stand-in for the slice of the Kubernetes API that Vault/OpenBao kubernetes auth uses."
)


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
        return check_name(kind, value)
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
            "apiVersion": AUTHN_V1,
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
            "apiVersion": AUTHN_V1,
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
    (re.compile(rf"^{TOKENREVIEWS_PATH}$"), {"POST": _token_review}),
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
        reviewers=frozenset(f"{SA_PREFIX}{ns}:{name}" for ns, name in config.token_reviewers),
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
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=_DESCRIPTION)
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
