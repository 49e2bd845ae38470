variable "region" {
  description = "AWS region of the cluster, the KMS keys, the bucket and SSM."
  type        = string
}

variable "cluster" {
  description = "The stack's cluster name (stack.yaml `cluster`): names the key aliases, the S3 prefix, the SSM path and the roles."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.cluster))
    error_message = "cluster must be a DNS label (lower-case letters, digits and '-'), as in stack.yaml."
  }
}

variable "namespace" {
  description = "The Kubernetes namespace of the Vault/OpenBao release and vaultdr-ops."
  type        = string
  default     = "vaultdr"
}

variable "vault_service_account" {
  description = "The service account the Vault/OpenBao pods run as (the official chart's fullname, e.g. openbao)."
  type        = string
  default     = "openbao"
}

variable "agent_service_accounts" {
  description = "The vaultdr-ops service accounts (serviceAccounts.<agent>.name in the chart's values)."
  type = object({
    snapshot  = string
    restore   = string
    configure = string
  })
  default = {
    snapshot  = "vaultdr-snapshot"
    restore   = "vaultdr-restore"
    configure = "vaultdr-configure"
  }
}

variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (IRSA), e.g. arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE."
  type        = string
}

variable "oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider, e.g. https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE."
  type        = string
}

variable "key_admin_arns" {
  description = "IAM principals that administer the KMS keys (never use them to encrypt or decrypt). Include the principal that runs Terraform."
  type        = list(string)

  validation {
    condition     = length(var.key_admin_arns) > 0
    error_message = "key_admin_arns must name at least one principal, or nobody could manage the keys."
  }
}

variable "bucket_name" {
  description = "Name of the snapshot bucket (globally unique). Empty: vaultdr-<cluster>-snapshots-<account id>."
  type        = string
  default     = ""
}

variable "snapshot_prefix" {
  description = "Prefix of snapshot objects (stack.yaml snapshots.prefix); objects go under <prefix>/<cluster>/."
  type        = string
  default     = "snapshots"
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted snapshot version is kept before S3 expires it."
  type        = number
  default     = 30
}

variable "object_lock_days" {
  description = "0: no object lock. Otherwise the bucket is created with object lock and a default GOVERNANCE retention of this many days, so snapshots cannot be deleted early (the agent's retention then only removes older ones). Can only be chosen when the bucket is created."
  type        = number
  default     = 0
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a scheduled key deletion takes effect. The seal key's loss makes every sealed data dir and snapshot unrecoverable."
  type        = number
  default     = 30
}

variable "create_ecr_repository" {
  description = "Create an ECR repository for the vaultdr agent image."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
