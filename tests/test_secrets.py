"""A planted canary secret appears in no artifact of a run: terminal, logs, JUnit XML, ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_iac.redact import Redactor
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
