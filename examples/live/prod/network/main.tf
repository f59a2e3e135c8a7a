# Live configuration: the core network of the prod environment.
terraform {
  required_version = ">= 1.6"

  # Partial configuration: the key is in backend.tfbackend beside this file; the bucket, the
  # region and the endpoint come from the run (terraform init -backend-config=..., or
  # pytest --iac-backend-config=...), so the same code works against any state bucket.
  backend "s3" {}
}

module "network" {
  source = "../../../modules/network"

  name       = "prod-core"
  cidr_block = "10.20.0.0/16"
  azs        = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  tags = {
    Environment = "prod"
    Component   = "network"
    ManagedBy   = "terraform"
  }
}

output "vpc_id" {
  description = "ID of the prod core network."
  value       = module.network.vpc_id
}

output "subnet_ids" {
  description = "Subnets of the prod core network, one per zone."
  value       = module.network.subnet_ids
}
