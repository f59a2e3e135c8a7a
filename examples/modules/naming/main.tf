locals {
  id = "${var.environment}-${var.name}"

  # Tags every resource gets; they win over user-supplied tags so that
  # ownership and environment can't be spoofed.
  reserved_tags = {
    Name        = local.id
    Environment = var.environment
    ManagedBy   = "terraform"
  }

  user_tags = {
    for k, v in var.tags : trimspace(k) => trimspace(v)
    if trimspace(v) != ""
  }

  tags = merge(local.user_tags, local.reserved_tags)
}

# Record the label in state so that it can be audited and so that consumers
# can depend on it like on any other resource.
resource "terraform_data" "label" {
  input = {
    id          = local.id
    name        = var.name
    environment = var.environment
    tags        = local.tags
  }
}
