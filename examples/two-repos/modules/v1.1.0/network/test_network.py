"""Upgrading network from v1.0.0 to this commit replaces and deletes nothing."""


def test_upgrade_from_v1_0_0_keeps_the_vpc(iac_deploy):
    stack = iac_deploy(".", vars={"name": "demo"}, from_ref="v1.0.0")
    vpc_id = stack.outputs["vpc_id"]

    plan = stack.upgrade()  # this commit's code, planned on v1.0.0's state
    assert not plan.replaces
    assert not plan.deletes
    assert [c.address for c in plan.creates] == ["terraform_data.subnet"]

    stack.apply()
    assert stack.outputs["vpc_id"] == vpc_id  # the same VPC, upgraded in place
    assert stack.outputs["subnet_cidr"] == "10.0.0.0/24"
