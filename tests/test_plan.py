"""Plans that explain themselves: reprs, and failed assertions on plans as the user sees them."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import leftovers

from pytest_iac.plan import Plan

MODULE = """
variable "input" { type = string }
variable "generation" { type = number }
variable "token" {
  type      = string
  sensitive = true
}
resource "terraform_data" "app" {
  input            = var.input
  triggers_replace = var.generation
}
resource "terraform_data" "secret" { input = var.token }
"""


def test_a_failed_assertion_on_a_plan_shows_its_changes(
    pytester: pytest.Pytester, iac_home: Any
) -> None:
    pytester.path.joinpath("main.tf").write_text(MODULE)
    pytester.makepyfile(
        """
        VARS = {"input": "old", "generation": 1, "token": "s3cr3t-old-token"}

        def test_replace(iac_deploy):
            stack = iac_deploy(".", vars=VARS)
            # an update, not the replace the test expects; the token changes too
            plan = stack.plan(vars={"input": "new", "token": "s3cr3t-new-token"})
            assert plan.replaces == ["terraform_data.app"]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-vv")
    result.assert_outcomes(failed=1)
    expected = "\n".join(
        [
            "assert [] == ['terraform_data.app']",
            "E         Plan: 0 to create, 2 to update, 0 to delete, 0 to replace, 0 drifted",
            "E           ~ terraform_data.app (update)",
            'E               input: "old" -> "new"',
            'E               output: "old" -> (known after apply)',
            "E           ~ terraform_data.secret (update)",
            "E               input: (sensitive)",
            'E               output: "<sensitive>" -> (known after apply)',
        ]
    )
    assert expected in result.stdout.str()
    shown = [line for line in result.outlines if line.startswith("E ")]
    assert shown
    assert not [line for line in shown if "s3cr3t" in line]
    assert leftovers(iac_home) == []


def test_a_list_of_changes_compares_with_addresses(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("main.tf").write_text(MODULE)
    pytester.makepyfile(
        """
        def test_plan(iac_plan):
            plan = iac_plan(".", vars={"input": "a", "generation": 1, "token": "xyz"})
            assert plan.creates == ["terraform_data.app", "terraform_data.secret"]
            assert plan.changes == plan.creates
            assert plan.replaces == [] and not plan.replaces
            assert plan["terraform_data.app"].action == "create"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def _plan(count: int, action: str = "create") -> Plan:
    actions = ["delete", "create"] if action == "replace" else [action]
    return Plan.from_json(
        {
            "resource_changes": [
                {
                    "address": f"terraform_data.item[{i}]",
                    "change": {"actions": actions, "before": None, "after": {"input": i}},
                }
                for i in range(count)
            ]
        }
    )


def test_repr_and_str_list_addresses_bounded_in_length() -> None:
    assert repr(_plan(0)) == "<Plan 0 to create, 0 to update, 0 to delete, 0 to replace, 0 drifted>"
    assert repr(_plan(2, "replace")) == (
        "<Plan 0 to create, 0 to update, 0 to delete, 2 to replace, 0 drifted: "
        "-/+ terraform_data.item[0], -/+ terraform_data.item[1]>"
    )
    big = _plan(100)
    assert repr(big).endswith("+ terraform_data.item[4], ... 95 more>")
    lines = str(big).splitlines()
    assert lines[0] == "Plan: 100 to create, 0 to update, 0 to delete, 0 to replace, 0 drifted"
    assert lines[-1] == "  ... and 70 more"
    assert len(lines) == 1 + 30 * 2 + 1  # each listed change: its line and its attribute
