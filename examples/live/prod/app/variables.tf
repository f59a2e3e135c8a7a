variable "db_password" {
  description = "Password of the shop's database user. In real use it comes from the CI secret store as TF_VAR_db_password; the default only makes this example runnable as it is."
  type        = string
  sensitive   = true
  default     = "example-only-prod-password"
}
