"""Every bad input: the few lines a user sees, and proof that nothing is left deployed."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import leftovers

import pytest_iac.embedded
from pytest_iac import providers

TEST_FILE = """
def test_deploy(iac_deploy):
    iac_deploy({path!r}, vars={vars!r})
"""


def run_deploy(
    pytester: pytest.Pytester, path: str, *args: str, vars: dict[str, object] | None = None
) -> pytest.RunResult:
    pytester.makepyfile(test_it=TEST_FILE.format(path=path, vars=vars or {}))
    return pytester.runpytest("-p", "no:cacheprovider", "--iac-retries=0", *args)


def assert_short_failure(result: pytest.RunResult) -> None:
    """Failed, with the user's line and terraform's words: no trace through our internals."""
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "pytest_iac/" not in output, output
    result.stdout.fnmatch_lines(["*test_it.py:2: *Error"])


def test_path_that_does_not_exist(pytester: pytest.Pytester, iac_home: Path) -> None:
    result = run_deploy(pytester, "no/such/module")
    assert_short_failure(result)
    result.stdout.fnmatch_lines(["E * module path */no/such/module does not exist"])
    assert leftovers(iac_home) == []


def test_directory_without_tf_files(pytester: pytest.Pytester, iac_home: Path) -> None:
    pytester.mkdir("empty")
    (pytester.path / "empty" / "README.md").write_text("not a module")
    result = run_deploy(pytester, "empty")
    assert_short_failure(result)
    result.stdout.fnmatch_lines(["E * module path */empty has no .tf files*"])
    assert leftovers(iac_home) == []


def test_invalid_hcl(pytester: pytest.Pytester, engine: str, iac_home: Path) -> None:
    (pytester.path / "main.tf").write_text('resource "terraform_data" "x" {\n  input = \n}\n')
    result = run_deploy(pytester, ".", f"--iac-binary={engine}")
    assert_short_failure(result)
    result.stdout.fnmatch_lines(
        [
            "E * terraform init failed for module *",
            "E *command: terraform init -no-color -input=false*",
            "E *Error: *",
            "E *on main.tf line 2*",
        ]
    )
    assert leftovers(iac_home) == []


def test_missing_required_variable(pytester: pytest.Pytester, iac_home: Path) -> None:
    (pytester.path / "main.tf").write_text(
        'variable "region" { type = string }\n'
        'resource "terraform_data" "x" { input = var.region }\n'
    )
    result = run_deploy(pytester, ".")
    assert_short_failure(result)
    result.stdout.fnmatch_lines(
        ["E * terraform apply failed for module *", "E *No value for required variable*"]
    )
    assert leftovers(iac_home) == []


def test_failing_variable_validation(pytester: pytest.Pytester, iac_home: Path) -> None:
    (pytester.path / "main.tf").write_text(
        """
variable "size" {
  type = number
  validation {
    condition     = var.size >= 1 && var.size <= 3
    error_message = "size must be between 1 and 3."
  }
}
resource "terraform_data" "x" { input = var.size }
"""
    )
    result = run_deploy(pytester, ".", vars={"size": 7})
    assert_short_failure(result)
    result.stdout.fnmatch_lines(
        ["E *Error: Invalid value for variable*", "E *size must be between 1 and 3.*"]
    )
    assert leftovers(iac_home) == []


def test_apply_that_fails_half_way_is_destroyed(
    pytester: pytest.Pytester, engine: str, iac_home: Path
) -> None:
    (pytester.path / "main.tf").write_text(
        """
resource "terraform_data" "first" { input = "made" }
resource "terraform_data" "second" {
  depends_on = [terraform_data.first]
  provisioner "local-exec" {
    command = "echo 'disk quota exceeded' >&2; exit 1"
  }
}
"""
    )
    result = run_deploy(pytester, ".", f"--iac-binary={engine}", "-s")
    assert_short_failure(result)
    result.stdout.fnmatch_lines(
        ["E * terraform apply failed for module *", "E *Error: local-exec provisioner error*"]
    )
    # the first resource was made, then destroyed at teardown
    output = result.stdout.str() + result.stderr.str()
    assert "terraform_data.first: Creation complete" in output
    assert "Destroy complete! Resources: 2 destroyed." in output
    assert leftovers(iac_home) == []


def test_unknown_binary_is_a_usage_error(pytester: pytest.Pytester, iac_home: Path) -> None:
    result = run_deploy(pytester, ".", "--iac-binary=/opt/nowhere/terraform")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: Terraform binary '/opt/nowhere/terraform' not found or not executable.*"]
    )
    assert leftovers(iac_home) == []


def test_reuse_init_that_is_not_a_truth_value_is_a_usage_error(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    result = run_deploy(pytester, ".", "-o", "iac_reuse_init=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: iac_reuse_init must be true or false: invalid truth value 'sometimes'"]
    )
    assert leftovers(iac_home) == []


def test_no_engine_at_all(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, iac_home: Path
) -> None:
    (pytester.path / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-path")))
    monkeypatch.setattr(pytest_iac.embedded, "library_path", lambda: None)
    result = run_deploy(pytester, ".")
    result.stdout.fnmatch_lines(["iac: no engine (no Terraform engine found*"])
    assert_short_failure(result)
    result.stdout.fnmatch_lines(
        ["E * no Terraform engine found*", "E *pip install 'pytest-iac?embedded?'*"]
    )
    assert leftovers(iac_home) == []


def test_timeout_stops_terraform_and_destroys(pytester: pytest.Pytester, iac_home: Path) -> None:
    (pytester.path / "main.tf").write_text(
        """
