"""The local AWS emulator's front door: moto's WSGI app behind a guard on its control API.

Why this exists: ``moto_server`` answers its control API to any caller, without
credentials. ``GET /moto-api/data.json`` dumps every backend's state in plain text (the
stack's SSM SecureStrings, i.e. the root token and the recovery keys, and every IAM
secret access key), ``POST /moto-api/reset`` wipes the KMS key that seals the cluster and
``POST /moto-api/reset-auth`` switches IAM enforcement off. Anything on the machine that
can reach 127.0.0.1 could do all of that. This module serves moto's own application
(built the way ``moto/server.py`` builds it) with one difference: every request that
moto's dispatcher would hand to its ``moto_api`` or ``instance_metadata`` backend is
refused with 403 unless it carries :data:`CONTROL_TOKEN_HEADER` equal to the token in
``--control-token-file``. The decision uses the application moto itself picks for the
request (so a path, a signed request naming such a service, or a request shaped to
reach it another way is refused alike), plus a check of the normalized request path
(repeated slashes, dot segments, percent-encoding, case) for ``/moto-api``,
``/favicon.ico`` and ``/latest/{meta-data,api}/``.

It also serves ``GET`` :data:`READY_PATH` itself (200 ``ready``, no data): a readiness
probe that never reaches moto and so never spends its unauthenticated allowance
(``INITIAL_NO_AUTH_ACTION_COUNT``). Every other request, i.e. the AWS APIs, goes to moto
unchanged, with IAM enforcement as moto applies it. The control-token header is removed
before a request reaches moto.

Run it as ``python -m vaultdr.envs.local.emulator -H 127.0.0.1 -p PORT
--control-token-file FILE``; :func:`vaultdr.envs.local.awsemu.start_moto` does that.

Hazards:

* The token file is the key to the whole emulator's state: whoever reads it can dump
  every secret the emulator holds, wipe it or turn IAM enforcement off. The emulator
  refuses to start when the file is readable by group or others, or holds a token
  shorter than :data:`MIN_TOKEN_LENGTH` characters.
* It guards what moto 5.2.5 dispatches to ``moto_api``/``instance_metadata``. A moto
  upgrade that adds another unauthenticated control surface (a new backend, a new
  routing rule) is not covered until it is added to :data:`GUARDED_BACKENDS` or
  :func:`is_control_path`.
* The AWS APIs themselves stay as moto serves them: the first
  ``INITIAL_NO_AUTH_ACTION_COUNT`` requests are let in unauthenticated. Only the
  readiness path is free.
* It listens on plain HTTP and is meant for loopback; it is an emulator, not a hardened
  server (moto's request handling, werkzeug's development server).
"""

from __future__ import annotations

import argparse
import hmac
import os
import signal
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit
from wsgiref.types import StartResponse

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

MODULE = "vaultdr.envs.local.emulator"
#: The header that must carry the control token for the control API.
CONTROL_TOKEN_HEADER = "X-Vaultdr-Control-Token"
#: Served by this module itself: 200 ``ready``; never reaches moto.
READY_PATH = "/vaultdr-emulator/ready"
#: Everything under this prefix is this module's own; none of it reaches moto.
OWN_PREFIX = "/vaultdr-emulator"
#: Shorter tokens are refused at start (``secrets.token_urlsafe(32)`` gives 43).
MIN_TOKEN_LENGTH = 32
#: moto backends (as its dispatcher names them) that need the control token.
GUARDED_BACKENDS = frozenset({"moto_api", "moto_api._internal", "instance_metadata"})
#: The body of every refusal; it names no secret.
REFUSAL = b"the emulator's control API needs the stack's control token\n"

_TOKEN_ENVIRON_KEY = "HTTP_" + CONTROL_TOKEN_HEADER.upper().replace("-", "_")
_PLAIN = ("Content-Type", "text/plain; charset=utf-8")


class ControlTokenError(Exception):
    """The control-token file is missing, unreadable, too open or too short."""


def read_control_token(path: Path) -> str:
    """The token in ``path``; raises ControlTokenError unless it is private and long enough."""
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read()
    except OSError as exc:
        raise ControlTokenError(
            f"cannot read the control-token file {path}: {exc.strerror or exc}"
        ) from None
    if not stat.S_ISREG(mode):
        raise ControlTokenError(f"the control-token file {path} is not a regular file")
    if mode & 0o077:
        raise ControlTokenError(
            f"the control-token file {path} is readable by others "
            f"(mode {stat.S_IMODE(mode):04o}); it must be 0600"
        )
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ControlTokenError(f"the control-token file {path} is not ASCII") from None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ControlTokenError(
            f"the control token in {path} is shorter than {MIN_TOKEN_LENGTH} characters"
        )
    return token


