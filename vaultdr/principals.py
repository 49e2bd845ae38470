"""The AWS principals of the stack and what each may do: one description, rendered per target.

DESIGN promises the same stack in every environment, so every environment has the same
principals, each allowed the minimum its code really calls (through :mod:`vaultdr.aws`):

* ``seal`` — Vault/OpenBao's awskms seal: Encrypt, Decrypt, DescribeKey on the seal key.
* ``snapshot`` — the snapshot agent: list, put, head and prune (by version) snapshots;
  GenerateDataKey on the snapshot key for SSE-KMS.
* ``restore`` — the restore watcher: list and read snapshots, Decrypt them (SSE-KMS);
  read the break-glass material in SSM (the restored cluster's root token and keys).
* ``configure`` — the configure Job: read the root token in SSM.
* ``admin`` — the emulator's own administrator (bootstrap, faults, break-glass writes);
  on AWS that is the operator's credentials, never a principal of the stack.

Each :class:`Grant` names its actions, the kind of resource they apply to
(:class:`ResourceKind`) and the calls that need them. Two renderings:
:func:`for_emulator` (the local emulator and the kind Job's, both through
:mod:`vaultdr.envs.local.awsemu`) and :func:`for_aws` (real ARNs). On EKS,
``environments/eks/terraform/iam.tf`` (and the key policies in ``kms.tf``) grant the same;
tests/test_terraform.py holds them to this data.

Hazards:

* moto matches KMS and SSM statements only when ``Resource`` is ``"*"``, so
  :func:`for_emulator` scopes those to ``*`` (and S3 statements to the bucket, which moto
  does check); only :func:`for_aws` scopes them to the key and the parameter path.
* An agent that starts calling something new fails with AccessDenied until its grant is
  added here, and in iam.tf with it (the Terraform test says where they differ).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "ADMIN",
    "ADMIN_USER",
    "CONFIGURE",
    "PRINCIPALS",
    "RESTORE",
    "REVOKE_KMS_POLICY",
    "SEAL",
    "SNAPSHOT",
    "STACK_PRINCIPALS",
    "AwsResources",
    "Grant",
    "Principal",
    "ResourceKind",
    "break_glass_prefix",
    "for_aws",
    "for_emulator",
    "principal",
    "revoke_kms_policy",
    "seal_alias",
]

POLICY_VERSION = "2012-10-17"
#: The inline policy the revoke-KMS fault attaches to the seal's principal (user or role).
REVOKE_KMS_POLICY = "vaultdr-revoke-kms"
#: The emulator's admin user (one per emulator, whatever the cluster).
ADMIN_USER = "vaultdr-admin"


class ResourceKind(Enum):
    """What a grant applies to; each target names it its own way."""

    SEAL_KEY = "seal-key"
    """The KMS key of the awskms seal."""
    SNAPSHOT_KEY = "snapshot-key"
    """The KMS key of the snapshots' SSE-KMS (on the emulators: the seal key)."""
    BUCKET = "bucket"
    """The snapshot bucket itself (listings; on AWS limited to the snapshot prefix)."""
    SNAPSHOTS = "snapshots"
    """The objects in the bucket (on AWS those under the snapshot prefix)."""
    BREAK_GLASS = "break-glass"
    """SSM parameters under ``/vaultdr/<cluster>/``."""
    ANYTHING = "anything"
    """Every resource: the emulator's admin only."""


@dataclass(frozen=True)
class Grant:
    """``actions`` on one kind of resource, and the calls that need them."""

    resource: ResourceKind
    actions: tuple[str, ...]
    needed_by: str


@dataclass(frozen=True)
class Principal:
    """One principal of the stack: an IAM user on the emulators, an IRSA role on EKS."""

    name: str
    summary: str
    grants: tuple[Grant, ...]
    #: True for the emulator's admin, which real AWS does not have (the operator acts there).
    emulator_only: bool = False

    def actions(self) -> frozenset[str]:
        """Every action this principal is allowed, whatever the resource."""
        return frozenset(a for grant in self.grants for a in grant.actions)

    def actions_on(self, resource: ResourceKind) -> frozenset[str]:
        """The actions allowed on one kind of resource."""
        return frozenset(a for g in self.grants if g.resource is resource for a in g.actions)

    def user_name(self, cluster: str) -> str:
        """Its IAM user on an emulator: ``vaultdr-<name>-<cluster>`` (``vaultdr-admin``)."""
        return ADMIN_USER if self.emulator_only else f"vaultdr-{self.name}-{cluster}"

    @property
    def policy_name(self) -> str:
        """The name of its inline policy, as Terraform names the role's (``vaultdr-<name>``)."""
        return f"vaultdr-{self.name}"


