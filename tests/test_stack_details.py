"""What a deployed `Stack` tells a test, and the init/apply options a deployment takes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import leftovers

MODULE = """
data "terraform_remote_state" "other" {
  backend = "local"
  config  = { path = "${path.module}/other.tfstate" }
}
resource "terraform_data" "x" { input = "a" }
output "nothing" { value = null }
output "something" { value = terraform_data.x.output }
"""
EMPTY_STATE = (
    '{"version": 4, "terraform_version": "1.11.4", "serial": 1, '
    '"lineage": "4a1d2c4e-0000-0000-0000-000000000000", "outputs": {}, "resources": []}'
)


@pytest.fixture
def module(pytester: pytest.Pytester) -> Path:
    pytester.path.joinpath("main.tf").write_text(MODULE)
    pytester.path.joinpath("other.tfstate").write_text(EMPTY_STATE)
    return pytester.path


def test_resources_data_sources_and_null_outputs(
    pytester: pytest.Pytester, module: Path, engine: str, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        def test_it(iac_deploy):
            stack = iac_deploy(".")
            assert stack.resources == ["terraform_data.x"]
            assert stack.data_sources == ["data.terraform_remote_state.other"]
            assert stack.outputs["nothing"] is None
            assert dict(stack.outputs) == {"nothing": None, "something": "a"}
        """
    )
    result = pytester.runpytest(f"--iac-binary={engine}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert leftovers(iac_home) == []


def test_init_and_apply_options_are_typed_arguments(
    pytester: pytest.Pytester, module: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest_iac

        shared = pytest_iac.deployment(".", init_upgrade=True, parallelism=2)

        def test_options(iac_deploy, shared):
            iac_deploy(".", parallelism=1)

        def test_not_a_number(iac_deploy):
            iac_deploy(".", parallelism="4")
        """
    )
    result = pytester.runpytest_subprocess(
        "-s", "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "iac_reuse_init=false"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stderr.fnmatch_lines(["*$ terraform init -no-color -input=false -upgrade"])
    result.stderr.fnmatch_lines(["*$ terraform apply *-auto-approve -parallelism=2 -var-file=*"])
    result.stderr.fnmatch_lines(["*$ terraform apply *-auto-approve -parallelism=1 -var-file=*"])
    result.stderr.fnmatch_lines(["*$ terraform destroy *-auto-approve -parallelism=2 -var-file=*"])
    result.stdout.fnmatch_lines(
        ["E  *IacError: parallelism must be a whole number of 1 or more, not '4'"]
    )
    assert leftovers(iac_home) == []
