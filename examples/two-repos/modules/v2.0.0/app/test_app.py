"""Upgrading app from v1.1.0 to this commit (v2.0.0) replaces the server: a breaking release."""


def test_upgrade_from_v1_1_0_replaces_the_server(iac_deploy):
    stack = iac_deploy(".", vars={"name": "demo"}, from_ref="v1.1.0")
    old_id = stack.outputs["server_id"]

    plan = stack.upgrade()
    assert [c.address for c in plan.replaces] == ["terraform_data.server"]
    assert not plan.deletes

    stack.apply()
    assert stack.outputs["server_id"] != old_id  # a new server
    assert stack.outputs["size"] == "small"