SEAL = Principal(
    name="seal",
    summary="the awskms seal of Vault/OpenBao",
    grants=(
        Grant(
            ResourceKind.SEAL_KEY,
            ("kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"),
            "the seal: Encrypt wraps the root key, Decrypt unwraps it at every unseal, "
            "DescribeKey checks the key at start (and `vaultdr status` probes it)",
        ),
    ),
)

SNAPSHOT = Principal(
    name="snapshot",
    summary="the snapshot agent",
    grants=(
        Grant(
            ResourceKind.BUCKET,
            ("s3:ListBucket", "s3:ListBucketVersions"),
            "ListObjectsV2 (retention), ListObjectVersions (a failed upload or a pruned "
            "snapshot is removed with every version)",
        ),
        Grant(
            ResourceKind.SNAPSHOTS,
            ("s3:PutObject", "s3:GetObject", "s3:DeleteObjectVersion"),
            "PutObject (one request), HeadObject after it (needs s3:GetObject), "
            "DeleteObject with a VersionId (pruning, a failed upload)",
        ),
        Grant(
            ResourceKind.SNAPSHOT_KEY,
            ("kms:GenerateDataKey",),
            "SSE-KMS of the single-request PutObject (a multipart upload would also need "
            "kms:Decrypt; the agent never makes one, nor reads an object's body)",
        ),
    ),
)

RESTORE = Principal(
    name="restore",
    summary="the restore watcher",
    grants=(
        Grant(ResourceKind.BUCKET, ("s3:ListBucket",), "ListObjectsV2: the snapshots to pick"),
        Grant(
            ResourceKind.SNAPSHOTS,
            ("s3:GetObject",),
            "HeadObject (a snapshot's metadata) and GetObject (its bytes)",
        ),
        Grant(ResourceKind.SNAPSHOT_KEY, ("kms:Decrypt",), "GetObject of an SSE-KMS snapshot"),
        Grant(
            ResourceKind.BREAK_GLASS,
            ("ssm:GetParameter",),
            "the restored cluster's root token and recovery keys, whether the cluster was "
            "ever initialized, and configure after the restore",
        ),
    ),
)

CONFIGURE = Principal(
    name="configure",
    summary="the configure Job",
    grants=(
        Grant(ResourceKind.BREAK_GLASS, ("ssm:GetParameter",), "the root token to reconcile with"),
    ),
)

ADMIN = Principal(
    name="admin",
    summary="the emulator's administrator (bootstrap, faults, break-glass writes)",
    grants=(Grant(ResourceKind.ANYTHING, ("*",), "everything the emulator's operator does"),),
    emulator_only=True,
)

#: The principals of the stack itself, in every environment.
STACK_PRINCIPALS: tuple[Principal, ...] = (SEAL, SNAPSHOT, RESTORE, CONFIGURE)
#: Every principal an emulator has: the stack's and its admin.
PRINCIPALS: tuple[Principal, ...] = (ADMIN, *STACK_PRINCIPALS)


def principal(name: str) -> Principal:
    """The principal called ``name``; ValueError naming the known ones otherwise."""
    for found in PRINCIPALS:
        if found.name == name:
            return found
    known = ", ".join(p.name for p in PRINCIPALS)
    raise ValueError(f"no AWS principal {name!r} (the stack's principals: {known})")


def break_glass_prefix(cluster: str) -> str:
    """Where break-glass material of ``cluster`` lives in SSM (``<prefix>/root-token``, ...)."""
    return f"/vaultdr/{cluster}"


def seal_alias(cluster: str) -> str:
    """The KMS alias of ``cluster``'s seal key on the emulators (local and kind)."""
    return f"alias/vaultdr-{cluster}-seal"


# -- rendering -----------------------------------------------------------------------------

