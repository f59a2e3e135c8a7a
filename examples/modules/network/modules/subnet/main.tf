variable "name" {
  description = "Name of the subnet."
  type        = string
}

variable "vpc_id" {
  description = "ID of the network the subnet belongs to."
  type        = string
}

variable "cidr_block" {
  description = "Address range of the subnet."
  type        = string
}

variable "az" {
  description = "Availability zone of the subnet."
  type        = string
}

variable "tags" {
  description = "Tags of the subnet; Name is set from var.name."
  type        = map(string)
  default     = {}
  nullable    = false
}

resource "terraform_data" "this" {
  input = {
    vpc_id = var.vpc_id
    cidr   = var.cidr_block
    az     = var.az
    tags   = merge(var.tags, { Name = var.name })
  }
}

output "id" {
  description = "ID of the subnet."
  value       = terraform_data.this.id
}

output "cidr_block" {
  description = "Address range of the subnet."
  value       = terraform_data.this.output.cidr
}

output "az" {
  description = "Availability zone of the subnet."
  value       = var.az
}
