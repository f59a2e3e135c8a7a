"""Tests for the app module, which pulls in ../naming and ../network."""

import pytest

import pytest_iac

DB_PASSWORD = "correct-horse-battery-staple"
CONFIG = {
    "image": "registry.example.com/shop/api:1.4.2",
    "ports": [8443, 9090],
    "env": {"LOG_LEVEL": "debug", "FEATURE_FLAGS": "a,b"},
}


def test_app_stack(iac_deploy, iac_name):
    stack = iac_deploy(
        vars={
            "name": iac_name,
            "environment": "staging",
            "instance_count": 3,
            "db_password": DB_PASSWORD,
            "config": CONFIG,
        }
    )
    outputs = stack.outputs

    # Nested values arrive intact; the omitted optional attribute gets its default.
    assert outputs["config_echo"] == {
        **CONFIG,
        "features": {"metrics": True, "tracing": False},
    }
    assert outputs["endpoint"] == f"https://staging-{iac_name}.svc.internal:8443"
    assert len(outputs["instance_ids"]) == 3
    # The sensitive output is readable by the test (never print it).
    assert DB_PASSWORD in outputs["db_connection_string"]
    assert outputs["db_connection_string"].startswith("postgresql://app:")

    # Sibling modules were resolved from the sandbox.
    assert "module.label.terraform_data.label" in stack.resources
    assert "module.network.terraform_data.vpc" in stack.resources
    assert 'module.network.module.subnet["zone-b"].terraform_data.this' in stack.resources
    assert "terraform_data.db" in stack.resources
    assert stack.plan().is_empty


def test_scaling_in_only_removes_instances(iac_deploy, iac_name):
    vars = {
        "name": iac_name,
        "environment": "dev",
        "instance_count": 2,
        "db_password": DB_PASSWORD,
        "config": {**CONFIG, "features": {"metrics": False, "tracing": True}},
    }
    stack = iac_deploy(vars=vars)
    assert stack.outputs["config_echo"]["features"] == {"metrics": False, "tracing": True}
    first_instance = stack.outputs["instance_ids"][0]

    plan = stack.plan(vars={**vars, "instance_count": 1})
    assert [c.address for c in plan.deletes] == ["terraform_data.instance[1]"]
    assert plan.creates == plan.updates == plan.replaces == []

    stack.apply(vars={**vars, "instance_count": 1})
    assert stack.outputs["instance_ids"] == [first_instance]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"instance_count": 11},
            "instance_count must be a whole number between 1 and 10",
            id="too-many-instances",
        ),
        pytest.param(
            {"db_password": "too-short"},
            "db_password must be at least 12 characters",
            id="short-password",
        ),
    ],
)
def test_rejects_invalid_inputs(iac_plan, overrides, message):
    vars = {
        "name": "shop",
        "environment": "dev",
        "db_password": DB_PASSWORD,
        "config": CONFIG,
        **overrides,
    }
    with pytest.raises(pytest_iac.TerraformError, match=message) as exc:
        iac_plan(vars=vars)

    assert "Invalid value for variable" in exc.value.output
