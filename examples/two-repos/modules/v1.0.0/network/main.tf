# network v1.0.0: a VPC stand-in (terraform_data: Terraform's built-in provider only).
terraform {
  required_version = ">= 1.4"
}

variable "name" {
  type = string
}

variable "cidr_block" {
  type    = string
  default = "10.0.0.0/16"
}

resource "terraform_data" "vpc" {
  input = {
    name       = var.name
    cidr_block = var.cidr_block
  }
}

output "vpc_id" {
  value = terraform_data.vpc.id
}

output "cidr_block" {
  value = terraform_data.vpc.output.cidr_block
}
