variable "name" {
  description = "Name of the network; used as a prefix for subnet names. Lowercase DNS label, 1-63 characters."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.name))
    error_message = "The name must be a lowercase DNS label: 1-63 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "cidr_block" {
  description = "IPv4 address range of the network in canonical CIDR notation, e.g. \"10.20.0.0/16\"."
  type        = string

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && can(cidrnetmask(var.cidr_block))
    error_message = "The cidr_block must be a valid IPv4 CIDR block, e.g. \"10.20.0.0/16\"."
  }

  validation {
    condition     = try(cidrsubnet(var.cidr_block, 0, 0) == var.cidr_block, true)
    error_message = "The cidr_block must be in canonical form: the host bits of the address must be zero (e.g. \"10.20.0.0/16\", not \"10.20.1.5/16\")."
  }
}

variable "azs" {
  description = "Availability zones to spread the network over; one subnet is created per zone, in this order."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.azs) > 0
    error_message = "At least one availability zone is required."
  }
}

variable "subnet_newbits" {
  description = "Bits added to the network prefix for each subnet (8 turns a /16 into /24 subnets)."
  type        = number
  default     = 8
  nullable    = false

  validation {
    condition     = var.subnet_newbits >= 1 && var.subnet_newbits <= 16 && floor(var.subnet_newbits) == var.subnet_newbits
    error_message = "The subnet_newbits must be a whole number between 1 and 16."
  }
}

variable "tags" {
  description = "Tags applied to the network and every subnet."
  type        = map(string)
  default     = {}
  nullable    = false
}
