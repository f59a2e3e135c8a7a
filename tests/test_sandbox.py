"""Sandbox deployments as a user sees them: through pytester, with real Terraform."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import leftovers

MODULE = """
variable "name" { type = string }
variable "settings" {
  type = object({
    count   = number
    ratio   = number
    enabled = bool
    zones   = list(string)
    labels  = map(string)
    nested  = object({ ports = list(number), extra = optional(map(bool), {}) })
  })
}
variable "password" {
  type      = string
  sensitive = true
  default   = "hunter2-hunter2"
}
resource "terraform_data" "item" {
  count = var.settings.count
  input = "${var.name}-${count.index}"
}
module "child" {
  source = "../shared/child"
  name   = var.name
}
output "names" { value = terraform_data.item[*].output }
output "settings" { value = var.settings }
output "child_id" { value = module.child.id }
output "connection" {
  value     = "postgres://app:${var.password}@db/${var.name}"
  sensitive = true
}
"""

CHILD = """
variable "name" { type = string }
resource "terraform_data" "this" { input = var.name }
output "id" { value = terraform_data.this.id }
"""

SETTINGS = (
    '{"count": 2, "ratio": 0.25, "enabled": True, "zones": ["a", "b"], '
    '"labels": {"team": "platform", "cost-center": "42"}, '
    '"nested": {"ports": [80, 443], "extra": {"x": False}}}'
)


@pytest.fixture
def module(pytester: pytest.Pytester) -> Path:
    """A module under test beside the test file, calling a local module through `../`."""
    (pytester.path / "modules" / "app").mkdir(parents=True)
    (pytester.path / "modules" / "shared" / "child").mkdir(parents=True)
    (pytester.path / "modules" / "app" / "main.tf").write_text(MODULE)
    (pytester.path / "modules" / "shared" / "child" / "main.tf").write_text(CHILD)
    return pytester.path / "modules" / "app"


def source_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "__pycache__" not in p.parts}


def test_deploy_inspect_and_destroy(
    pytester: pytest.Pytester, module: Path, engine: str, iac_home: Path
) -> None:
    (module / "test_sandboxed_app.py").write_text(
        f"""
def test_app(iac_deploy, iac_name):
    settings = {SETTINGS}
    stack = iac_deploy(".", vars={{"name": iac_name, "settings": settings}})
    assert stack.outputs["settings"] == settings  # every type arrives intact
    assert stack.outputs["names"] == [f"{{iac_name}}-0", f"{{iac_name}}-1"]
    assert stack.resources == [
        "module.child.terraform_data.this",
        "terraform_data.item[0]",
        "terraform_data.item[1]",
    ]
    assert stack.state()["values"]["outputs"]["child_id"]["value"] == stack.outputs["child_id"]
    assert "hunter2-hunter2" in stack.outputs["connection"]
    assert "hunter2" not in repr(stack.outputs)
    assert stack.plan().is_empty  # idempotent

    # an upgrade: one more item is a plan with one create, then a re-apply
    plan = stack.plan(vars={{"settings": {{**settings, "count": 3}}}})
    assert [c.address for c in plan.creates] == ["terraform_data.item[2]"]
    assert not plan.deletes and not plan.updates
    stack.apply(vars={{"settings": {{**settings, "count": 3}}}})
    assert len(stack.outputs["names"]) == 3
"""
    )
    before = source_files(pytester.path)
    result = pytester.runpytest(f"--iac-binary={engine}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert leftovers(iac_home) == []
    assert source_files(pytester.path) == before  # no .terraform, lock file or state


def test_header_names_the_engine(pytester: pytest.Pytester, engine: str) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(f"--iac-binary={engine}")
    if engine == "embedded":
        result.stdout.fnmatch_lines(["iac: embedded terraform 1.*"])
    else:
        result.stdout.fnmatch_lines([f"iac: terraform 1.* ({engine})"])


def test_sensitive_output_is_hidden_in_assertion_messages(
    pytester: pytest.Pytester, module: Path, iac_home: Path
) -> None:
    (module / "test_sandboxed_app.py").write_text(
        f"""
def test_app(iac_deploy, iac_name):
    stack = iac_deploy(".", vars={{"name": iac_name, "settings": {SETTINGS}}})
    assert stack.outputs["connection"] == "postgres://app:wrong@db/x"
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-vv")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*<sensitive> == <sensitive>*"])
    assert "hunter2" not in result.stdout.str()
    assert leftovers(iac_home) == []


