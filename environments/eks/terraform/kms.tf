# The seal key: only the Vault/OpenBao pods (the seal role) may use it. Losing it loses
# the cluster and every snapshot restore, hence the long deletion window.
resource "aws_kms_key" "seal" {
  description             = "vaultdr ${var.cluster}: Vault/OpenBao auto-unseal (awskms seal)"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.seal_key.json
}

resource "aws_kms_alias" "seal" {
  name          = "alias/vaultdr-${var.cluster}-seal"
  target_key_id = aws_kms_key.seal.key_id
}

# The snapshot key: S3 server-side encryption of snapshots. Separate from the seal
# key so the agents that handle snapshots can never decrypt what the seal protects.
resource "aws_kms_key" "snapshots" {
  description             = "vaultdr ${var.cluster}: snapshots at rest (S3 SSE-KMS)"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.snapshots_key.json
}

resource "aws_kms_alias" "snapshots" {
  name          = "alias/vaultdr-${var.cluster}-snapshots"
  target_key_id = aws_kms_key.snapshots.key_id
}

# Key administration without use: the administrators can manage, rotate and schedule
# deletion, but encrypt or decrypt nothing.
data "aws_iam_policy_document" "key_admin" {
  statement {
    sid = "KeyAdministration"
    principals {
      type        = "AWS"
      identifiers = var.key_admin_arns
    }
    actions = [
      "kms:CancelKeyDeletion",
      "kms:CreateAlias",
      "kms:DeleteAlias",
      "kms:DescribeKey",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:EnableKey",
      "kms:EnableKeyRotation",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListResourceTags",
      "kms:PutKeyPolicy",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:UpdateAlias",
      "kms:UpdateKeyDescription",
    ]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "seal_key" {
  source_policy_documents = [data.aws_iam_policy_document.key_admin.json]

  statement {
    sid = "SealUse"
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.irsa["seal"].arn]
    }
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "snapshots_key" {
  source_policy_documents = [data.aws_iam_policy_document.key_admin.json]

  statement {
    sid = "SnapshotWrite"
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.irsa["snapshot"].arn]
    }
    actions   = ["kms:GenerateDataKey"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid = "SnapshotRead"
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.irsa["restore"].arn]
    }
    actions   = ["kms:Decrypt"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}
