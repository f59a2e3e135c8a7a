# Live configuration: the bucket for the shop's assets in the prod environment.
terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Partial configuration, as in ../network: key here, bucket and endpoint from the run.
  backend "s3" {}
}

# Account, credentials and region come from the environment of the run (AWS_PROFILE or keys,
# AWS_REGION), never from the code; AWS_ENDPOINT_URL points it at a local stand-in such as moto.
provider "aws" {}

module "assets" {
  source = "../../../modules/s3-bucket"

  name       = "acme-shop-assets-prod"
  versioning = true
  tags = {
    Environment = "prod"
    Component   = "storage"
    ManagedBy   = "terraform"
  }
}

output "bucket_name" {
  description = "Name of the prod shop's asset bucket."
  value       = module.assets.bucket_name
}

output "bucket_arn" {
  description = "ARN of the prod shop's asset bucket."
  value       = module.assets.bucket_arn
}
