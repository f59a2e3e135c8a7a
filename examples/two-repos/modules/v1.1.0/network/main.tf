# network v1.1.0: tags on the VPC (an update in place) and a subnet (a new resource).
# Nothing is replaced or deleted: test_network.py proves it from v1.0.0.
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

variable "tags" {
  type    = map(string)
  default = {}
}

resource "terraform_data" "vpc" {
  input = {
    name       = var.name
    cidr_block = var.cidr_block
    tags       = merge({ Name = var.name }, var.tags)
  }
}

resource "terraform_data" "subnet" {
  input = {
    vpc_id     = terraform_data.vpc.id
    cidr_block = cidrsubnet(var.cidr_block, 8, 0)
  }
}

output "vpc_id" {
  value = terraform_data.vpc.id
}

output "cidr_block" {
  value = terraform_data.vpc.output.cidr_block
}

output "subnet_cidr" {
  value = terraform_data.subnet.output.cidr_block
}
