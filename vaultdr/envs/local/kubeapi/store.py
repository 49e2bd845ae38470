"""The stand-in's state directory: its config, its service accounts, its secrets.

Everything the Kubernetes API stand-in knows lives in one directory ``DIR``:
``sa-signing-key.pem`` and ``admin-token`` (both 0600, created once and reused
across restarts), ``serviceaccounts.json`` (the source of truth, re-read on every
request and replaced atomically), and ``config.json`` (issuer, declared service
accounts, token reviewers), written by the caller before start. Declared service
accounts that are missing from ``serviceaccounts.json`` are created at every
start, like re-applying manifests.

Hazards:

* Whoever can read ``DIR`` can mint a token for any service account: the
  signing key and admin token are the cluster's crown jewels here.
* One server per ``DIR``: writes are serialized by an in-process lock only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vaultdr.errors import KubeApiError
from vaultdr.files import write_bytes_atomic

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"

SIGNING_KEY_FILE = "sa-signing-key.pem"
SERVICE_ACCOUNTS_FILE = "serviceaccounts.json"
ADMIN_TOKEN_FILE = "admin-token"
CONFIG_FILE = "config.json"

#: A service account's username is this prefix, then ``<namespace>:<name>``.
SA_PREFIX = "system:serviceaccount:"
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")

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


# --------------------------------------------------------------------------- config


def check_name(kind: str, value: object) -> str:
    """``value`` if it is a valid ``namespace`` (or other ``kind`` of) name; else ValueError."""
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
    return check_name("namespace", namespace), check_name("name", name)


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
        return f"{SA_PREFIX}{self.namespace}:{self.name}"

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
        write_bytes_atomic(self.path, (json.dumps(rows, indent=2) + "\n").encode())

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
