output "id" {
  description = "Fully qualified name: \"<environment>-<name>\"."
  value       = local.id
}

output "tags" {
  description = "Normalised tags: user tags merged with Name, Environment and ManagedBy."
  value       = local.tags
}

output "label_id" {
  description = "ID of the terraform_data resource holding the label."
  value       = terraform_data.label.id
}
