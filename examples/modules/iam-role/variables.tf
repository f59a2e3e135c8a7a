variable "name" {
  description = "Name of the role (1-64 characters: letters, digits and +=,.@_-)."
  type        = string

  validation {
    condition     = can(regex("^[\\w+=,.@-]{1,64}$", var.name))
    error_message = "The name must be 1-64 characters of letters, digits and +=,.@_-."
  }
}

variable "service" {
  description = "AWS service that may assume the role, e.g. \"lambda.amazonaws.com\"."
  type        = string
}

variable "read_buckets" {
  description = "ARNs of S3 buckets the role may read objects from."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource, applied through the provider's default_tags."
  type        = map(string)
  default     = {}
}