resource "terraform_data" "quick" { input = 1 }
resource "terraform_data" "slow" {
  depends_on = [terraform_data.quick]
  provisioner "local-exec" { command = "sleep 30" }
}
"""
    )
    result = run_deploy(pytester, ".", "--iac-timeout=3")
    assert_short_failure(result)
    result.stdout.fnmatch_lines(["E *stopped after the timeout of 3s (--iac-timeout)*"])
    assert leftovers(iac_home) == []


RANDOM_PROVIDER = """
terraform {
  required_providers {
    random = { source = "hashicorp/random" }
  }
}

resource "random_id" "x" {
  byte_length = 4
}
"""


def test_provider_that_cannot_be_installed_offline(
    pytester: pytest.Pytester, iac_home: Path, tmp_path: Path
) -> None:
    if providers.unreachable(providers.DEFAULT_REGISTRY) is None:
        pytest.skip("registry.terraform.io is reachable here: hashicorp/random can be installed")
    mirror = tmp_path / "mirror"  # a mirror, but without hashicorp/random
    (mirror / "registry.terraform.io" / "hashicorp" / "aws").mkdir(parents=True)
    (pytester.path / "main.tf").write_text(RANDOM_PROVIDER)
    pytester.makepyfile(test_it=TEST_FILE.format(path=".", vars={}))
    # The default retries: an offline machine is not a blip, so none of them is used.
    result = pytester.runpytest("-p", "no:cacheprovider", f"--iac-provider-mirror={mirror}")
    assert_short_failure(result)
    result.stdout.fnmatch_lines(
        [
            "E   *ProviderUnavailableError: terraform init failed*",
            "E *the hashicorp/random provider cannot be installed: no provider mirror holds it "
            f"(mirrors checked: {mirror}*) and registry.terraform.io is unreachable (*). "
            "Make a mirror * and pass --iac-provider-mirror=DIR*",
        ]
    )
    assert "retrying" not in result.stdout.str()
    assert leftovers(iac_home) == []


MISSING = "no/such/mirror"


@pytest.mark.parametrize(
    ("args", "ini", "env", "origin"),
    [
        ([f"--iac-provider-mirror={MISSING}"], "", None, f"--iac-provider-mirror {MISSING}"),
        ([], f"iac_provider_mirrors = {MISSING}\n", None, f"ini iac_provider_mirrors */{MISSING}"),
        ([], "", MISSING, f"PYTEST_IAC_PROVIDER_MIRROR {MISSING}"),
    ],
)
def test_provider_mirror_that_does_not_exist_is_a_usage_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    iac_home: Path,
    args: list[str],
    ini: str,
    env: str | None,
    origin: str,
) -> None:
    pytester.makeini(f"[pytest]\n{ini}")
    if env is None:
        monkeypatch.delenv("PYTEST_IAC_PROVIDER_MIRROR", raising=False)
    else:
        monkeypatch.setenv("PYTEST_IAC_PROVIDER_MIRROR", env)
    result = run_deploy(pytester, ".", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: provider mirror not found: {origin}. A mirror is a directory made by*"]
    )
    assert not iac_home.exists()


def test_values_for_undeclared_variables_are_a_warning(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    (pytester.path / "main.tf").write_text(
        'variable "name" {}\n\noutput "name" {\n  value = var.name\n}\n'
    )
    (pytester.path / "extra.tfvars").write_text('name = "a"\nregoin = "eu-west-1"\n')
    pytester.makepyfile(
        test_it="""
        def test_plan(iac_plan):
            iac_plan(".", vars={"name": "a", "nmae": "typo"})

        def test_deploy(iac_deploy):
            iac_deploy(".", var_files=["extra.tfvars"])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(
        [
            "*test_it.py:2: IacWarning: * declares no variable nmae: the value given is ignored*",
            '    iac_plan(".", vars={"name": "a", "nmae": "typo"})',
            "*test_it.py:5: IacWarning: * declares no variable regoin: the value given is ignored*",
        ]
    )
    # -W error makes them fatal, before anything is planned or deployed.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::pytest_iac.IacWarning"
    )
    result.assert_outcomes(failed=2)
    assert leftovers(iac_home) == []


def test_drift_values_for_undeclared_variables_are_a_warning(pytester: pytest.Pytester) -> None:
    live = pytester.path / "live" / "app"
    live.mkdir(parents=True)
    (live / "main.tf").write_text('terraform {\n  backend "local" {}\n}\n\nvariable "name" {}\n')
    (live / "terraform.tfvars").write_text('name = "app"\nregoin = "eu-west-1"\n')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-m", "drift", "live")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*IacWarning: live/app declares no variable regoin: the value given (terraform.tfvars*"]
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "drift", "-W", "error::pytest_iac.IacWarning", "live"
    )
    result.assert_outcomes(errors=1)
