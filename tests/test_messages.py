"""What a user sees when a test is written wrong or a deployment fails: one clear message each.

Every case runs real Terraform through pytester and checks that nothing is left behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import leftovers

NEEDS_REGION = """
variable "region" { type = string }
resource "terraform_data" "x" { input = var.region }
"""

FAILS_HALF_WAY = """
resource "terraform_data" "first" { input = "made" }
resource "terraform_data" "second" {
  depends_on = [terraform_data.first]
  provisioner "local-exec" { command = "echo broken-provisioner; exit 3" }
}
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", *args)


def ledger_records(home: Path) -> list[Path]:
    return list(home.rglob("ledger/*.json"))


def test_a_mistyped_keyword_names_the_right_one(pytester: pytest.Pytester, iac_home: Path) -> None:
    pytester.path.joinpath("main.tf").write_text(NEEDS_REGION)
    pytester.makepyfile(
        test_typos="""
        def test_deploy(iac_deploy):
            iac_deploy(".", var={"region": "x"})

        def test_plan(iac_plan):
            iac_plan(".", vars={"region": "x"}, varfiles=["a.tfvars"])

        def test_unrelated(iac_deploy):
            iac_deploy(".", colour="blue")
        """,
        test_shared="""
        import pytest_iac

        shared = pytest_iac.deployment(".", var={"region": "x"})
        """,
    )
    result = run(pytester, "--continue-on-collection-errors")
    result.assert_outcomes(failed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            '>       iac_deploy(".", var={"region": "x"})',
            "E       TypeError: iac_deploy() got an unexpected keyword argument 'var': "
            "did you mean `vars=`?",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E       TypeError: iac_plan() got an unexpected keyword argument 'varfiles': "
            "did you mean `var_files=`?",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E       TypeError: iac_deploy() got an unexpected keyword argument 'colour'; "
            "it takes `vars=`, `var_files=`, `env=`, `backend_config=`, `from_ref=`, "
            "`init_upgrade=`, `parallelism=`",
        ]
    )
    result.stdout.fnmatch_lines(
        ["E   TypeError: deployment() got an unexpected keyword argument 'var': did you mean*"]
    )
    assert "pytest_iac/" not in result.stdout.str()  # no trace through our internals
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_a_missing_variable_says_how_to_give_it_and_is_not_counted_as_made(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    pytester.path.joinpath("main.tf").write_text(NEEDS_REGION)
    pytester.makepyfile(
        """
        def test_deploy(iac_deploy):
            iac_deploy(".")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       Use a -var or -var-file command line argument to provide a value for this",
            "E       variable.",
            "E       ",
            'E       pytest-iac: give variables as `vars={"region": ...}` (or `var_files=[...]`)',
            "E       to iac_deploy, iac_plan, pytest_iac.deployment() or @pytest.mark.drift.",
        ]
    )
    result.stdout.no_fnmatch_line("*deployments: 1 made*")  # nothing was deployed
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_a_failed_shared_deployment_is_shown_once(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    pytester.path.joinpath("mod").mkdir()
    pytester.path.joinpath("mod", "main.tf").write_text(FAILS_HALF_WAY)
    pytester.makepyfile(
        """
        import pytest
        import pytest_iac

        shared = pytest_iac.deployment("mod")

        @pytest.fixture(scope="module")
        def through_factory(iac_module_deploy):
            return iac_module_deploy("mod/../mod")

        def test_one(shared): pass
        def test_two(shared): pass
        def test_three(shared): pass
        def test_four(through_factory): pass
        def test_five(through_factory): pass
        """
    )
    result = run(pytester, "--iac-retries=0")
    result.assert_outcomes(errors=5)
    output = result.stdout.str()
    # the diagnostic once per deployment, never chained to itself
    # The failure sections, not the captured logs, nor the short summary (which repeats the
    # whole message where CI is set: pytest cuts it to the terminal's width elsewhere).
    sections = output.split("short test summary info")[0].splitlines()
    shown = [re.sub(r"^E +", "", line) for line in sections]
    assert shown.count("Error: local-exec provisioner error") == 2, output
    assert "During handling of the above exception" not in output
    module = pytester.path / "mod"
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_two*",
            f"setup of deployment `shared` ({module}) failed (see the first error)",
            "*ERROR at setup of test_three*",
            f"setup of deployment `shared` ({module}) failed (see the first error)",
            "*ERROR at setup of test_five*",
            f"setup of deployment {module} failed (see the first error)",
        ]
    )
    assert not [line for line in result.outlines if line.startswith("E") and "/../" in line]
    result.stdout.fnmatch_lines(["deployments: 2 made, 2 destroyed, *"])
    assert leftovers(iac_home) == []


def test_fixtures_have_readable_reprs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_it(iac_deploy, iac_module_deploy, iac_plan):
            assert False
        """
    )
    result = run(pytester, "--showlocals")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "iac_deploy = <iac_deploy: deploys a module, destroyed when the test ends>",
            "iac_module_deploy = <iac_module_deploy: deploys a module, destroyed when the "
            "module ends>",
            "iac_plan = <iac_plan: plans a module against empty state, deploys nothing>",
        ]
    )
    result.stdout.no_fnmatch_line("*<locals>*")


def test_scope_mismatch_names_the_fixture_to_use(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="session")
        def network(iac_deploy):
            return iac_deploy("network")

        def test_it(network): pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "ScopeMismatch: You tried to access the function scoped fixture iac_deploy with a "
            "session scoped request object.*",
            "*",
            "pytest-iac: iac_deploy destroys after each test. In a session-scoped fixture, "
            "deploy with",
            "iac_session_deploy (destroyed when the session ends), or use "
            'pytest_iac.deployment(path, scope="session").',
        ]
    )


def test_paths_are_resolved_before_they_are_shown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_it(iac_deploy):
            iac_deploy("sub/../missing")
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E * module path {pytester.path / 'missing'} does not exist"])
    assert not [line for line in result.outlines if line.startswith("E") and "/../" in line]


def test_the_summary_fits_120_columns_and_v_shows_the_details(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    pytester.mkdir("app")
    pytester.path.joinpath("app", "main.tf").write_text(FAILS_HALF_WAY.replace("exit 3", "true"))
    pytester.makepyfile(
        """
        def test_fails(iac_deploy):
            iac_deploy("app")
            assert False
        """
    )
    result = run(pytester, "--iac-teardown=on-success")
    result.assert_outcomes(failed=1)
    title = next(i for i, line in enumerate(result.outlines) if "deployments kept" in line)
    summary = result.outlines[title + 1 : title + 4]
    assert summary[0] == "deployments: 1 made, 0 destroyed, 1 kept, 0 failed to destroy, 0 leaked"
    assert summary[1].startswith("kept: app (t-test-fails-")
    assert summary[2] == "(-v shows where each is and the command that destroys it)"
    assert max(len(line) for line in result.outlines[title:]) <= 120
    assert run(pytester, "--iac-cleanup").ret == 0  # destroys what the run kept

    detailed = run(pytester, "--iac-teardown=on-success", "-v")
    detailed.stdout.fnmatch_lines(
        [f"kept: {pytester.path / 'app'} in *", "  destroy: cd * destroy -auto-approve *"]
    )
    assert run(pytester, "--iac-cleanup").ret == 0
    assert leftovers(iac_home) == []
