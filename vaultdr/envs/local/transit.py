"""The transit KMS: a second OpenBao server whose transit engine seals the cluster.

For ``seal: transit`` (and for engines without the built-in awskms seal, such
as OpenBao 2.7+). The KMS server uses single-node raft storage (OpenBao 2.7
dropped the ``file`` backend) and a single Shamir key; its
root token and unseal key go to SSM with the rest of the break-glass material.
The cluster's nodes hold a least-privilege token that may only encrypt and
decrypt with one key, so *revoking KMS access* is rewriting that one policy to
grant nothing (and restoring it puts the grant back): a real authorization
change the seal feels on its next call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vaultdr.envs.local.processes import ProcessRecord, free_port, spawn, tail, wait_for
from vaultdr.errors import EnvironmentStartError
from vaultdr.vault import VaultClient

SEAL_POLICY = "vaultdr-seal"


@dataclass(frozen=True)
class TransitKms:
    address: str
    mount_path: str
    key_name: str
    seal_token: str = field(repr=False)
    root_token: str = field(repr=False)
    unseal_key: str = field(repr=False)


def seal_policy(mount_path: str, key_name: str, *, allowed: bool = True) -> str:
    """The seal token's policy: encrypt/decrypt with one key, or (revoked) nothing at all."""
    if not allowed:
        return '# KMS access revoked by vaultdr (revoke-kms); restore-kms puts the grant back.\npath "sys/nothing" { capabilities = ["deny"] }\n'
    mount = mount_path.strip("/")
    return (
        f'path "{mount}/encrypt/{key_name}" {{ capabilities = ["update"] }}\n'
        f'path "{mount}/decrypt/{key_name}" {{ capabilities = ["update"] }}\n'
    )


def render_config(directory: Path, *, port: int, cluster_port: int, cert: Path, key: Path) -> str:
    return f"""# The transit KMS of the local stack (written by vaultdr).
api_addr      = {json.dumps(f"https://127.0.0.1:{port}")}
cluster_addr  = {json.dumps(f"https://127.0.0.1:{cluster_port}")}
storage "raft" {{
  path    = {json.dumps(str(directory / "data"))}
  node_id = "transit"
}}
listener "tcp" {{
  address         = {json.dumps(f"127.0.0.1:{port}")}
  cluster_address = {json.dumps(f"127.0.0.1:{cluster_port}")}
  tls_cert_file   = {json.dumps(str(cert))}
  tls_key_file    = {json.dumps(str(key))}
}}
"""


def start_transit_server(
    directory: Path, *, binary: str, port: int, cert: Path, key: Path, ca_file: Path
) -> ProcessRecord:
    """Start the KMS server process (sealed, uninitialized) and wait until it answers."""
    (directory / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    config = directory / "config.hcl"
    config.write_text(
        render_config(directory, port=port, cluster_port=free_port(), cert=cert, key=key)
    )
    log = directory / "server.log"
    _, record = spawn("transit", [binary, "server", f"-config={config}"], log=log)
    client = VaultClient(f"https://127.0.0.1:{port}", ca_file=ca_file)
    if not wait_for(lambda: bool(client.read_seal_status()), timeout=30):
        raise EnvironmentStartError(
            f"the transit KMS server on port {port} did not answer within 30 s; its log ends:\n"
            + tail(log),
            hint="see the log above; `vaultdr down` cleans up",
        )
    return record


def bootstrap_transit(address: str, *, ca_file: Path, mount_path: str, key_name: str) -> TransitKms:
    """Initialize and unseal the KMS server, create the key, the policy and the seal token."""
    client = VaultClient(address, ca_file=ca_file)
    init = client.initialize_shamir(shares=1, threshold=1)
    client.unseal(init.keys[0])
    root = client.with_token(init.root_token)
    if not wait_for(
        lambda: bool(root.read_health().get("initialized")) and _ready(root), timeout=30
    ):
        raise EnvironmentStartError(f"the transit KMS at {address} did not become active")
    root.write(f"sys/mounts/{mount_path.strip('/')}", {"type": "transit"})
    root.write(f"{mount_path.strip('/')}/keys/{key_name}", {"type": "aes256-gcm96"})
    root.write(f"sys/policies/acl/{SEAL_POLICY}", {"policy": seal_policy(mount_path, key_name)})
    token = root.create_token(policies=[SEAL_POLICY], ttl="768h", orphan=True)
    return TransitKms(
        address=address,
        mount_path=mount_path,
        key_name=key_name,
        seal_token=token,
        root_token=init.root_token,
        unseal_key=init.keys[0],
    )


def _ready(client: VaultClient) -> bool:
    health = client.read_health()
    return health.get("sealed") is False and health.get("standby") is False


def set_seal_access(
    address: str, *, ca_file: Path, root_token: str, mount_path: str, key_name: str, allowed: bool
) -> None:
    """Grant (``allowed``) or revoke the seal token's use of the key, by rewriting its policy."""
    root = VaultClient(address, ca_file=ca_file, token=root_token)
    policy = seal_policy(mount_path, key_name, allowed=allowed)
    root.write(f"sys/policies/acl/{SEAL_POLICY}", {"policy": policy})


def seal_access_allowed(address: str, *, ca_file: Path, root_token: str) -> bool:
    root = VaultClient(address, ca_file=ca_file, token=root_token)
    policy = (root.read(f"sys/policies/acl/{SEAL_POLICY}") or {}).get("data", {}).get("policy", "")
    return "encrypt" in str(policy)
