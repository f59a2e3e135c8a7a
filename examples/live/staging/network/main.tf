# Live configuration: the core network of the staging environment.
terraform {
  required_version = ">= 1.6"

  # Partial configuration: the key is in backend.tfbackend beside this file; the bucket, the
  # region and the endpoint come from the run (terraform init -backend-config=..., or
  # pytest --iac-backend-config=...), so the same code works against any state bucket.
  backend "s3" {}
}

module "network" {
  source = "../../../modules/network"

  name       = "staging-core"
  cidr_block = "10.10.0.0/16"
  azs        = ["eu-west-1a", "eu-west-1b"]
  tags = {
    Environment = "staging"
    Component   = "network"
    ManagedBy   = "terraform"
  }
}

output "vpc_id" {
  description = "ID of the staging core network."
  value       = module.network.vpc_id
}

output "subnet_ids" {
  description = "Subnets of the staging core network, one per zone."
  value       = module.network.subnet_ids
}
