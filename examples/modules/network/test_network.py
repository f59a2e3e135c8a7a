"""Tests for the network module: one deployment shared by the whole file."""

import pytest_iac

NETWORK_VARS = {
    "name": "shared-net",
    "cidr_block": "10.20.0.0/16",
    "azs": ["eu-west-1a", "eu-west-1b", "eu-west-1c"],
    "tags": {"Team": "platform"},
}

# Deployed once for this file, destroyed after its last test.
network = pytest_iac.deployment(".", scope="module", vars=NETWORK_VARS)


def test_one_subnet_per_zone(network):
    assert network.outputs["subnet_cidrs"] == {
        "eu-west-1a": "10.20.0.0/24",
        "eu-west-1b": "10.20.1.0/24",
        "eu-west-1c": "10.20.2.0/24",
    }
    assert len(network.outputs["subnet_ids"]) == 3
    assert len(set(network.outputs["subnet_ids"])) == 3
    assert sorted(network.resources) == [
        'module.subnet["eu-west-1a"].terraform_data.this',
        'module.subnet["eu-west-1b"].terraform_data.this',
        'module.subnet["eu-west-1c"].terraform_data.this',
        "terraform_data.vpc",
    ]
    assert network.plan().is_empty


def test_adding_a_zone_only_adds_a_subnet(network):
    plan = network.plan(vars={**NETWORK_VARS, "azs": [*NETWORK_VARS["azs"], "eu-west-1d"]})

    assert [c.address for c in plan.creates] == ['module.subnet["eu-west-1d"].terraform_data.this']
    assert plan.updates == []
    assert plan.replaces == []
    assert plan.deletes == []
    assert plan.outputs["subnet_cidrs"].after["eu-west-1d"] == "10.20.3.0/24"
