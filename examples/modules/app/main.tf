module "label" {
  source = "../naming"

  name        = var.name
  environment = var.environment
  tags        = { Application = var.name }
}

module "network" {
  source = "../network"

  name       = module.label.id
  cidr_block = var.cidr_block
  azs        = var.azs
  tags       = module.label.tags
}

locals {
  service_port = var.config.ports[0]
  hostname     = "${module.label.id}.svc.internal"
  db_host      = "${module.label.id}-db.svc.internal"
  db_name      = replace(var.name, "-", "_")
}

resource "terraform_data" "instance" {
  count = var.instance_count

  input = {
    name      = "${module.label.id}-${count.index}"
    image     = var.config.image
    ports     = var.config.ports
    env       = merge(var.config.env, { DB_HOST = local.db_host, DB_NAME = local.db_name })
    features  = var.config.features
    az        = module.network.azs[count.index % length(module.network.azs)]
    subnet_id = module.network.subnet_ids[count.index % length(module.network.subnet_ids)]
    tags      = module.label.tags
  }
}

resource "terraform_data" "db" {
  input = {
    name            = "${module.label.id}-db"
    host            = local.db_host
    database        = local.db_name
    subnet_id       = module.network.subnet_ids[0]
    password_sha256 = sha256(var.db_password)
    tags            = module.label.tags
  }
}
