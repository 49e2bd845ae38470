"""The AWS principals as data (vaultdr.principals): least privilege, and its two renderings.

These pin what each principal may do, in words a reviewer reads; tests/test_terraform.py
holds iam.tf to the same data, and tests/test_aws_emulator.py the emulator's users.
"""

from __future__ import annotations

from typing import Any

import pytest

from vaultdr import principals
from vaultdr.principals import (
    ADMIN,
    CONFIGURE,
    PRINCIPALS,
    RESTORE,
    SEAL,
    SNAPSHOT,
    STACK_PRINCIPALS,
    AwsResources,
    ResourceKind,
    for_aws,
    for_emulator,
)

RESOURCES = AwsResources(
    cluster="prod",
    region="eu-west-1",
    account_id="111122223333",
    bucket="vaultdr-prod-snapshots",
    prefix="snapshots",
    seal_key_arn="arn:aws:kms:eu-west-1:111122223333:key/seal",
    snapshot_key_arn="arn:aws:kms:eu-west-1:111122223333:key/snapshots",
)


def statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    (found,) = [s for s in document["Statement"] if s["Sid"] == sid]
    return dict(found)


# -- what each principal may do ------------------------------------------------------------


def test_the_seal_may_only_wrap_and_unwrap_with_the_seal_key() -> None:
    assert SEAL.actions() == {"kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"}
    assert SEAL.actions_on(ResourceKind.SEAL_KEY) == SEAL.actions()


def test_the_snapshot_agent_puts_heads_lists_and_prunes_but_never_reads_a_body() -> None:
    assert SNAPSHOT.actions() == {
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:PutObject",
        "s3:GetObject",  # HeadObject after the upload
        "s3:DeleteObjectVersion",
        "kms:GenerateDataKey",
    }
    # Deleting without a version id would only add a delete marker: never needed.
    assert "s3:DeleteObject" not in SNAPSHOT.actions()
    assert "kms:Decrypt" not in SNAPSHOT.actions()
    assert SNAPSHOT.actions_on(ResourceKind.SEAL_KEY) == frozenset()


def test_the_restore_watcher_reads_snapshots_and_break_glass_and_writes_nothing() -> None:
    assert RESTORE.actions() == {
        "s3:ListBucket",
        "s3:GetObject",
        "kms:Decrypt",
        "ssm:GetParameter",
    }
    assert RESTORE.actions_on(ResourceKind.SNAPSHOT_KEY) == {"kms:Decrypt"}


def test_configure_may_only_read_the_break_glass_material() -> None:
    assert CONFIGURE.actions() == {"ssm:GetParameter"}
    assert CONFIGURE.actions_on(ResourceKind.BREAK_GLASS) == {"ssm:GetParameter"}


def test_only_the_emulators_admin_may_do_everything() -> None:
    assert ADMIN.actions() == {"*"} and ADMIN.emulator_only
    for who in STACK_PRINCIPALS:
        assert not who.emulator_only
        assert not [a for a in who.actions() if a == "*" or a.endswith(":*")], who.name
        assert ResourceKind.ANYTHING not in {g.resource for g in who.grants}


def test_every_grant_says_which_calls_need_it() -> None:
    for who in PRINCIPALS:
        for grant in who.grants:
            assert grant.actions and len(grant.needed_by) > 10, (who.name, grant)


def test_principals_have_distinct_names_users_and_policies() -> None:
    names = [p.name for p in PRINCIPALS]
    assert names == ["admin", "seal", "snapshot", "restore", "configure"]
    assert [p.user_name("kind") for p in PRINCIPALS] == [
        "vaultdr-admin",
        "vaultdr-seal-kind",
        "vaultdr-snapshot-kind",
        "vaultdr-restore-kind",
        "vaultdr-configure-kind",
    ]
    assert len({p.policy_name for p in PRINCIPALS}) == len(PRINCIPALS)
    assert principals.principal("restore") is RESTORE


def test_an_unknown_principal_is_refused_with_the_known_ones_named() -> None:
    with pytest.raises(ValueError, match=r"no AWS principal 'root'.*admin, seal, snapshot"):
        principals.principal("root")


# -- for the emulator ----------------------------------------------------------------------


def test_for_the_emulator_kms_and_ssm_are_on_star_and_s3_on_the_bucket() -> None:
    document = for_emulator(RESTORE, bucket="snaps")
    assert document["Version"] == "2012-10-17"
    assert statement(document, "ListSnapshots")["Resource"] == ["arn:aws:s3:::snaps"]
    assert statement(document, "Snapshots")["Resource"] == ["arn:aws:s3:::snaps/*"]
    assert statement(document, "SnapshotKey") == {
        "Sid": "SnapshotKey",
        "Effect": "Allow",
        "Action": ["kms:Decrypt"],
        "Resource": ["*"],
    }
    assert statement(document, "BreakGlass")["Resource"] == ["*"]


def test_for_the_emulator_each_kind_of_resource_is_one_statement() -> None:
    document = for_emulator(SNAPSHOT, bucket="snaps")
    assert statement(document, "ListSnapshots")["Action"] == [
        "s3:ListBucket",
        "s3:ListBucketVersions",
    ]
    assert len(document["Statement"]) == 3


def test_a_principal_with_s3_statements_needs_the_bucket() -> None:
    with pytest.raises(ValueError, match="snapshot bucket"):
        for_emulator(SNAPSHOT)
    assert for_emulator(SEAL)["Statement"][0]["Resource"] == ["*"]
    assert for_emulator(ADMIN)["Statement"] == [
        {"Sid": "Everything", "Effect": "Allow", "Action": ["*"], "Resource": ["*"]}
    ]


# -- for AWS -------------------------------------------------------------------------------


def test_for_aws_each_statement_names_its_resources_arn() -> None:
    seal = for_aws(SEAL, RESOURCES)
    assert statement(seal, "SealKey")["Resource"] == [RESOURCES.seal_key_arn]

    restore = for_aws(RESTORE, RESOURCES)
    bucket = "arn:aws:s3:::vaultdr-prod-snapshots"
    assert statement(restore, "ListSnapshots") == {
        "Sid": "ListSnapshots",
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": [bucket],
        "Condition": {"StringLike": {"s3:prefix": ["snapshots/", "snapshots/*"]}},
    }
    assert statement(restore, "Snapshots")["Resource"] == [f"{bucket}/snapshots/*"]
    assert statement(restore, "SnapshotKey")["Resource"] == [RESOURCES.snapshot_key_arn]
    assert statement(restore, "BreakGlass")["Resource"] == [
        "arn:aws:ssm:eu-west-1:111122223333:parameter/vaultdr/prod/*"
    ]
    for document in (seal, restore):
        assert "*" not in [r for s in document["Statement"] for r in s["Resource"]]


def test_for_aws_without_a_snapshot_key_there_is_nothing_to_allow_on_one() -> None:
    without = AwsResources(**{**RESOURCES.__dict__, "snapshot_key_arn": None})
    sids = [s["Sid"] for s in for_aws(SNAPSHOT, without)["Statement"]]
    assert sids == ["ListSnapshots", "Snapshots"]


def test_for_aws_the_emulators_admin_has_no_policy() -> None:
    with pytest.raises(ValueError, match="emulators only"):
        for_aws(ADMIN, RESOURCES)


def test_the_revoke_kms_deny_wins_over_the_seals_allow() -> None:
    (deny,) = principals.revoke_kms_policy()["Statement"]
    assert deny["Effect"] == "Deny"
    assert set(deny["Action"]) == {"kms:Decrypt", "kms:Encrypt"} <= SEAL.actions()
    assert deny["Resource"] == "*"
