# vaultdr on EKS: everything AWS-side the stack needs, in the shape a production
# setup has it. Two KMS keys (the seal's, and one for snapshots at rest), a versioned
# and encrypted snapshot bucket, and one IAM role per Kubernetes service account
# (IRSA), each allowed exactly what its pod does. The Kubernetes side (the official
# chart, vaultdr-ops) takes these outputs as Helm values; see docs/kubernetes.md.

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ "app.kubernetes.io/part-of" = "vaultdr", "vaultdr.io/cluster" = var.cluster }, var.tags)
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  oidc_host  = replace(var.oidc_provider_url, "https://", "")
  bucket     = var.bucket_name != "" ? var.bucket_name : "vaultdr-${var.cluster}-snapshots-${local.account_id}"
  # Snapshots of this cluster, and nothing else the bucket may hold.
  snapshot_prefix = "${var.snapshot_prefix}/${var.cluster}/"
  # Break-glass material (root token, recovery keys) lives under this SSM path.
  ssm_prefix = "/vaultdr/${var.cluster}"
  ssm_arn    = "arn:${local.partition}:ssm:${var.region}:${local.account_id}:parameter${local.ssm_prefix}/*"

  # The Kubernetes service account each role is for; the trust policy names exactly it.
  service_accounts = {
    seal      = var.vault_service_account
    snapshot  = var.agent_service_accounts.snapshot
    restore   = var.agent_service_accounts.restore
    configure = var.agent_service_accounts.configure
  }
}
