# One role per Kubernetes service account (IRSA). Each trust policy admits exactly one
# subject, system:serviceaccount:<namespace>:<name>, with the STS audience; each
# permission policy allows what that pod does and nothing more. The principals and their
# actions are data in vaultdr/principals.py (the emulators' users are made from it);
# tests/test_terraform.py fails when these policies grant anything else.
#
# The revoke-KMS drill adds an explicit Deny for kms:Decrypt/Encrypt to the seal role
# (an inline policy named vaultdr-revoke-kms) and always removes it afterwards; whoever
# runs drills needs iam:PutRolePolicy/DeleteRolePolicy on that role only.

data "aws_iam_policy_document" "irsa_trust" {
  for_each = local.service_accounts

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${each.value}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.service_accounts

  name                 = "vaultdr-${var.cluster}-${each.key}"
  description          = "vaultdr ${var.cluster}: ${var.namespace}/${each.value} (IRSA)"
  assume_role_policy   = data.aws_iam_policy_document.irsa_trust[each.key].json
  max_session_duration = 3600
}

# The awskms seal: wrap and unwrap the root key with the seal key.
data "aws_iam_policy_document" "seal" {
  statement {
    sid       = "SealKey"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]
    resources = [aws_kms_key.seal.arn]
  }
}

# The snapshot agent: put, head (s3:GetObject), list and prune (by version) snapshots
# under the prefix; SSE-KMS with the snapshot key on its single-request PutObject.
data "aws_iam_policy_document" "snapshot" {
  statement {
    sid       = "ListSnapshots"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [aws_s3_bucket.snapshots.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.snapshot_prefix}/", "${var.snapshot_prefix}/*"]
    }
  }
  statement {
    sid = "WriteSnapshots"
    actions = [
      "s3:PutObject",
      "s3:GetObject",
      "s3:DeleteObjectVersion",
    ]
    resources = ["${aws_s3_bucket.snapshots.arn}/${var.snapshot_prefix}/*"]
  }
  statement {
    sid       = "SnapshotKey"
    actions   = ["kms:GenerateDataKey"]
    resources = [aws_kms_key.snapshots.arn]
  }
}

# The restore watcher: read snapshots; read break-glass material (root token, recovery
# keys) under /vaultdr/<cluster>/ in SSM, which `vaultdr up` wrote there.
data "aws_iam_policy_document" "restore" {
  statement {
    sid       = "ListSnapshots"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.snapshots.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.snapshot_prefix}/", "${var.snapshot_prefix}/*"]
    }
  }
  statement {
    sid       = "ReadSnapshots"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.snapshots.arn}/${var.snapshot_prefix}/*"]
  }
  statement {
    sid       = "SnapshotKey"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.snapshots.arn]
  }
  statement {
    sid       = "BreakGlass"
    actions   = ["ssm:GetParameter"]
    resources = [local.ssm_arn]
  }
}

# The configure Job: read the root token to reconcile the configuration.
data "aws_iam_policy_document" "configure" {
  statement {
    sid       = "ReadBreakGlass"
    actions   = ["ssm:GetParameter"]
    resources = [local.ssm_arn]
  }
}

locals {
  role_policies = {
    seal      = data.aws_iam_policy_document.seal.json
    snapshot  = data.aws_iam_policy_document.snapshot.json
    restore   = data.aws_iam_policy_document.restore.json
    configure = data.aws_iam_policy_document.configure.json
  }
}

resource "aws_iam_role_policy" "irsa" {
  for_each = local.role_policies

  name   = "vaultdr-${each.key}"
  role   = aws_iam_role.irsa[each.key].id
  policy = each.value
}
