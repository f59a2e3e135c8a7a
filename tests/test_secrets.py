"""A planted canary secret appears in no artifact of a run: terminal, logs, JUnit XML, ledger."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_iac.redact import SECRETS, Redactor, redact_value, remember_plan
from pytest_iac.tfconfig import read_module
from tests.conftest import leftovers

CANARY = "canary-7f3e9b1d-secret"
TOKEN = "canary-token-2c41a9e0"  # declared sensitive on one line

# Declarations a line-based reader misses: a heredoc and a comment holding `}` before
# `sensitive`, and a whole block on one line.
MODULE = """
variable "db_password" {
  description = <<-EOT
    The password. A brace } in a heredoc does not end the block.
  EOT
  /* nor does one } in a comment */
  type      = string
  sensitive = true

  validation {
    # braces in a string: "{" must not confuse the block scan
    condition     = length(var.db_password) > 8
    error_message = "The password needs more than 8 characters {like this}."
  }
}

variable "name" {
  type = string
}

variable "api_token" { sensitive = true }

resource "terraform_data" "db" {
  input = { name = var.name, password = var.db_password, token = var.api_token }
}

output "password" {
  value     = var.db_password
  sensitive = true
}

output "name" {
  value = var.name
}
"""


def test_canary_secret_appears_in_no_artifact(pytester: pytest.Pytester, iac_home: Path) -> None:
    module = pytester.path / "db"
    module.mkdir()
    (module / "main.tf").write_text(MODULE)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        f"""
        import logging

        SECRET = {CANARY!r}
        TOKEN = {TOKEN!r}
        VARS = {{"db_password": SECRET, "api_token": TOKEN}}

        def test_assertion_on_a_sensitive_output(iac_deploy):
            stack = iac_deploy("db", vars={{**VARS, "name": "ok"}})
            assert stack.outputs["password"] == "something else"

        def test_outputs_in_a_failure_message(iac_deploy):
            stack = iac_deploy("db", vars={{**VARS, "name": "ok"}})
            assert not stack.outputs, stack.outputs

        def test_terraform_quotes_the_var_file(iac_deploy):
            # name gets a list: terraform's error quotes the var file, secrets and all
            iac_deploy("db", vars={{**VARS, "name": [SECRET, TOKEN]}})
        """
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--log-level=INFO", "-rA", f"--junitxml={junit}", "-vv"
    )
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*<sensitive> == <sensitive>*",
            "*Outputs({*'password': '<sensitive>'*})*",
            "*Invalid value for input variable*",
            '*   5:     "<sensitive>",',
            '*   6:     "<sensitive>"',
        ]
    )
    assert "terraform apply" in result.stdout.str()  # terraform's output was shown
    artifacts = {
        "stdout": result.stdout.str(),
        "stderr": result.stderr.str(),
        "junit": junit.read_text(),
    }
    # Everything the run left under pytest-iac's home: ledger, run directories.
    for path in iac_home.rglob("*"):
        if path.is_file():
            artifacts[str(path)] = path.read_text(errors="replace")
    assert [name for name, text in artifacts.items() if CANARY in text or TOKEN in text] == []
    assert leftovers(iac_home) == []


def test_sensitive_variables_found_in_tf_and_tf_json(tmp_path: Path) -> None:
    (tmp_path / "a.tf").write_text(
        MODULE + 'variable "token" {\n  # sensitive = true in a comment only\n}\n'
    )
    (tmp_path / "b.tf.json").write_text(
        '{"variable": {"api_key": {"sensitive": true}, "region": {"default": "x"}}}'
    )
    assert read_module(tmp_path).sensitive_variables == {"db_password", "api_token", "api_key"}


def test_redactor_masks_every_form_of_a_value() -> None:
    redact = Redactor()
    redact.add(['s3cr"et-value', 's3cr\\"et-value', "ab"])
    assert redact('"password": "s3cr\\"et-value",') == '"password": "<sensitive>",'
    assert redact('s3cr"et-value and ab') == "<sensitive> and ab"  # too short to mask: ab


# Drift runs: canaries planted through every path a live directory's secrets take.
CANARY_DEFAULT = "canary-default-5b8e21"  # the default of a sensitive variable
CANARY_TFVARS = "canary-tfvars-c41d07"  # a sensitive variable's value in terraform.tfvars
CANARY_MARKER = "canary-marker-9ae3f6"  # given by @pytest.mark.drift(vars=...)
CANARY_MARKED = "canary-marked-07d2bb"  # a value Terraform marks sensitive (an output's)
CANARY_BACKEND = "canary-backend-e6f190"  # --iac-backend-config password=...

LIVE = """
terraform {
  backend "local" {}
}

