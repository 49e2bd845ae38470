# Where the vaultdr agent image (the repository's Dockerfile) is pushed for EKS.
resource "aws_ecr_repository" "vaultdr" {
  count = var.create_ecr_repository ? 1 : 0

  name                 = "vaultdr"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
  }
}
