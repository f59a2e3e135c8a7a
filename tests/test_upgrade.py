"""Upgrade tests: a module deployed as it was at a git tag, upgraded to the working tree.

Runs the example's two repositories (examples/two-repos/make.py builds them, offline) with
real Terraform through pytester, as a user of the modules repository would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import git
import pytest
from conftest import leftovers, two_repos

make = two_repos()


@pytest.fixture
def modules(pytester: pytest.Pytester) -> Path:
    """The modules repository, tagged v1.0.0, v1.1.0 and v2.0.0 (HEAD)."""
    path: Path = make.build(pytester.path)[0]
    return path


def ledger_records(home: Path) -> list[Path]:
    return list(home.rglob("ledger/*.json"))


def test_upgrade_between_two_tags(
    pytester: pytest.Pytester, modules: Path, engine: str, iac_home: Path
) -> None:
    # network: v1.0.0 -> HEAD updates in place; app: v1.1.0 -> HEAD (v2.0.0) replaces.
    result = pytester.runpytest(str(modules), f"--iac-binary={engine}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["deployments: 2 made, 2 destroyed, 0 kept*"])
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []
    with git.Repo(modules) as repo:
        assert not repo.is_dirty(untracked_files=True)  # the repository is only read


def test_a_replacement_the_test_did_not_expect_fails_naming_it(
    pytester: pytest.Pytester, modules: Path, iac_home: Path
) -> None:
    (modules / "app" / "test_app.py").write_text(
        """
def test_upgrade_is_safe(iac_deploy):
    stack = iac_deploy(".", vars={"name": "demo"}, from_ref="v1.0.0")
    plan = stack.upgrade()
    assert [c.address for c in plan.replaces] == []
"""
    )
    result = pytester.runpytest(str(modules / "app"), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "AssertionError: assert ['terraform_data.server'] == []" in result.stdout.str()
    assert leftovers(iac_home) == []


def test_kept_upgraded_deployment_is_destroyed_by_cleanup(
    pytester: pytest.Pytester, modules: Path, iac_home: Path
) -> None:
    # The ledger's record (written before v1.0.0's apply) must destroy what the upgrade made.
    result = pytester.runpytest(str(modules / "network"), "--iac-teardown=never")
    result.assert_outcomes(passed=1)
    (record,) = ledger_records(iac_home)
    state = Path(json.loads(record.read_text())["module_dir"]) / "terraform.tfstate"
    addresses = {r["type"] + "." + r["name"] for r in json.loads(state.read_text())["resources"]}
    assert addresses == {"terraform_data.vpc", "terraform_data.subnet"}  # upgraded
    cleanup = pytester.runpytest_subprocess(str(modules), "--iac-cleanup")
    assert cleanup.ret == 0, cleanup.stdout.str()
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_an_upgrade_that_cannot_plan_puts_the_old_code_back_for_teardown(
    pytester: pytest.Pytester, modules: Path, iac_home: Path
) -> None:
    main_tf = modules / "network" / "main.tf"
    main_tf.write_text(main_tf.read_text() + '\noutput "broken" { value = var.missing }\n')
    (modules / "network" / "test_network.py").write_text(
        """
import pytest
import pytest_iac

def test_broken_upgrade(iac_deploy):
    stack = iac_deploy(".", vars={"name": "demo"}, from_ref="v1.0.0")
    with pytest.raises(pytest_iac.TerraformError, match="var.missing"):
        stack.upgrade()
"""
    )
    result = pytester.runpytest(str(modules / "network"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["deployments: 1 made, 1 destroyed*"])
    assert leftovers(iac_home) == []


@pytest.mark.parametrize(
    ("ref", "setup", "message"),
    [
        (
            "v9.9.9",
            None,
            "*from_ref='v9.9.9': no tag, branch or commit 'v9.9.9' in *"
            "(tags: v1.0.0, v1.1.0, v2.0.0).*",
        ),
        ("v1.0.0", "new-module", "*from_ref='v1.0.0': cache did not exist at v1.0.0 (commit *"),
        ("v1.0.0", "outside", "*from_ref='v1.0.0': * calls local modules outside the repository*"),
        ("v1.0.0", "not-a-repository", "*from_ref='v1.0.0': * is not inside a git repository*"),
    ],
)
def test_bad_refs_are_errors_before_anything_is_deployed(
    pytester: pytest.Pytester,
    modules: Path,
    iac_home: Path,
    ref: str,
    setup: str | None,
    message: str,
) -> None:
    target = modules / "network"
    if setup == "new-module":  # a module added since the ref
        target = modules / "cache"
        target.mkdir()
        (target / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    elif setup == "outside":  # a local module outside the repository has no version there
        (modules.parent / "shared").mkdir()
        (modules.parent / "shared" / "main.tf").write_text('resource "terraform_data" "x" {}\n')
        (target / "shared.tf").write_text('module "shared" {\n  source = "../../shared"\n}\n')
    elif setup == "not-a-repository":
        shutil.rmtree(modules / ".git")
    (target / "test_from_ref.py").write_text(
        f"""
def test_upgrade(iac_deploy):
    iac_deploy(".", vars={{"name": "demo"}}, from_ref={ref!r})
"""
    )
    result = pytester.runpytest(str(target / "test_from_ref.py"), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert leftovers(iac_home) == []
    assert ledger_records(iac_home) == []


def test_a_shallow_clone_is_told_to_fetch_tags(
    pytester: pytest.Pytester, modules: Path, iac_home: Path
) -> None:
    clone = pytester.path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth=1", "--no-tags", f"file://{modules}", str(clone)],
        check=True,
    )
    result = pytester.runpytest(str(clone / "network"), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*no tag, branch or commit 'v1.0.0'*This clone is shallow*git fetch --tags --unshallow*"]
    )
    assert leftovers(iac_home) == []


def test_variables_the_new_version_requires_serve_its_apply_and_destroy(
    pytester: pytest.Pytester, modules: Path, iac_home: Path
) -> None:
    main_tf = modules / "network" / "main.tf"
    main_tf.write_text(
        main_tf.read_text()
        + '\nvariable "zone" {\n  type = string\n}\n\noutput "zone" {\n  value = var.zone\n}\n'
    )
    (modules / "network" / "test_network.py").write_text(
        """
def test_upgrade_with_a_new_variable(iac_deploy):
    stack = iac_deploy(".", vars={"name": "demo"}, from_ref="v1.0.0")
    assert not stack.upgrade(vars={"zone": "a"}).deletes
    stack.apply()
    assert stack.outputs["zone"] == "a"
"""
    )
    result = pytester.runpytest(str(modules / "network"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["deployments: 1 made, 1 destroyed*"])
    assert leftovers(iac_home) == []
