"""The EKS Terraform module, checked without a provider or an AWS account.

``terraform fmt -check`` runs when terraform is installed. The rest reads the HCL as
text, block by block (strings are skipped when matching braces), and asserts what a
reviewer of a production KMS/S3/IAM change would: key rotation on, the seal key usable
only by the seal's role, a versioned, KMS-encrypted, non-public bucket whose old
versions expire, one IRSA role per service account whose trust names exactly
``system:serviceaccount:<namespace>:<name>``, and permission policies that allow what
each pod does and nothing more: for every principal of :mod:`vaultdr.principals`, the
role policy and the key policies grant exactly the data's actions on the data's kinds of
resource. Every output the EKS values files ask for exists.

What this cannot show: that ``terraform plan`` succeeds (it needs the AWS provider,
downloaded from the registry) or that AWS accepts the policies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vaultdr.principals import (
    CONFIGURE,
    RESTORE,
    SEAL,
    SNAPSHOT,
    STACK_PRINCIPALS,
    Principal,
    ResourceKind,
)

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "environments/eks/terraform"
EKS_VALUES = sorted((REPO / "environments/eks").glob("*-values.yaml"))
PLACEHOLDER = re.compile(r"REPLACE_WITH_TERRAFORM_OUTPUT_([a-z0-9_]+)")


def source() -> str:
    """Every .tf file of the module, comments removed."""
    text = "\n".join(path.read_text() for path in sorted(MODULE.glob("*.tf")))
    return re.sub(r"^\s*#.*$", "", text, flags=re.MULTILINE)


def block_end(text: str, start: int) -> int:
    """Index of the brace closing the block whose body starts at ``start``."""
    depth, index, in_string = 1, start, False
    while index < len(text):
        char = text[index]
        if in_string:
            if char == "\\":
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise AssertionError("unbalanced braces in the Terraform module")


def blocks(text: str, header: str) -> list[str]:
    """The bodies of every block whose header matches the regex ``header``."""
    found = []
    for match in re.finditer(rf"(?m)^\s*{header}\s*\{{", text):
        found.append(text[match.end() : block_end(text, match.end())])
    return found


def block(text: str, header: str) -> str:
    (body,) = blocks(text, header)
    return body


def resource(kind: str, name: str) -> str:
    return block(source(), rf'resource\s+"{kind}"\s+"{name}"')


def policy_document(name: str) -> str:
    return block(source(), rf'data\s+"aws_iam_policy_document"\s+"{name}"')


def strings(text: str) -> list[str]:
    return re.findall(r'"((?:[^"\\]|\\.)*)"', text)


def listed(body: str, attribute: str) -> list[str]:
    """The quoted items of ``attribute = [...]`` in a block body (first occurrence)."""
    match = re.search(rf"(?m)^\s*{attribute}\s*=\s*\[(.*?)\]", body, re.DOTALL)
    assert match, f"no {attribute} list"
    return strings(match.group(1))


def setting(body: str, attribute: str) -> str:
    match = re.search(rf"(?m)^\s*{attribute}\s*=\s*(.+?)\s*$", body)
    assert match, f"no {attribute}"
    return match.group(1)


def statements(document: str) -> list[str]:
    return blocks(document, "statement")


def allowed_actions(document: str) -> set[str]:
    return {action for action, _ in grants(document)}


#: How the module names each kind of resource of vaultdr.principals.
RESOURCE_KINDS = {
    "aws_kms_key.seal.arn": ResourceKind.SEAL_KEY,
    "aws_kms_key.snapshots.arn": ResourceKind.SNAPSHOT_KEY,
    "aws_s3_bucket.snapshots.arn": ResourceKind.BUCKET,
    '"${aws_s3_bucket.snapshots.arn}/${var.snapshot_prefix}/*"': ResourceKind.SNAPSHOTS,
    "local.ssm_arn": ResourceKind.BREAK_GLASS,
}


def resource_kinds(statement: str) -> set[ResourceKind]:
    """The kinds of resource a statement's ``resources = [...]`` names (unknown: fail)."""
    match = re.search(r"(?m)^\s*resources\s*=\s*\[(.*?)\]", statement, re.DOTALL)
    assert match, "no resources list"
    items = [item.strip() for item in match.group(1).split(",") if item.strip()]
    unknown = [item for item in items if item not in RESOURCE_KINDS]
    assert not unknown, f"a resource vaultdr.principals has no kind for: {unknown}"
    return {RESOURCE_KINDS[item] for item in items}


