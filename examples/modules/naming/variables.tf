variable "name" {
  description = "Short name of the workload, e.g. \"billing-api\". Lowercase DNS label, 3-40 characters."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "The name must be 3-40 characters of lowercase letters, digits and single hyphens, start with a letter and not end with a hyphen (DNS-safe)."
  }
}

variable "environment" {
  description = "Deployment environment: one of dev, staging, prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "The environment must be one of: dev, staging, prod."
  }
}

variable "tags" {
  description = "Extra tags. Keys and values are trimmed and empty values dropped; the reserved keys Name, Environment and ManagedBy are always set by this module."
  type        = map(string)
  default     = {}
  nullable    = false

  validation {
    condition     = alltrue([for k, v in var.tags : length(trimspace(k)) > 0 && length(k) <= 128 && length(v) <= 256])
    error_message = "Tag keys must be 1-128 characters and tag values at most 256 characters."
  }
}
