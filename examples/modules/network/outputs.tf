output "vpc_id" {
  description = "ID of the network."
  value       = terraform_data.vpc.id
}

output "cidr_block" {
  description = "Address range of the network."
  value       = var.cidr_block
}

output "azs" {
  description = "Zones that got a subnet, in subnet order."
  value       = local.azs
}

output "subnet_cidrs" {
  description = "Map of availability zone to subnet CIDR block."
  value       = local.subnet_cidrs
}

output "subnet_ids" {
  description = "Subnet IDs, in the order of var.azs."
  value       = [for az in local.azs : module.subnet[az].id]
}