def grants(document: str) -> set[tuple[str, ResourceKind]]:
    """(action, kind of resource) for every Allow statement of a policy document."""
    found: set[tuple[str, ResourceKind]] = set()
    for statement in statements(document):
        if re.search(r'effect\s*=\s*"Deny"', statement):
            continue
        kinds = resource_kinds(statement)
        found |= {(action, kind) for action in listed(statement, "actions") for kind in kinds}
    return found


def data_grants(who: Principal) -> set[tuple[str, ResourceKind]]:
    return {(action, g.resource) for g in who.grants for action in g.actions}


def key_policy_grants(document: str) -> dict[str, set[str]]:
    """Per IRSA role a key policy names (its principals), the actions it allows that role."""
    found: dict[str, set[str]] = {}
    for statement in statements(document):
        for role in re.findall(r'aws_iam_role\.irsa\["(\w+)"\]', statement):
            found.setdefault(role, set()).update(listed(statement, "actions"))
    return found


# -- formatting ----------------------------------------------------------------------------


def test_the_module_is_terraform_fmt_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not on PATH; `terraform fmt -check -recursive` not run")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(MODULE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_aws_provider_is_pinned_to_one_major_version() -> None:
    versions = (MODULE / "versions.tf").read_text()
    aws = block(versions, r"aws\s*=")
    assert setting(aws, "source") == '"hashicorp/aws"'
    assert setting(aws, "version") == '"~> 5.0"'


# -- KMS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["seal", "snapshots"])
def test_kms_keys_rotate_and_cannot_be_deleted_at_once(key: str) -> None:
    body = resource("aws_kms_key", key)
    assert setting(body, "enable_key_rotation") == "true"
    assert setting(body, "deletion_window_in_days") == "var.kms_deletion_window_days"
    default = block(source(), r'variable\s+"kms_deletion_window_days"')
    assert int(setting(default, "default")) >= 30
    assert setting(body, "policy") == f"data.aws_iam_policy_document.{key}_key.json"


def test_the_seal_key_is_usable_by_the_seal_role_only() -> None:
    document = policy_document("seal_key")
    (use,) = statements(document)  # the admin statement comes from source_policy_documents
    assert 'aws_iam_role.irsa["seal"].arn' in use
    assert key_policy_grants(document) == {"seal": SEAL.actions_on(ResourceKind.SEAL_KEY)}
    assert "data.aws_iam_policy_document.key_admin.json" in document


def test_key_administrators_manage_the_keys_but_cannot_use_them() -> None:
    actions = set(listed(policy_document("key_admin"), "actions"))
    assert {"kms:ScheduleKeyDeletion", "kms:PutKeyPolicy", "kms:EnableKeyRotation"} <= actions
    assert not actions & {
        "kms:*",
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:ReEncrypt*",
    }


def test_snapshot_key_use_is_limited_to_s3_on_behalf_of_the_agents() -> None:
    document = policy_document("snapshots_key")
    uses = statements(document)
    principals = [re.findall(r'aws_iam_role\.irsa\["(\w+)"\]', s) for s in uses]
    assert principals == [["snapshot"], ["restore"]]
    for statement in uses:
        assert '"kms:ViaService"' in statement and "s3.${var.region}.amazonaws.com" in statement


@pytest.mark.parametrize(
    ("key", "kind"),
    [("seal_key", ResourceKind.SEAL_KEY), ("snapshots_key", ResourceKind.SNAPSHOT_KEY)],
)
def test_each_key_policy_lets_exactly_the_principals_use_it_that_the_data_says(
    key: str, kind: ResourceKind
) -> None:
    wanted = {p.name: p.actions_on(kind) for p in STACK_PRINCIPALS if p.actions_on(kind)}
    assert key_policy_grants(policy_document(key)) == wanted


# -- S3 ------------------------------------------------------------------------------------


def test_the_snapshot_bucket_is_versioned() -> None:
    body = resource("aws_s3_bucket_versioning", "snapshots")
    assert setting(block(body, "versioning_configuration"), "status") == '"Enabled"'