variable "token" {
  type      = string
  sensitive = true
  default   = "%(token)s"
}

variable "api_key" {
  type      = string
  sensitive = true
}

variable "marker_secret" {
  type      = string
  sensitive = true
  default   = "unset"
}

# What the code does with them, Terraform does not mark sensitive.
resource "terraform_data" "token" {
  input = nonsensitive(var.token)
}

resource "terraform_data" "api" {
  input = { key = nonsensitive(var.api_key), note = "key ${nonsensitive(var.api_key)}" }
}

resource "terraform_data" "marker" {
  input = nonsensitive(var.marker_secret)
}

resource "terraform_data" "literal" {
  input = "%(marked)s"
}

output "marked" {
  value     = "%(marked)s"
  sensitive = true
}
"""

POLICY = """
import os

import pytest


# From the environment, as CI gives secrets (pytest quotes a failing test's source).
@pytest.mark.drift("live/app", vars={"marker_secret": os.environ["MARKER_SECRET"]})
def test_policy(iac_drift):
    assert iac_drift.is_empty, iac_drift
"""


def artifacts_of(result: pytest.RunResult, files: list[Path], iac_home: Path) -> dict[str, str]:
    """Everything a run shows or leaves: terminal, reports, pytest-iac's home."""
    found = {"stdout": result.stdout.str(), "stderr": result.stderr.str()}
    for path in [*files, *iac_home.rglob("*")]:
        if path.is_file():
            found[str(path)] = path.read_text(errors="replace")
    return found


@pytest.fixture
def live_app(pytester: pytest.Pytester) -> Path:
    """live/app applied with other values, then given the canaries: every one is drift."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("needs the terraform binary to deploy the live directory")
    live = pytester.path / "live" / "app"
    live.mkdir(parents=True)
    (live / "main.tf").write_text(LIVE % {"token": "old-token", "marked": "old-marked"})
    env = {**os.environ, "TF_DATA_DIR": str(pytester.path / "deploy-tfdata")}
    for args in (["init"], ["apply", "-auto-approve", "-var", "api_key=old-key"]):
        subprocess.run(
            [terraform, *args, "-no-color"], cwd=live, env=env, check=True, capture_output=True
        )
    (live / "main.tf").write_text(LIVE % {"token": CANARY_DEFAULT, "marked": CANARY_MARKED})
    (live / "terraform.tfvars").write_text(f'api_key = "{CANARY_TFVARS}"\n')
    return live


def test_drift_canaries_appear_in_no_artifact(
    pytester: pytest.Pytester, live_app: Path, iac_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_policy=POLICY)
    monkeypatch.setenv("MARKER_SECRET", CANARY_MARKER)
    summary = pytester.path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    files = [pytester.path / name for name in ("junit.xml", "drift.json", "drift.md")]
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "drift", "-rA", "--log-cli-level=INFO",
        f"--junitxml={files[0]}", f"--iac-report-json={files[1]}", f"--iac-report-md={files[2]}",
        "live", "test_policy.py",
    )  # fmt: skip
    result.assert_outcomes(failed=2)
    # The changes are shown, their secret values are not.
    result.stdout.fnmatch_lines(
        ["drift in live/app: the plan is not empty*", "*terraform_data.token *update*input*"]
    )
    assert "<sensitive>" in result.stdout.str()
    leaks = {
        canary: [name for name, text in artifacts_of(result, [*files, summary], iac_home).items()
                 if canary in text]
        for canary in (CANARY_DEFAULT, CANARY_TFVARS, CANARY_MARKER, CANARY_MARKED)
    }  # fmt: skip
    assert leaks == {canary: [] for canary in leaks}


def test_backend_config_values_appear_in_no_artifact(
    pytester: pytest.Pytester, live_app: Path, iac_home: Path
) -> None:
    # The local backend takes no password: terraform's error quotes the settings file.
    files = [pytester.path / name for name in ("junit.xml", "drift.json", "drift.md")]
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "drift", "-rA", "--log-cli-level=INFO",
        f"--iac-backend-config=password={CANARY_BACKEND}",
        f"--junitxml={files[0]}", f"--iac-report-json={files[1]}", f"--iac-report-md={files[2]}",
        "live",
    )  # fmt: skip
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*could not check live/app for drift*", "*password*"])
    leaks = [
        name
        for name, text in artifacts_of(result, files, iac_home).items()
        if CANARY_BACKEND in text
    ]
    assert leaks == []


BAD_DEFAULT = """
terraform {
  backend "local" {}
}