_SIDS = {
    ResourceKind.SEAL_KEY: "SealKey",
    ResourceKind.SNAPSHOT_KEY: "SnapshotKey",
    ResourceKind.BUCKET: "ListSnapshots",
    ResourceKind.SNAPSHOTS: "Snapshots",
    ResourceKind.BREAK_GLASS: "BreakGlass",
    ResourceKind.ANYTHING: "Everything",
}


def _statement(kind: ResourceKind, actions: list[str], resources: list[str]) -> dict[str, Any]:
    return {"Sid": _SIDS[kind], "Effect": "Allow", "Action": actions, "Resource": resources}


def _by_resource(who: Principal) -> dict[ResourceKind, list[str]]:
    """The principal's actions per kind of resource, in the order of its grants."""
    merged: dict[ResourceKind, list[str]] = {}
    for grant in who.grants:
        actions = merged.setdefault(grant.resource, [])
        actions.extend(a for a in grant.actions if a not in actions)
    return merged


def for_emulator(who: Principal, *, bucket: str | None = None) -> dict[str, Any]:
    """``who``'s policy document for the emulator (moto): KMS, SSM and admin statements on
    ``*`` (moto matches no other resource there), S3 statements on ``bucket`` (required
    when ``who`` has any)."""
    s3 = {ResourceKind.BUCKET: "", ResourceKind.SNAPSHOTS: "/*"}
    statements = []
    for kind, actions in _by_resource(who).items():
        if kind in s3 and not bucket:
            raise ValueError(f"the {who.name} principal's policy names the snapshot bucket")
        resource = f"arn:aws:s3:::{bucket}{s3[kind]}" if kind in s3 else "*"
        statements.append(_statement(kind, actions, [resource]))
    return {"Version": POLICY_VERSION, "Statement": statements}


@dataclass(frozen=True)
class AwsResources:
    """What :func:`for_aws` names: one cluster's resources in one account and region.

    ``snapshot_key_arn`` None means the snapshots are not SSE-KMS encrypted with a key of
    their own: the statements on the snapshot key are left out.
    """

    cluster: str
    region: str
    account_id: str
    bucket: str
    prefix: str
    seal_key_arn: str
    snapshot_key_arn: str | None = None
    partition: str = "aws"


def for_aws(who: Principal, resources: AwsResources) -> dict[str, Any]:
    """``who``'s policy document for real AWS, each statement on its resources' ARNs.

    Listings are limited to the snapshot prefix (``s3:prefix``), objects to those under it,
    KMS to the named keys, SSM to ``/vaultdr/<cluster>/*``. ValueError for the emulator's
    admin, which has no place on AWS.
    """
    if who.emulator_only:
        raise ValueError(f"the {who.name} principal exists on the emulators only")
    r = resources
    prefix = r.prefix.strip("/")
    bucket_arn = f"arn:{r.partition}:s3:::{r.bucket}"
    arns: dict[ResourceKind, list[str]] = {
        ResourceKind.SEAL_KEY: [r.seal_key_arn],
        ResourceKind.SNAPSHOT_KEY: [r.snapshot_key_arn] if r.snapshot_key_arn else [],
        ResourceKind.BUCKET: [bucket_arn],
        ResourceKind.SNAPSHOTS: [f"{bucket_arn}/{prefix}/*" if prefix else f"{bucket_arn}/*"],
        ResourceKind.BREAK_GLASS: [
            f"arn:{r.partition}:ssm:{r.region}:{r.account_id}:parameter"
            f"{break_glass_prefix(r.cluster)}/*"
        ],
    }
    statements = []
    for kind, actions in _by_resource(who).items():
        if not arns[kind]:
            continue
        statement = _statement(kind, actions, arns[kind])
        if kind is ResourceKind.BUCKET and prefix:
            statement["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}/", f"{prefix}/*"]}}
        statements.append(statement)
    return {"Version": POLICY_VERSION, "Statement": statements}


def revoke_kms_policy() -> dict[str, Any]:
    """The revoke-KMS fault: an explicit Deny of kms:Decrypt and kms:Encrypt, which wins
    over any Allow (on ``*``: moto needs it, and on AWS the seal uses one key only)."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {"Effect": "Deny", "Action": ["kms:Decrypt", "kms:Encrypt"], "Resource": "*"}
        ],
    }