def test_the_snapshot_bucket_encrypts_with_the_snapshot_key_and_a_bucket_key() -> None:
    rule = block(
        resource("aws_s3_bucket_server_side_encryption_configuration", "snapshots"), "rule"
    )
    default = block(rule, "apply_server_side_encryption_by_default")
    assert setting(default, "sse_algorithm") == '"aws:kms"'
    assert setting(default, "kms_master_key_id") == "aws_kms_key.snapshots.arn"
    assert setting(rule, "bucket_key_enabled") == "true"


def test_the_snapshot_bucket_can_never_be_public() -> None:
    body = resource("aws_s3_bucket_public_access_block", "snapshots")
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert setting(body, flag) == "true"
    deny = statements(policy_document("bucket"))
    assert any('"aws:SecureTransport"' in s and '"false"' in s for s in deny)


def test_old_snapshot_versions_expire() -> None:
    rule = block(resource("aws_s3_bucket_lifecycle_configuration", "snapshots"), "rule")
    assert setting(rule, "status") == '"Enabled"'
    expiration = block(rule, "noncurrent_version_expiration")
    assert setting(expiration, "noncurrent_days") == "var.noncurrent_version_days"


def test_object_lock_is_opt_in() -> None:
    assert setting(resource("aws_s3_bucket", "snapshots"), "object_lock_enabled") == (
        "var.object_lock_days > 0"
    )
    lock = resource("aws_s3_bucket_object_lock_configuration", "snapshots")
    assert setting(lock, "count") == "var.object_lock_days > 0 ? 1 : 0"
    variable = block(source(), r'variable\s+"object_lock_days"')
    assert setting(variable, "default") == "0"


# -- IRSA ----------------------------------------------------------------------------------


def test_there_is_one_role_per_service_account() -> None:
    accounts = block(source(), r"service_accounts\s*=")
    mapping = dict(re.findall(r"(?m)^\s*(\w+)\s*=\s*(\S+)\s*$", accounts))
    assert mapping == {
        "seal": "var.vault_service_account",
        "snapshot": "var.agent_service_accounts.snapshot",
        "restore": "var.agent_service_accounts.restore",
        "configure": "var.agent_service_accounts.configure",
    }
    assert setting(resource("aws_iam_role", "irsa"), "for_each") == "local.service_accounts"
    defaults = block(source(), r'variable\s+"agent_service_accounts"')
    for agent in ("snapshot", "restore", "configure"):
        assert f'{agent} = "vaultdr-{agent}"' in re.sub(r"\s+", " ", defaults)


def test_each_role_trusts_exactly_its_namespace_and_service_account() -> None:
    trust = policy_document("irsa_trust")
    assert setting(trust, "for_each") == "local.service_accounts"
    (statement,) = statements(trust)
    assert listed(statement, "actions") == ["sts:AssumeRoleWithWebIdentity"]
    assert "var.oidc_provider_arn" in block(statement, "principals")
    conditions = {
        strings(setting(c, "variable"))[0]: (strings(setting(c, "test"))[0], listed(c, "values"))
        for c in blocks(statement, "condition")
    }
    assert conditions == {
        "${local.oidc_host}:sub": (
            "StringEquals",
            ["system:serviceaccount:${var.namespace}:${each.value}"],
        ),
        "${local.oidc_host}:aud": ("StringEquals", ["sts.amazonaws.com"]),
    }
    assert "StringLike" not in trust  # no wildcard subject


def test_no_role_may_do_everything() -> None:
    for name in ("seal", "snapshot", "restore", "configure"):
        actions = allowed_actions(policy_document(name))
        assert not [a for a in actions if a == "*" or a.endswith(":*")], name


@pytest.mark.parametrize("who", STACK_PRINCIPALS, ids=lambda p: p.name)
def test_each_role_is_granted_exactly_its_principals_actions_on_the_same_resources(
    who: Principal,
) -> None:
    granted, wanted = grants(policy_document(who.name)), data_grants(who)
    assert granted == wanted, (
        f"iam.tf grants the {who.name} role more: {sorted(granted - wanted, key=str)}; "
        f"less: {sorted(wanted - granted, key=str)} (vaultdr/principals.py is the source)"
    )