def test_shared_deployment_is_deployed_once_and_destroyed(
    pytester: pytest.Pytester, module: Path, iac_home: Path
) -> None:
    (module / "test_sandboxed_app.py").write_text(
        f"""
import pytest_iac

app = pytest_iac.deployment(".", vars={{"name": "shared", "settings": {SETTINGS}}})
ids = set()

def test_one(app):
    ids.add(app.outputs["child_id"])

def test_two(app):
    ids.add(app.outputs["child_id"])
    assert len(ids) == 1  # the same deployment

def test_without_deployment():
    pass
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "sandbox", "-v")
    result.assert_outcomes(passed=2, deselected=1)
    assert leftovers(iac_home) == []


def test_deploying_tests_are_marked_sandbox(pytester: pytest.Pytester, module: Path) -> None:
    (module / "test_sandboxed_app.py").write_text(
        """
import pytest, pytest_iac

shared = pytest_iac.deployment(".")

@pytest.fixture
def indirect(iac_deploy):
    return iac_deploy

def test_direct(iac_deploy): pass
def test_shared(shared): pass
def test_through_a_fixture(indirect): pass
def test_plan_only(iac_plan): pass
def test_plain(iac_name): pass
"""
    )
    result = pytester.runpytest("--collect-only", "-q", "-m", "sandbox")
    result.stdout.fnmatch_lines(
        ["*::test_direct", "*::test_shared", "*::test_through_a_fixture", "*3/5 tests collected*"]
    )
    result = pytester.runpytest("--collect-only", "-q", "-m", "not sandbox")
    result.stdout.fnmatch_lines(["*::test_plan_only", "*::test_plain", "*2/5 tests collected*"])


def test_iac_name_is_short_dns_safe_unique_and_stable(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
import re, pytest
names = {}

@pytest.mark.parametrize("n", range(3))
def test_Some_Very_LONG_name_with_UNDERSCORES(iac_name, request, n):
    assert re.fullmatch(r"[a-z][a-z0-9-]{2,30}[a-z0-9]", iac_name), iac_name
    assert iac_name == request.getfixturevalue("iac_name")
    names[n] = iac_name

def test_all_different():
    assert len(set(names.values())) == 3
"""
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=4)


