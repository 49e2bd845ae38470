"""Configure: config-as-code for secrets engines, policies and auth methods.

Reconciles the server towards ``stack.yaml``'s ``configure`` section and
reports each change it made (or, with ``dry_run``, would make). It is
idempotent: a second run reports no changes. With ``purge: true`` it also
deletes policies and roles that are no longer declared (never ``root`` or
``default``, never vaultdr's own).

The Kubernetes auth *config* (API host, its CA, the reviewer token) is written
on every run, because a restored snapshot carries the old cluster's values; it
is reported as a change only when host or CA actually differed.

vaultdr's own pieces are declared here too, so a restore re-creates them: the
snapshot agent's policy (read ``sys/storage/raft/snapshot`` only) and the
Kubernetes role bound to its service account.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vaultdr.config import AppRoleRole, KubernetesRole, SecretsEngine, Stack
from vaultdr.vault import VaultClient

SNAPSHOT_POLICY = "vaultdr-snapshot"
SNAPSHOT_ROLE = "vaultdr-snapshot"
SNAPSHOT_POLICY_HCL = 'path "sys/storage/raft/snapshot" { capabilities = ["read"] }\n'
PROTECTED_POLICIES = {"root", "default", SNAPSHOT_POLICY}


@dataclass(frozen=True)
class Change:
    action: str  # create | update | delete | apply
    target: str

    def __str__(self) -> str:
        return f"{self.action:7} {self.target}"


@dataclass(frozen=True)
class KubernetesTarget:
    """Where the Kubernetes API is, as the auth method must be told after every restore.

    ``local_jwt``: the server runs in a pod and reviews tokens with its own service
    account's token (``disable_local_ca_jwt=false``, no ``token_reviewer_jwt``), as on
    kind and eks; otherwise ``reviewer_jwt`` is the reviewer's token (local stand-in).
    """

    host: str
    ca_pem: str
    reviewer_jwt: str = field(repr=False)
    issuer: str = ""
    local_jwt: bool = False


@dataclass
class Reconciler:
    client: VaultClient
    stack: Stack
    kubernetes: KubernetesTarget | None
    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)

    def _do(self, action: str, target: str, path: str, body: dict[str, Any] | None) -> None:
        self.changes.append(Change(action, target))
        if self.dry_run:
            return
        if action == "delete":
            self.client.delete(path)
        else:
            self.client.write(path, body)

    def run(self) -> list[Change]:
        self.secrets_engines()
        self.policies()
        auth = self.stack.configure.auth
        if auth.kubernetes is not None:
            self.kubernetes_auth(auth.kubernetes.path, self._kubernetes_roles())
        if auth.approle is not None:
            self.approle_auth(auth.approle.path, auth.approle.roles)
        return self.changes

    # --- secrets engines --------------------------------------------------------
    def secrets_engines(self) -> None:
        mounts = (self.client.read("sys/mounts") or {}).get("data", {})
        for engine in self.stack.configure.secrets_engines:
            self._secrets_engine(engine, mounts.get(engine.path.strip("/") + "/"))

    def _secrets_engine(self, engine: SecretsEngine, current: dict[str, Any] | None) -> None:
        path = engine.path.strip("/")
        if current is None:
            body: dict[str, Any] = {
                "type": engine.type,
                "description": engine.description,
                "options": dict(engine.options),
            }
            self._do(
                "create", f"secrets engine {path}/ ({engine.type})", f"sys/mounts/{path}", body
            )
            return
        have = {k: str(v) for k, v in (current.get("options") or {}).items()}
        if any(have.get(k) != v for k, v in engine.options.items()):
            tune: dict[str, Any] = {"options": dict(engine.options)}
            self._do("update", f"secrets engine {path}/ options", f"sys/mounts/{path}/tune", tune)

    # --- policies ---------------------------------------------------------------
    def _desired_policies(self) -> dict[str, str]:
        desired = dict(self.stack.configure.policies)
        if self.stack.snapshots.enabled:
            desired[SNAPSHOT_POLICY] = SNAPSHOT_POLICY_HCL
        return desired

    def policies(self) -> None:
        desired = self._desired_policies()
        for name, text in desired.items():
            current = (self.client.read(f"sys/policies/acl/{name}") or {}).get("data", {})
            if not current:
                self._do("create", f"policy {name}", f"sys/policies/acl/{name}", {"policy": text})
            elif current.get("policy", "").strip() != text.strip():
                self._do("update", f"policy {name}", f"sys/policies/acl/{name}", {"policy": text})
        if self.stack.configure.purge:
            for name in self.client.list_keys("sys/policies/acl"):
                if name not in desired and name not in PROTECTED_POLICIES:
                    self._do("delete", f"policy {name}", f"sys/policies/acl/{name}", None)

    # --- auth methods -----------------------------------------------------------
    def _ensure_auth(self, path: str, kind: str) -> None:
        methods = (self.client.read("sys/auth") or {}).get("data", {})
        if f"{path}/" not in methods:
            self._do("create", f"auth method {path}/ ({kind})", f"sys/auth/{path}", {"type": kind})

    def _kubernetes_roles(self) -> dict[str, KubernetesRole]:
        auth = self.stack.configure.auth.kubernetes
        roles = dict(auth.roles) if auth else {}
        if self.stack.snapshots.enabled:
            sa = self.stack.snapshots.service_account
            roles[SNAPSHOT_ROLE] = KubernetesRole(
                bound_service_account_names=[sa.name],
                bound_service_account_namespaces=[sa.namespace],
                policies=[SNAPSHOT_POLICY],
                ttl=900,
                audience="vault",
            )
        return roles

    def kubernetes_auth(self, path: str, roles: dict[str, KubernetesRole]) -> None:
        self._ensure_auth(path, "kubernetes")
        if self.kubernetes is not None:
            self._kubernetes_config(path, self.kubernetes)
        wanted = {name: _kubernetes_role_body(role) for name, role in roles.items()}
        self._roles(f"auth/{path}/role", wanted, label=f"kubernetes role ({path})")

    def _kubernetes_config(self, path: str, target: KubernetesTarget) -> None:
        current = {} if self.dry_run and not self._auth_exists(path) else self._read_config(path)
        body: dict[str, Any] = {
            "kubernetes_host": target.host,
            "kubernetes_ca_cert": target.ca_pem,
            "disable_local_ca_jwt": not target.local_jwt,
        }
        if not target.local_jwt:
            body["token_reviewer_jwt"] = target.reviewer_jwt
        if target.issuer:
            body["issuer"] = target.issuer
        differs = (
            current.get("kubernetes_host") != target.host
            or (current.get("kubernetes_ca_cert") or "").strip() != target.ca_pem.strip()
        )
        if differs:
            self.changes.append(
                Change("apply", f"kubernetes auth config ({path}) -> {target.host}")
            )
        if not self.dry_run:
            self.client.write(f"auth/{path}/config", body)

    def _auth_exists(self, path: str) -> bool:
        return f"{path}/" in (self.client.read("sys/auth") or {}).get("data", {})

    def _read_config(self, path: str) -> dict[str, Any]:
        return dict((self.client.read(f"auth/{path}/config") or {}).get("data", {}))

    def approle_auth(self, path: str, roles: dict[str, AppRoleRole]) -> None:
        self._ensure_auth(path, "approle")
        wanted = {name: _approle_body(role) for name, role in roles.items()}
        self._roles(f"auth/{path}/role", wanted, label=f"approle role ({path})")

    def _roles(self, base: str, wanted: dict[str, dict[str, Any]], *, label: str) -> None:
        for name, body in wanted.items():
            current = (self.client.read(f"{base}/{name}") or {}).get("data")
            if not current:
                self._do("create", f"{label} {name}", f"{base}/{name}", body)
            elif not _matches(current, body):
                self._do("update", f"{label} {name}", f"{base}/{name}", body)
        if self.stack.configure.purge:
            for name in self.client.list_keys(base):
                if name not in wanted:
                    self._do("delete", f"{label} {name}", f"{base}/{name}", None)


def _kubernetes_role_body(role: KubernetesRole) -> dict[str, Any]:
    body: dict[str, Any] = {
        "bound_service_account_names": sorted(role.bound_service_account_names),
        "bound_service_account_namespaces": sorted(role.bound_service_account_namespaces),
        "token_policies": sorted(role.policies),
        "token_ttl": int(role.ttl),
    }
    if role.audience:
        body["audience"] = role.audience
    return body


def _approle_body(role: AppRoleRole) -> dict[str, Any]:
    return {
        "token_policies": sorted(role.policies),
        "token_ttl": int(role.token_ttl),
        "secret_id_ttl": int(role.secret_id_ttl),
    }


def _matches(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key, value in wanted.items():
        have = current.get(key)
        if isinstance(value, list):
            if sorted(have or []) != value:
                return False
        elif have != value:
            return False
    return True


def reconcile(
    client: VaultClient,
    stack: Stack,
    *,
    kubernetes: KubernetesTarget | None,
    dry_run: bool = False,
) -> list[Change]:
    """Bring the server in line with ``stack.configure``; the list of changes made (or planned)."""
    return Reconciler(client, stack, kubernetes, dry_run=dry_run).run()