def test_the_seal_role_may_only_wrap_and_unwrap_with_the_seal_key() -> None:
    document = policy_document("seal")
    assert allowed_actions(document) == SEAL.actions()
    assert re.search(r"resources\s*=\s*\[aws_kms_key\.seal\.arn\]", document)


def test_the_snapshot_agent_may_manage_snapshots_under_its_prefix_only() -> None:
    document = policy_document("snapshot")
    assert allowed_actions(document) == SNAPSHOT.actions()
    assert "${aws_s3_bucket.snapshots.arn}/${var.snapshot_prefix}/*" in document
    assert '"s3:prefix"' in document
    assert "aws_kms_key.snapshots.arn" in document and "aws_kms_key.seal" not in document
    assert "ssm:" not in document


def test_the_restore_watcher_reads_snapshots_and_break_glass_material() -> None:
    document = policy_document("restore")
    assert allowed_actions(document) == RESTORE.actions()
    assert "aws_kms_key.seal" not in document
    assert re.search(r"resources\s*=\s*\[local\.ssm_arn\]", document)
    main = block((MODULE / "main.tf").read_text(), "locals")
    assert setting(main, "ssm_arn").endswith(':parameter${local.ssm_prefix}/*"')
    assert setting(main, "ssm_prefix") == '"/vaultdr/${var.cluster}"'


def test_the_configure_job_may_only_read_break_glass_material() -> None:
    assert allowed_actions(policy_document("configure")) == CONFIGURE.actions()


def test_every_role_gets_its_own_policy() -> None:
    policies = block(source(), r"role_policies\s*=")
    mapping = dict(re.findall(r"(?m)^\s*(\w+)\s*=\s*(\S+)\s*$", policies))
    assert mapping == {
        role: f"data.aws_iam_policy_document.{role}.json"
        for role in ("seal", "snapshot", "restore", "configure")
    }
    # One role per principal of the stack, named as the emulators' policies are.
    assert set(mapping) == {who.name for who in STACK_PRINCIPALS}
    policy = resource("aws_iam_role_policy", "irsa")
    assert setting(policy, "name") == '"vaultdr-${each.key}"'
    assert {who.policy_name for who in STACK_PRINCIPALS} == {f"vaultdr-{r}" for r in mapping}


# -- outputs -------------------------------------------------------------------------------


def outputs() -> dict[str, str]:
    text = (MODULE / "outputs.tf").read_text()
    names = re.findall(r'(?m)^output\s+"(\w+)"', text)
    return {name: block(text, rf'output\s+"{name}"') for name in names}


def test_every_placeholder_in_the_eks_values_is_a_terraform_output() -> None:
    assert [p.name for p in EKS_VALUES] == ["openbao-values.yaml", "ops-values.yaml"]
    wanted = {name for path in EKS_VALUES for name in PLACEHOLDER.findall(path.read_text())}
    assert {"seal_role_arn", "seal_kms_key_id", "snapshot_role_arn", "restore_role_arn"} <= wanted
    missing = sorted(wanted - set(outputs()))
    assert not missing, f"no such terraform output: {missing}"


def test_every_output_says_where_it_goes() -> None:
    for name, body in outputs().items():
        assert strings(setting(body, "description"))[0], name


def test_every_output_vaultdr_fills_the_values_from_is_defined() -> None:
    from vaultdr.envs.kube import terraform

    missing = sorted(set(terraform.REQUIRED) - set(outputs()))
    assert not missing, f"vaultdr kube values needs outputs that outputs.tf lacks: {missing}"


def test_the_snapshot_key_output_is_the_key_the_snapshot_role_may_use() -> None:
    # The snapshot agent encrypts with `snapshots_kms_key_arn` (kube.snapshot_kms_key_id);
    # its role's only KMS grant is on that key, and none on the seal key.
    assert setting(outputs()["snapshots_kms_key_arn"], "value") == "aws_kms_key.snapshots.arn"
    kms = [s for s in statements(policy_document("snapshot")) if "kms:" in s]
    assert kms and all("aws_kms_key.snapshots.arn" in s for s in kms)
    assert not any("aws_kms_key.seal" in s for s in kms)
    assert set(key_policy_grants(policy_document("seal_key"))) == {"seal"}