variable "pin" {
  type      = number
  sensitive = true
  default   = "%s"
}
"""

BAD_TFVARS = """
terraform {
  backend "local" {}
}

variable "api_key" {
  type      = string
  sensitive = true
}

variable "name" {
  type = string
}

resource "terraform_data" "x" {
  input = var.name
}
"""


def test_drift_errors_quoting_a_default_or_tfvars_mask_them(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    # Terraform's errors quote the lines: an invalid default, a var file's wrong value.
    bad_default, bad_tfvars = pytester.path / "live/bad-default", pytester.path / "live/bad-tfvars"
    bad_default.mkdir(parents=True)
    (bad_default / "main.tf").write_text(BAD_DEFAULT % CANARY_DEFAULT)
    bad_tfvars.mkdir(parents=True)
    (bad_tfvars / "main.tf").write_text(BAD_TFVARS)
    (bad_tfvars / "terraform.tfvars").write_text(
        f'api_key = "{CANARY_TFVARS}"\nname    = ["{CANARY_TFVARS}", "x"]\n'
    )
    files = [pytester.path / name for name in ("junit.xml", "drift.json", "drift.md")]
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "drift", "-rA", "--log-cli-level=INFO",
        f"--junitxml={files[0]}", f"--iac-report-json={files[1]}", f"--iac-report-md={files[2]}",
        "live",
    )  # fmt: skip
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ['*default   = "<sensitive>"*', '*: name    = ?"<sensitive>", "x"?']
    )
    leaks = {
        canary: [name for name, text in artifacts_of(result, files, iac_home).items()
                 if canary in text]
        for canary in (CANARY_DEFAULT, CANARY_TFVARS)
    }  # fmt: skip
    assert leaks == {canary: [] for canary in leaks}


def test_sandbox_masks_var_file_secrets_wherever_they_show(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    module = pytester.path / "db"
    module.mkdir()
    (module / "main.tf").write_text(MODULE)
    # The name is wrong (a list): terraform's error quotes the var file, secret and all.
    (pytester.path / "secrets.tfvars").write_text(
        f'db_password = "{CANARY}"\napi_token   = "{TOKEN}"\nname        = ["{CANARY}", "x"]\n'
    )
    pytester.makepyfile(
        """
        def test_deploy(iac_deploy):
            iac_deploy("db", var_files=["secrets.tfvars"])
        """
    )
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--log-level=INFO", "-rA", f"--junitxml={junit}"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Invalid value for input variable*"])
    leaks = [
        name for name, text in artifacts_of(result, [junit], iac_home).items() if CANARY in text
    ]
    assert leaks == []
    assert leftovers(iac_home) == []


def test_what_a_plan_marks_sensitive_is_masked_in_report_values() -> None:
    plan = {
        "configuration": {"root_module": {"variables": {"token": {"sensitive": True}, "x": {}}}},
        "variables": {"token": {"value": "tok-abc123"}, "x": {"value": "plain-name"}},
        "resource_changes": [
            {
                "change": {
                    "before": {"a": "before-secret", "n": 424242},
                    "before_sensitive": {"a": True},
                    "after": {"list": ["shown", "after-secret"]},
                    "after_sensitive": {"list": [False, True]},
                }
            }
        ],
        "output_changes": {"o": {"after": "output-secret", "after_sensitive": True}},
        "prior_state": {
            "values": {
                "outputs": {"p": {"sensitive": True, "value": 987654}},
                "root_module": {
                    "child_modules": [
                        {
                            "resources": [
                                {"values": {"k": "state-secret"}, "sensitive_values": {"k": True}}
                            ]
                        }
                    ]
                },
            }
        },
    }
    text = "tok-abc123 before-secret after-secret output-secret state-secret plain-name shown"
    try:
        remember_plan(plan)
        masked = redact_value({"text": text, "number": 987654, "other": 424242, "tok-abc123": 1})
    finally:
        SECRETS.clear()
    assert masked == {
        "text": " ".join(["<sensitive>"] * 5 + ["plain-name", "shown"]),
        "number": "<sensitive>",  # a number that is a secret, as JSON would show it
        "other": 424242,
        "<sensitive>": 1,
    }