def test_plan_only_deploys_nothing(
    pytester: pytest.Pytester, module: Path, engine: str, iac_home: Path
) -> None:
    (module / "test_sandboxed_app.py").write_text(
        f"""
def test_plan(iac_plan):
    plan = iac_plan(".", vars={{"name": "n", "settings": {SETTINGS}}})
    assert sorted(c.address for c in plan.creates) == [
        "module.child.terraform_data.this", "terraform_data.item[0]", "terraform_data.item[1]"
    ]
    assert plan["terraform_data.item[0]"].after["input"] == "n-0"
    assert plan.outputs["settings"].after["nested"]["ports"] == [80, 443]
    assert not plan.is_empty
"""
    )
    result = pytester.runpytest(f"--iac-binary={engine}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert leftovers(iac_home) == []


def test_terraform_output_streams_with_s(pytester: pytest.Pytester, module: Path) -> None:
    (module / "test_sandboxed_app.py").write_text(
        f"""
def test_app(iac_deploy):
    iac_deploy(".", vars={{"name": "streamed", "settings": {SETTINGS}}})
"""
    )
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "$ terraform apply" in output
    assert "Apply complete! Resources: 3 added" in output
    assert "Destroy complete! Resources: 3 destroyed" in output


def test_teardown_on_success_keeps_a_failed_tests_deployment(
    pytester: pytest.Pytester, module: Path, iac_home: Path
) -> None:
    (module / "test_sandboxed_app.py").write_text(
        f"""
def test_fails(iac_deploy):
    iac_deploy(".", vars={{"name": "kept", "settings": {SETTINGS}}})
    assert False, "the test failed"

def test_passes(iac_deploy):
    iac_deploy(".", vars={{"name": "gone", "settings": {SETTINGS}}})
"""
    )
    result = pytester.runpytest("--iac-teardown=on-success", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*pytest-iac: deployments kept*", "*destroy: cd * destroy *"])
    kept = leftovers(iac_home)
    assert len(kept) == 2  # the failed test's state and its sandbox directory, nothing else
    assert any("t-test-fails" in k for k in kept)
    # the command printed destroys it
    command = next(
        line.split("destroy: ", 1)[1] for line in result.outlines if "destroy: cd " in line
    )
    subprocess.run(command, shell=True, check=True, capture_output=True)
    assert not [k for k in leftovers(iac_home) if k.startswith("state")]


def test_failed_destroy_errors_keeps_state_and_says_how_to_finish(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    pytester.path.joinpath("main.tf").write_text(
        """
resource "terraform_data" "stubborn" {
  provisioner "local-exec" {
    when    = destroy
    command = "test -z \\"$REFUSE_DESTROY\\" || { echo 'Error: refused to die' >&2; exit 1; }"
  }
}
"""
    )
    pytester.makepyfile(
        """
def test_app(iac_deploy):
    iac_deploy(".", env={"REFUSE_DESTROY": "1"})
"""
    )
    result = pytester.runpytest("--iac-retries=0", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*terraform destroy failed for module*",
            "*refused to die*",
            "*The state and working directory are kept*",
            "*cd * destroy -auto-approve*",
        ]
    )
    assert any(k.startswith("state with resources") for k in leftovers(iac_home))
    command = next(line.strip() for line in result.outlines if line.strip().startswith("cd "))
    subprocess.run(command, shell=True, check=True, capture_output=True)
    assert not [k for k in leftovers(iac_home) if k.startswith("state")]


def test_outputs_are_the_same_from_local_state_and_from_a_backend(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    """On the sandbox's own state the outputs come from the state file; in the module's
    backend (`backend_config=`), from terraform."""
    outputs = """
variable "secret" {
  type      = string
  sensitive = true
  default   = "s3cr3t-value"
}
resource "terraform_data" "x" { input = { a = [1, 2], b = "two" } }
output "data" { value = terraform_data.x.output }
output "secret" {
  value     = var.secret
  sensitive = true
}
"""
    for name, backend in (("plain", ""), ("backend", 'terraform {\n  backend "local" {}\n}\n')):
        (pytester.path / name).mkdir()
        (pytester.path / name / "main.tf").write_text(backend + outputs)
    pytester.makepyfile(
        """
import pytest

@pytest.mark.parametrize("module", ["plain", "backend"])
def test_outputs(iac_deploy, module):
    config = {"path": "own.tfstate"} if module == "backend" else None
    stack = iac_deploy(module, backend_config=config)
    assert stack.outputs["data"] == {"a": [1, 2], "b": "two"}
    assert stack.outputs["secret"] == "s3cr3t-value"
    assert stack.outputs.sensitive == {"secret"}
    assert "s3cr3t" not in repr(stack.outputs)
"""
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert leftovers(iac_home) == []


def test_deployments_that_init_alike_share_one_init(
    pytester: pytest.Pytester, module: Path, engine: str, iac_home: Path
) -> None:
    """Two modules that differ only in what init does not read: the second deployment
    reuses what the first one's init made; with iac_reuse_init off, each runs init."""
    other = pytester.path / "modules" / "other"
    other.mkdir()
    (other / "main.tf").write_text(MODULE.replace("count.index", "count.index + 1"))
    (pytester.path / "modules" / "test_both.py").write_text(
        f"""
def test_app(iac_deploy):
    assert iac_deploy("app", vars={{"name": "a", "settings": {SETTINGS}}}).outputs["names"] == [
        "a-0", "a-1"
    ]

def test_other(iac_deploy):
    assert iac_deploy("other", vars={{"name": "b", "settings": {SETTINGS}}}).outputs[
        "names"
    ] == ["b-1", "b-2"]
"""
    )

    def inits(*args: str) -> tuple[int, int]:
        result = pytester.runpytest_subprocess(
            f"--iac-binary={engine}", "-s", "-p", "no:cacheprovider", "modules", *args
        )
        result.assert_outcomes(passed=2)
        output = result.stdout.str() + result.stderr.str()
        return output.count("$ terraform init"), output.count("init reused from")

    assert inits("-o", "iac_reuse_init=false") == (2, 0)
    assert inits() == (1, 1)
    assert inits() == (0, 2)  # a re-run: both from the entry the last run kept
    assert leftovers(iac_home) == []
