"""Tests for the naming module, written as a pytest-iac user would."""

import pytest

import pytest_iac


def test_label_is_deployed(iac_deploy, iac_name):
    stack = iac_deploy(vars={"name": iac_name, "environment": "dev", "tags": {"Team": "platform"}})

    assert stack.outputs["id"] == f"dev-{iac_name}"
    assert stack.outputs["tags"] == {
        "Name": f"dev-{iac_name}",
        "Environment": "dev",
        "ManagedBy": "terraform",
        "Team": "platform",
    }
    assert stack.outputs["label_id"]
    assert stack.resources == ["terraform_data.label"]
    # A second plan right after apply must have nothing to do.
    assert stack.plan().is_empty


def test_user_tags_are_normalised_and_cannot_override_reserved_tags(iac_plan):
    plan = iac_plan(
        vars={
            "name": "billing-api",
            "environment": "prod",
            "tags": {" Team ": " payments ", "ManagedBy": "clickops", "Empty": "  "},
        }
    )

    assert [c.address for c in plan.creates] == ["terraform_data.label"]
    assert plan.outputs["id"].after == "prod-billing-api"
    assert plan.outputs["tags"].after == {
        "Name": "prod-billing-api",
        "Environment": "prod",
        "ManagedBy": "terraform",
        "Team": "payments",
    }


@pytest.mark.parametrize("name", ["Billing-API", "ab"])
def test_rejects_names_that_are_not_dns_safe(iac_plan, name):
    with pytest.raises(pytest_iac.TerraformError, match="Invalid value for variable") as exc:
        iac_plan(vars={"name": name, "environment": "dev"})

    assert "DNS-safe" in exc.value.output