def _segments(path: str) -> list[str]:
    """``path``'s segments with empty and ``.`` segments dropped and ``..`` applied."""
    out: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        segment = segment.strip()
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return out


def is_control_path(target: str) -> bool:
    """True when ``target`` (a path or a request target), once normalized, names moto's
    control API (``/moto-api...``, ``/favicon.ico``) or its instance metadata
    (``/latest/meta-data/``, ``/latest/api/``).

    Normalizing: the query is dropped, an absolute-form target keeps only its path,
    percent-encoding is undone repeatedly, repeated slashes, backslashes, ``.`` and
    ``..`` segments are collapsed and case is ignored.
    """
    path = target
    for _ in range(8):
        path = path.split("?", 1)[0].split("#", 1)[0]
        if "://" in path:
            path = urlsplit(path).path
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    segments = [segment.lower() for segment in _segments(path)]
    if not segments:
        return False
    first = segments[0]
    if first.startswith(("moto-api", "motoapi")) or first == "favicon.ico":
        return True
    return first == "latest" and len(segments) > 1 and segments[1] in ("meta-data", "api")


def _wsgi_str(environ: dict[str, Any], key: str) -> str:
    """A WSGI environ string (latin-1 carrying UTF-8 bytes) as text."""
    value = environ.get(key, "")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    text = str(value)
    try:
        return text.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text


def _answer(
    start_response: StartResponse, status: str, body: bytes, *extra: tuple[str, str]
) -> list[bytes]:
    start_response(
        status,
        [_PLAIN, ("Content-Length", str(len(body))), ("Cache-Control", "no-store"), *extra],
    )
    return [body]


class GuardedDispatcher(DomainDispatcherApplication):
    """moto's dispatcher, refusing its control API to requests without the control token."""

    def __init__(self, token: str) -> None:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the control token must have at least {MIN_TOKEN_LENGTH} characters")
        super().__init__(create_backend_app)
        self._token = token.encode("ascii")

    def authorized(self, environ: dict[str, Any]) -> bool:
        """True when the request carries the control token."""
        offered = environ.get(_TOKEN_ENVIRON_KEY)
        if not isinstance(offered, str) or not offered:
            return False
        try:
            candidate = offered.strip().encode("latin-1")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(candidate, self._token)

    @staticmethod
    def is_guarded_path(environ: dict[str, Any]) -> bool:
        """True when the request's path, normalized, names the control API."""
        return any(
            is_control_path(_wsgi_str(environ, key))
            for key in ("PATH_INFO", "REQUEST_URI", "RAW_URI")
        )

    @staticmethod
    def is_guarded_app(app: object) -> bool:
        """True when ``app`` (what moto's dispatcher chose) serves the control API."""
        service = str(getattr(app, "service", ""))
        return service in GUARDED_BACKENDS or service.split(".", 1)[0] in GUARDED_BACKENDS

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = _wsgi_str(environ, "PATH_INFO")
        if path == OWN_PREFIX or path.startswith(OWN_PREFIX + "/"):
            return self._own(environ, start_response, path)
        allowed = self.authorized(environ)
        # Never hand the token on to moto (its request recorder would keep it).
        environ.pop(_TOKEN_ENVIRON_KEY, None)
        if not allowed and self.is_guarded_path(environ):
            return _answer(start_response, "403 Forbidden", REFUSAL)
        # Whichever way the request names it, this is the app moto would serve it with.
        app = self.get_application(environ)
        if not allowed and self.is_guarded_app(app):
            return _answer(start_response, "403 Forbidden", REFUSAL)
        return app(environ, start_response)

    @staticmethod
    def _own(environ: dict[str, Any], start_response: StartResponse, path: str) -> list[bytes]:
        if path != READY_PATH:
            return _answer(start_response, "404 Not Found", b"not found\n")
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method not in ("GET", "HEAD"):
            return _answer(
                start_response, "405 Method Not Allowed", b"GET only\n", ("Allow", "GET, HEAD")
            )
        return _answer(start_response, "200 OK", b"ready")  # werkzeug drops it for HEAD


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def serve(host: str, port: int, token: str) -> None:
    """Serve moto behind the guard until SIGTERM or SIGINT (as ``moto_server`` does)."""
    # moto sends some requests to itself and finds its port here.
    os.environ.setdefault("MOTO_PORT", str(port))
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit)
    run_simple(
        host,
        port,
        GuardedDispatcher(token),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("-H", "--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("-p", "--port", type=int, required=True, help="port to bind")
    parser.add_argument(
        "--control-token-file",
        type=Path,
        required=True,
        help=f"0600 file holding the token the control API needs ({CONTROL_TOKEN_HEADER})",
    )
    args = parser.parse_args(argv)
    try:
        token = read_control_token(args.control_token_file)
    except ControlTokenError as exc:
        print(f"{MODULE}: cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    serve(args.host, args.port, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
