"""The Vault/OpenBao HTTP API, as vaultdr uses it. The only module that imports hvac.

One method per endpoint, named verb_noun, whose docstring names the API path.
Errors are mapped once: 503 (sealed, uninitialized, no leader) becomes
:class:`SealedError`, a refused connection or timeout becomes
:class:`VaultApiError` with the address, and everything else
:class:`VaultApiError` with the server's own message. Tokens are never put in
an error message or a ``repr``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from vaultdr.errors import SealedError, VaultApiError


class NotFoundError(VaultApiError):
    """404: no such path (or no handler for it, as on a node still loading a snapshot)."""


@dataclass(frozen=True)
class InitResult:
    """What ``sys/init`` returns. Secret fields are hidden from ``repr``."""

    root_token: str = field(repr=False)
    recovery_keys: list[str] = field(repr=False)
    keys: list[str] = field(repr=False, default_factory=list)


@contextlib.contextmanager
def _mapped_errors(address: str, what: str) -> Iterator[None]:
    try:
        yield
    except hvac.exceptions.InvalidPath as exc:
        raise NotFoundError(f"{what} on {address}: not found ({_errors(exc)})") from None
    except hvac.exceptions.VaultDown as exc:
        raise SealedError(f"{what} on {address}: sealed or not ready ({_errors(exc)})") from None
    except hvac.exceptions.VaultError as exc:
        raise VaultApiError(f"{what} on {address} failed: {_errors(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise VaultApiError(
            f"{what}: cannot reach {address} ({type(exc).__name__})",
            hint="is the node running? `vaultdr status` shows every node",
        ) from None


def _errors(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        return "; ".join(str(e) for e in errors)
    return type(exc).__name__


#: Seconds ``sys/init`` may take before the client gives up.
INIT_TIMEOUT = 60.0


def keep_alive_session(ca_file: Path | str | None) -> requests.Session:
    """An HTTP session for one node, to share between :class:`VaultClient` objects so
    their connections are kept alive across them (a port-forward pays a websocket per
    connection). hvac takes ``verify`` from a given session, so it is set here."""
    session = requests.Session()
    session.verify = str(ca_file) if ca_file else True
    return session


class VaultClient:
    """One node's API at ``address``, verifying TLS against ``ca_file``.

    Without ``session`` each client has its own connections; with one (see
    :func:`keep_alive_session`) the client, and every ``with_token``/``with_timeout``
    copy of it, reuses the session's kept-alive connections. The token is sent per
    request, never stored on the session."""

    def __init__(
        self,
        address: str,
        *,
        ca_file: Path | str | None,
        token: str | None = None,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.address = address
        self.ca_file = ca_file
        self.timeout = timeout
        self._shared = session
        self._client = hvac.Client(
            url=address,
            token=token,
            verify=str(ca_file) if ca_file else True,
            timeout=timeout,
            session=session,
        )

    def __repr__(self) -> str:
        return f"VaultClient({self.address!r})"

    def with_token(self, token: str | None) -> VaultClient:
        return VaultClient(
            self.address,
            ca_file=self.ca_file,
            token=token,
            timeout=self.timeout,
            session=self._shared,
        )

    def with_timeout(self, timeout: float) -> VaultClient:
        """The same client with another per-request timeout (short ones for polling)."""
        return VaultClient(
            self.address,
            ca_file=self.ca_file,
            token=self._client.token,
            timeout=timeout,
            session=self._shared,
        )

    # --- raw access -------------------------------------------------------------
    def _request(self, method: str, path: str, *, json: Any = None, what: str | None = None) -> Any:
        with _mapped_errors(self.address, what or f"{method} {path}"):
            response = self._client.adapter.request(method, path, json=json)
        if isinstance(response, requests.Response):
            if response.status_code == 204 or not response.content:
                return None
            return response.json()
        return response

    def read(self, path: str) -> dict[str, Any] | None:
        """GET /v1/<path>; None when the path does not exist."""
        try:
            result = self._request("GET", f"/v1/{path}")
        except NotFoundError:
            return None
        return result if isinstance(result, dict) else None

    def write(self, path: str, data: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """POST /v1/<path>."""
        result = self._request("POST", f"/v1/{path}", json=data or {})
        return result if isinstance(result, dict) else None

    def delete(self, path: str) -> None:
        """DELETE /v1/<path>."""
        self._request("DELETE", f"/v1/{path}")

    def list_keys(self, path: str) -> list[str]:
        """LIST /v1/<path>; [] when nothing is there."""
        try:
            result = self._request("LIST", f"/v1/{path}")
        except NotFoundError:
            return []
        if not isinstance(result, dict):
            return []
        return list(result.get("data", {}).get("keys", []))

    # --- sys: status, init, seal -----------------------------------------------
    def read_seal_status(self) -> dict[str, Any]:
        """GET /v1/sys/seal-status (unauthenticated)."""
        result = self._request("GET", "/v1/sys/seal-status", what="seal status")
        return dict(result or {})

    def read_health(self) -> dict[str, Any]:
        """GET /v1/sys/health, with every state answered as 200 so the body is always read."""
        path = (
            "/v1/sys/health?standbyok=true&perfstandbyok=true&sealedcode=200"
            "&uninitcode=200&drsecondarycode=200&performancestandbycode=200"
        )
        with _mapped_errors(self.address, "health"):
            response = self._client.adapter.get(path, raise_exception=False)
        if isinstance(response, requests.Response):
            return dict(response.json())
        return dict(response) if isinstance(response, dict) else {}

    def read_leader(self) -> dict[str, Any]:
        """GET /v1/sys/leader (unauthenticated): is_self, leader_address, ha_enabled."""
        return dict(self._request("GET", "/v1/sys/leader", what="leader") or {})

    def _init_client(self) -> VaultClient:
        """This client with room for ``sys/init``: the server generates its keys and, on raft,
        bootstraps storage before it answers (seconds on a busy machine). A timed-out init
        cannot be retried (the server may have initialized), so it gets a long timeout."""
        return self.with_timeout(max(self.timeout, INIT_TIMEOUT))

    def initialize(self, *, recovery_shares: int, recovery_threshold: int) -> InitResult:
        """PUT /v1/sys/init with recovery keys (auto-unseal)."""
        body = {"recovery_shares": recovery_shares, "recovery_threshold": recovery_threshold}
        result = self._init_client()._request("PUT", "/v1/sys/init", json=body, what="init") or {}
        return InitResult(
            root_token=result["root_token"],
            recovery_keys=list(result.get("recovery_keys_b64") or result.get("recovery_keys", [])),
            keys=list(result.get("keys_base64") or result.get("keys", [])),
        )

    def initialize_shamir(self, *, shares: int, threshold: int) -> InitResult:
        """PUT /v1/sys/init with Shamir unseal keys (a server without auto-unseal)."""
        body = {"secret_shares": shares, "secret_threshold": threshold}
        result = self._init_client()._request("PUT", "/v1/sys/init", json=body, what="init") or {}
        return InitResult(
            root_token=result["root_token"],
            recovery_keys=[],
            keys=list(result.get("keys_base64") or result.get("keys", [])),
        )

    def unseal(self, key: str) -> dict[str, Any]:
        """PUT /v1/sys/unseal with one key share (a recovery key on auto-unseal)."""
        return dict(self._request("PUT", "/v1/sys/unseal", json={"key": key}, what="unseal") or {})

    def seal(self) -> None:
        """PUT /v1/sys/seal."""
        self._request("PUT", "/v1/sys/seal", what="seal")

    def step_down(self) -> None:
        """PUT /v1/sys/step-down: the active node gives up leadership."""
        self._request("PUT", "/v1/sys/step-down", what="step-down")

    # --- raft ------------------------------------------------------------------
    def read_raft_configuration(self) -> list[dict[str, Any]]:
        """GET /v1/sys/storage/raft/configuration: the servers with node_id, leader, voter."""
        result = self._request("GET", "/v1/sys/storage/raft/configuration", what="raft config")
        return list((result or {}).get("data", {}).get("config", {}).get("servers", []))

    def read_raft_voters(self) -> dict[str, bool]:
        """Each raft server's node_id and whether it is a voter (the raft configuration)."""
        return {s["node_id"]: bool(s.get("voter")) for s in self.read_raft_configuration()}

    def join_raft(self, *, leader_api_addr: str, leader_ca_cert: str) -> bool:
        """POST /v1/sys/storage/raft/join: join this (uninitialized) node to a leader."""
        body = {"leader_api_addr": leader_api_addr, "leader_ca_cert": leader_ca_cert}
        result = self._request("POST", "/v1/sys/storage/raft/join", json=body, what="raft join")
        return bool((result or {}).get("joined"))

    def read_autopilot_state(self) -> dict[str, Any]:
        """GET /v1/sys/storage/raft/autopilot/state."""
        result = self._request("GET", "/v1/sys/storage/raft/autopilot/state", what="autopilot")
        return dict((result or {}).get("data", {}))

    def configure_autopilot(self, **settings: Any) -> None:
        """POST /v1/sys/storage/raft/autopilot/configuration."""
        self._request(
            "POST",
            "/v1/sys/storage/raft/autopilot/configuration",
            json=settings,
            what="autopilot configuration",
        )

    def set_autopilot_stabilization(self, seconds: float) -> None:
        """Autopilot promotes a node stable for ``seconds`` to voter; dead servers are kept."""
        self.configure_autopilot(
            server_stabilization_time=f"{int(seconds * 1000)}ms", cleanup_dead_servers=False
        )

    def take_raft_snapshot(self, destination: Path) -> int:
        """GET /v1/sys/storage/raft/snapshot, streamed to ``destination``; returns its size."""
        url = f"{self.address}/v1/sys/storage/raft/snapshot"
        with _mapped_errors(self.address, "raft snapshot"):
            response = self._session().get(url, stream=True, timeout=60, verify=self._verify())
            self._raise_for(response, "raft snapshot")
            size = 0
            with open(destination, "wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    size += len(chunk)
        return size

    def restore_raft_snapshot(self, source: Path, *, force: bool) -> None:
        """POST /v1/sys/storage/raft/snapshot[-force] with the snapshot file as the body."""
        endpoint = "snapshot-force" if force else "snapshot"
        url = f"{self.address}/v1/sys/storage/raft/{endpoint}"
        with _mapped_errors(self.address, "raft snapshot restore"), open(source, "rb") as body:
            response = self._session().post(url, data=body, timeout=300, verify=self._verify())
            self._raise_for(response, "raft snapshot restore")

    def _verify(self) -> str | bool:
        # Passed per request: a session-level verify loses to $REQUESTS_CA_BUNDLE.
        return str(self.ca_file) if self.ca_file else True

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # loopback only: no proxy, no CA bundle from the environment
        if self._client.token:
            session.headers["X-Vault-Token"] = self._client.token
        return session

    def _raise_for(self, response: requests.Response, what: str) -> None:
        if response.status_code < 400:
            return
        try:
            errors = "; ".join(response.json().get("errors", []))
        except ValueError:
            errors = response.text[:200]
        if response.status_code == 503:
            raise SealedError(f"{what} on {self.address}: sealed or not ready ({errors})")
        raise VaultApiError(f"{what} on {self.address} failed ({response.status_code}): {errors}")

    # --- secrets and auth ------------------------------------------------------
    def write_kv(self, mount: str, path: str, data: dict[str, Any]) -> int:
        """POST /v1/<mount>/data/<path> (kv-v2); returns the new version."""
        result = self.write(f"{mount}/data/{path}", {"data": data}) or {}
        return int(result.get("data", {}).get("version", 0))

    def read_kv(
        self, mount: str, path: str, *, version: int | None = None
    ) -> dict[str, Any] | None:
        """GET /v1/<mount>/data/<path> (kv-v2); None when absent."""
        suffix = f"?version={version}" if version else ""
        result = self.read(f"{mount}/data/{path}{suffix}")
        if not result:
            return None
        data = result.get("data", {}).get("data")
        return dict(data) if isinstance(data, dict) else None

    def login_kubernetes(self, *, role: str, jwt: str, mount: str = "kubernetes") -> str:
        """POST /v1/auth/<mount>/login; returns the client token."""
        result = self._request(
            "POST",
            f"/v1/auth/{mount}/login",
            json={"role": role, "jwt": jwt},
            what=f"kubernetes login (role {role})",
        )
        return str((result or {})["auth"]["client_token"])

    def lookup_self(self) -> dict[str, Any]:
        """GET /v1/auth/token/lookup-self."""
        result = self._request("GET", "/v1/auth/token/lookup-self", what="token lookup")
        return dict((result or {}).get("data", {}))

    def create_token(self, *, policies: list[str], ttl: str, orphan: bool = True) -> str:
        """POST /v1/auth/token/create[-orphan]; returns the token."""
        path = "/v1/auth/token/create-orphan" if orphan else "/v1/auth/token/create"
        body = {"policies": policies, "ttl": ttl, "renewable": True, "no_default_policy": True}
        result = self._request("POST", path, json=body, what="token create")
        return str((result or {})["auth"]["client_token"])
