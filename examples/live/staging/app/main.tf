# Live configuration: the shop application in the staging environment.
terraform {
  required_version = ">= 1.6"

  # Partial configuration, as in ../network: key here, bucket and endpoint from the run.
  backend "s3" {}
}

module "app" {
  source = "../../../modules/app"

  name           = "shop"
  environment    = "staging"
  cidr_block     = "10.11.0.0/16"
  azs            = ["eu-west-1a", "eu-west-1b"]
  instance_count = 1
  db_password    = var.db_password
  config = {
    image = "registry.example.com/shop:1.5.0-rc.2"
    ports = [8443, 9090]
    env   = { LOG_LEVEL = "info" }
  }
}

output "endpoint" {
  description = "Where the staging shop answers."
  value       = module.app.endpoint
}

output "instance_ids" {
  description = "IDs of the staging shop instances."
  value       = module.app.instance_ids
}
