"""The stand-in from the outside: :class:`KubeApiClient`, and :func:`start_kubeapi`.

:class:`KubeApiClient` is the admin client the rest of vaultdr uses (TokenRequest,
TokenReview, service accounts), over TLS verified against the environment's CA;
it works against any API server that accepts the same calls. :func:`start_kubeapi`
writes ``config.json``, spawns ``python -m vaultdr.envs.local.kubeapi`` and waits
until it answers ``/healthz``.

Hazards:

* The admin token and every token the client handles stay out of ``repr`` and
  of every exception message; errors carry the status and the API's reason,
  never a response body.
* The child process imports vaultdr from this very checkout (``PYTHONPATH``
  is set to it), not whatever copy the interpreter would find first.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import vaultdr
from vaultdr.envs.local.kubeapi.store import (
    CONFIG_FILE,
    JsonObject,
    KubeApiConfig,
    check_name,
    load_or_create_admin_token,
)
from vaultdr.envs.local.kubeapi.tokens import AUTHN_V1, DEFAULT_TTL_SECONDS, TOKENREVIEWS_PATH
from vaultdr.envs.local.processes import LOOPBACK, ProcessRecord, spawn, stop_pid, tail, wait_for
from vaultdr.errors import EnvironmentStartError, KubeApiError
from vaultdr.files import write_bytes_atomic

#: What ``python -m`` runs: the package, whose ``__main__`` is the server's ``main``.
MODULE = "vaultdr.envs.local.kubeapi"
HEALTH_TIMEOUT_SECONDS = 15.0

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
            {"apiVersion": AUTHN_V1, "kind": "TokenRequest", "spec": spec},
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
            TOKENREVIEWS_PATH,
            {"apiVersion": AUTHN_V1, "kind": "TokenReview", "spec": spec},
        )
        status = body.get("status")
        if not isinstance(status, dict):
            raise KubeApiError("TokenReview answered without a status", hint="is base_url right?")
        return status


def _sa_path(namespace: str, name: str | None = None) -> str:
    for kind, value in (("namespace", namespace), ("name", name)):
        if value is not None:
            try:
                check_name(kind, value)
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
    root = str(Path(vaultdr.__file__).resolve().parent.parent)  # the directory holding vaultdr/
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
    write_bytes_atomic(dir / CONFIG_FILE, (json.dumps(dict(config), indent=2) + "\n").encode())
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
