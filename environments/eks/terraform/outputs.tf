# Every value the Helm values need. `terraform output` prints them; see
# environments/eks/openbao-values.yaml and ops-values.yaml for where each one goes
# (the placeholders are named REPLACE_WITH_TERRAFORM_OUTPUT_<output name>).

output "region" {
  description = "AWS region: the seal stanza's region, ops aws.region, stack region."
  value       = var.region
}

output "cluster" {
  description = "stack.yaml cluster."
  value       = var.cluster
}

output "namespace" {
  description = "The namespace the roles trust."
  value       = var.namespace
}

output "seal_kms_key_id" {
  description = "The seal key's id: kms_key_id in the awskms seal stanza."
  value       = aws_kms_key.seal.key_id
}

output "seal_kms_key_arn" {
  description = "The seal key's ARN."
  value       = aws_kms_key.seal.arn
}

output "seal_kms_alias" {
  description = "The seal key's alias."
  value       = aws_kms_alias.seal.name
}

output "snapshots_kms_key_arn" {
  description = "The key snapshots are encrypted with at rest (the bucket's default encryption)."
  value       = aws_kms_key.snapshots.arn
}

output "snapshot_bucket" {
  description = "stack.yaml snapshots.bucket."
  value       = aws_s3_bucket.snapshots.id
}

output "snapshot_prefix" {
  description = "stack.yaml snapshots.prefix."
  value       = var.snapshot_prefix
}

output "ssm_prefix" {
  description = "Where the break-glass material lives in SSM."
  value       = local.ssm_prefix
}

output "seal_role_arn" {
  description = "IRSA role of the Vault/OpenBao pods: server.serviceAccount.annotations in the official chart's values."
  value       = aws_iam_role.irsa["seal"].arn
}

output "snapshot_role_arn" {
  description = "IRSA role of the snapshot agent: ops serviceAccounts.snapshot.roleArn."
  value       = aws_iam_role.irsa["snapshot"].arn
}

output "restore_role_arn" {
  description = "IRSA role of the restore watcher: ops serviceAccounts.restore.roleArn."
  value       = aws_iam_role.irsa["restore"].arn
}

output "configure_role_arn" {
  description = "IRSA role of the configure Job: ops serviceAccounts.configure.roleArn."
  value       = aws_iam_role.irsa["configure"].arn
}

output "ecr_repository_url" {
  description = "Where to push the vaultdr agent image: ops image.repository."
  value       = var.create_ecr_repository ? aws_ecr_repository.vaultdr[0].repository_url : ""
}
