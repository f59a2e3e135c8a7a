variable "name" {
  description = "Bucket name: globally unique, 3-63 lowercase letters, digits, dots and hyphens."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.name))
    error_message = "The name must be a valid S3 bucket name: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit."
  }
}

variable "versioning" {
  description = "Keep every version of every object."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "KMS key for server-side encryption; null encrypts with S3-managed keys (AES256)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
