# app v2.0.0, a breaking release: the server's size is fixed at creation, so every existing
# server is replaced. test_app.py says so, for whoever promotes this version.
terraform {
  required_version = ">= 1.4"
}

variable "name" {
  type = string
}

variable "image" {
  type    = string
  default = "app:2.0"
}

variable "size" {
  type    = string
  default = "small"
}

resource "terraform_data" "server" {
  triggers_replace = [var.name, var.size]
  input = {
    name  = var.name
    image = var.image
    size  = var.size
  }
}

output "server_id" {
  value = terraform_data.server.id
}

output "size" {
  value = terraform_data.server.output.size
}
