variable "name" {
  description = "Application name; see the naming module for the rules (lowercase DNS label, 3-40 characters)."
  type        = string
}

variable "environment" {
  description = "Deployment environment: dev, staging or prod."
  type        = string
}

variable "cidr_block" {
  description = "Address range of the application's network."
  type        = string
  default     = "10.42.0.0/16"
}

variable "azs" {
  description = "Availability zones; instances are spread over them round-robin."
  type        = list(string)
  default     = ["zone-a", "zone-b"]
}

variable "instance_count" {
  description = "Number of application instances (1-10)."
  type        = number
  default     = 2
  nullable    = false

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 10 && floor(var.instance_count) == var.instance_count
    error_message = "The instance_count must be a whole number between 1 and 10."
  }
}

variable "db_password" {
  description = "Password of the application's database user."
  type        = string
  sensitive   = true
  nullable    = false

  validation {
    condition     = length(var.db_password) >= 12
    error_message = "The db_password must be at least 12 characters long."
  }
}

variable "config" {
  description = "Runtime configuration of the application."
  type = object({
    image = string
    ports = list(number)
    env   = optional(map(string), {})
    features = optional(object({
      metrics = bool
      tracing = bool
      }), {
      metrics = true
      tracing = false
    })
  })
  nullable = false

  validation {
    condition     = length(trimspace(var.config.image)) > 0
    error_message = "The config.image must not be empty."
  }

  validation {
    condition     = length(var.config.ports) > 0 && alltrue([for p in var.config.ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "The config.ports must list at least one port, each a whole number between 1 and 65535; the first one is the service port."
  }

  validation {
    condition     = alltrue([for k in keys(var.config.env) : can(regex("^[A-Z_][A-Z0-9_]*$", k))])
    error_message = "The config.env keys must be environment variable names: uppercase letters, digits and underscores, not starting with a digit."
  }
}
