# Live configuration: the shop application in the prod environment.
terraform {
  required_version = ">= 1.6"

  # Partial configuration, as in ../network: key here, bucket and endpoint from the run.
  backend "s3" {}
}

module "app" {
  source = "../../../modules/app"

  name           = "shop"
  environment    = "prod"
  cidr_block     = "10.21.0.0/16"
  azs            = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  instance_count = 3
  db_password    = var.db_password
  config = {
    image = "registry.example.com/shop:1.4.2"
    ports = [8443, 9090]
    env   = { LOG_LEVEL = "info" }
  }
}

output "endpoint" {
  description = "Where the prod shop answers."
  value       = module.app.endpoint
}

output "instance_ids" {
  description = "IDs of the prod shop instances."
  value       = module.app.instance_ids
}
