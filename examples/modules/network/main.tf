locals {
  # Duplicate zones would collapse into one subnet; the check below warns.
  azs = distinct(var.azs)

  # Subnet numbers follow the position of the zone in var.azs, so appending a
  # zone adds a subnet without renumbering (and replacing) the existing ones.
  subnet_cidrs = {
    for index, az in local.azs : az => cidrsubnet(var.cidr_block, var.subnet_newbits, index)
  }

  prefix_length = tonumber(split("/", var.cidr_block)[1])
  base_address  = cidrhost(var.cidr_block, 0)
  rfc1918       = { "10.0.0.0" = 8, "172.16.0.0" = 12, "192.168.0.0" = 16 }
  is_private = anytrue([
    for network, bits in local.rfc1918 :
    local.prefix_length >= bits && cidrhost("${local.base_address}/${bits}", 0) == network
  ])
}

resource "terraform_data" "vpc" {
  input = {
    name       = var.name
    cidr_block = var.cidr_block
    tags       = merge(var.tags, { Name = var.name })
  }
}

module "subnet" {
  source   = "./modules/subnet"
  for_each = local.subnet_cidrs

  name       = "${var.name}-${each.key}"
  vpc_id     = terraform_data.vpc.id
  cidr_block = each.value
  az         = each.key
  tags       = var.tags
}

check "availability_zones_are_unique" {
  assert {
    condition     = length(local.azs) == length(var.azs)
    error_message = "The azs list contains duplicates (${join(", ", var.azs)}); only one subnet is created per zone."
  }
}

check "address_space_is_private" {
  assert {
    condition     = local.is_private
    error_message = "The cidr_block ${var.cidr_block} is not inside RFC 1918 private address space (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)."
  }
}
