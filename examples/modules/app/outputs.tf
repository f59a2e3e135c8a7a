output "id" {
  description = "Fully qualified application name."
  value       = module.label.id
}

output "instance_ids" {
  description = "IDs of the application instances."
  value       = terraform_data.instance[*].id
}

output "endpoint" {
  description = "URL of the application's service endpoint."
  value       = "https://${local.hostname}:${local.service_port}"
}

output "config_echo" {
  description = "The configuration the instances were given, defaults filled in."
  value       = var.config
}

output "db_connection_string" {
  description = "PostgreSQL connection string for the application, password included."
  value       = "postgresql://app:${urlencode(var.db_password)}@${local.db_host}:5432/${local.db_name}"
  sensitive   = true
}
