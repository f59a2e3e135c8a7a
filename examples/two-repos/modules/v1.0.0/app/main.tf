# app v1.0.0: a server stand-in on the network module's VPC.
terraform {
  required_version = ">= 1.4"
}

variable "name" {
  type = string
}

variable "image" {
  type    = string
  default = "app:1.0"
}

resource "terraform_data" "server" {
  triggers_replace = [var.name]
  input = {
    name  = var.name
    image = var.image
  }
}

output "server_id" {
  value = terraform_data.server.id
}
