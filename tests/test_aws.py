"""The AWS sandbox through a user's eyes: real Terraform, the AWS provider, real moto servers.

AWS provider commands take seconds each, so these tests deploy as little as they can.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from pytest_iac import aws
from tests.conftest import copy_example, free_port, leftovers

pytest.importorskip("moto.server", reason="pip install 'pytest-iac[moto]'")

FOREIGN_ACCOUNT = "111111111111"
DUMMY = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AWS setting of the outer run (or of the machine) reaches the inner runs."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "MOTO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def foreign_account() -> Iterator[str]:
    """A moto server in a process of its own, answering as account 111111111111: to the
    plugin it is just an AWS endpoint, like the real one."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MOTO_ACCOUNT_ID": FOREIGN_ACCOUNT},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _client("sts", endpoint).get_caller_identity()
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def _client(service: str, endpoint: str) -> object:
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client(service, endpoint_url=endpoint)  # type: ignore[no-any-return]


def _ini(pytester: pytest.Pytester, mirror: Path | None, extra: str = "") -> None:
    # importlib: the copied examples' test modules may already be imported by this run.
    mirrors = f"iac_provider_mirrors = {mirror}" if mirror else ""
    pytester.makeini(
        f"""
        [pytest]
        addopts = -p no:cacheprovider --import-mode=importlib
        {mirrors}
        {extra}
        """
    )


LEAKY_TEST = """
def test_makes_a_bucket_behind_terraforms_back(aws_sandbox, iac_tags):
    s3 = aws_sandbox.client("s3")
    s3.create_bucket(Bucket="made-by-hand")
    s3.put_bucket_tagging(
        Bucket="made-by-hand",
        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in iac_tags.items()]},
    )
"""


def test_moto_sandbox_deploys_inspects_and_finds_a_leak(
    pytester: pytest.Pytester, iac_home: Path, aws_provider_mirror: Path, clean_aws_env: object
) -> None:
    example = copy_example("modules/s3-bucket", pytester.path)
    (example / "test_leaky.py").write_text(LEAKY_TEST)
    _ini(pytester, aws_provider_mirror)

    result = pytester.runpytest("--iac-aws-sandbox=moto", "-v", str(example))

    # The example's checks ran against the bucket Terraform made in moto...
    result.assert_outcomes(passed=5)
    # ... which the sweep does not report: it was destroyed. The hand-made one is.
    result.stdout.fnmatch_lines(
        [
            "*deployments: 1 made, 1 destroyed, 0 kept, 0 failed to destroy, 1 leaked*",
            "leaked: arn:aws:s3:::made-by-hand (tagged pytest-iac:run=*, "
            "pytest-iac:test=t-test-makes-a-buc-*)",
            "pytest-iac: 1 resource(s) tagged pytest-iac:run=* outlived teardown: "
            "the run fails (--iac-fail-on-leak)*",
        ]
    )
    result.stdout.no_fnmatch_line("leaked: arn:aws:s3:::pytest-iac-example-*")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert leftovers(iac_home) == []
    # The moto server was stopped and the environment given back.
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_leaks_can_be_only_reported(pytester: pytest.Pytester, clean_aws_env: object) -> None:
    pytester.makepyfile(test_leaky=LEAKY_TEST)

    result = pytester.runpytest("--iac-aws-sandbox=moto", "--iac-no-fail-on-leak")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["leaked: arn:aws:s3:::made-by-hand *", "*reported only (--iac-no-fail-on-leak)*"]
    )
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        pytest.param(
            "iac_aws_allowed_accounts = 222222222222",
            f"*refuses to deploy: the run's AWS credentials belong to account {FOREIGN_ACCOUNT}"
            " (arn:aws:sts::111111111111:user/moto, through the endpoint http://127.0.0.1:*),"
            " which is not in iac_aws_allowed_accounts (222222222222). Nothing was deployed.*",
            id="not-on-the-list",
        ),
        pytest.param(
            "",
            f"*refuses to deploy: *account {FOREIGN_ACCOUNT} * and no sandbox accounts are "
            f"configured*allow it: iac_aws_allowed_accounts = {FOREIGN_ACCOUNT} (ini)*",
            id="no-list",
        ),
    ],
)
def test_guard_refuses_an_account_not_allowed_before_deploying(
    pytester: pytest.Pytester,
    iac_home: Path,
    aws_provider_mirror: Path,
    clean_aws_env: pytest.MonkeyPatch,
    foreign_account: str,
    allowed: str,
    message: str,
) -> None:
    example = copy_example("modules/s3-bucket", pytester.path)
    _ini(pytester, aws_provider_mirror, allowed)
    for name, value in DUMMY.items():
        clean_aws_env.setenv(name, value)
    clean_aws_env.setenv("AWS_ENDPOINT_URL", foreign_account)

    result = pytester.runpytest(str(example))

    # The module fixture errors for every test that uses it; no traceback through pytest-iac.
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines([message])
    result.stdout.no_fnmatch_line("*pytest_iac/*.py:*")
    assert "terraform apply" not in result.stdout.str()
    s3 = _client("s3", foreign_account)
    assert s3.list_buckets()["Buckets"] == []  # type: ignore[attr-defined]
    assert leftovers(iac_home) == []


PARALLEL_TEST = """
import json
import os

def test_{n}(iac_deploy, iac_name, aws_sandbox):
    stack = iac_deploy(
        "iam-role", vars={{"name": iac_name, "service": "ec2.amazonaws.com"}}
    )
    role = aws_sandbox.client("iam").get_role(RoleName=iac_name)["Role"]
    assert role["Arn"] == stack.outputs["role_arn"]
    # Only this worker's role is in this worker's moto server.
    roles = aws_sandbox.client("iam").list_roles()["Roles"]
    assert [r["RoleName"] for r in roles] == [iac_name]
    with open(os.path.join(os.getcwd(), "seen-{n}.txt"), "w") as report:
        report.write(os.environ["AWS_ENDPOINT_URL"] + " " + iac_name)
"""


def test_xdist_workers_each_get_their_own_moto_server(
    pytester: pytest.Pytester, iac_home: Path, aws_provider_mirror: Path, clean_aws_env: object
) -> None:
    modules = copy_example("modules/iam-role", pytester.path).parent
    for n in ("one", "two"):
        (modules / f"test_{n}.py").write_text(PARALLEL_TEST.format(n=n))
    _ini(pytester, aws_provider_mirror)

    result = pytester.runpytest_subprocess(
        "--iac-aws-sandbox=moto",
        "-n",
        "2",
        "--dist=loadfile",
        str(modules / "test_one.py"),
        str(modules / "test_two.py"),
    )

    result.assert_outcomes(passed=2)
    seen = [(pytester.path / f"seen-{n}.txt").read_text().split() for n in ("one", "two")]
    endpoints, names = {s[0] for s in seen}, {s[1] for s in seen}
    assert len(endpoints) == 2, seen  # a moto server per worker
    assert len(names) == 2, seen
    assert leftovers(iac_home) == []


def test_aws_tests_skip_when_the_provider_cannot_be_installed(
    pytester: pytest.Pytester, clean_aws_env: pytest.MonkeyPatch
) -> None:
    if aws.provider_unavailable([]) is None:
        pytest.skip("registry.terraform.io is reachable here: the provider can be installed")
    clean_aws_env.delenv("PYTEST_IAC_PROVIDER_MIRROR", raising=False)
    example = copy_example("modules/s3-bucket", pytester.path)
    _ini(pytester, None)

    result = pytester.runpytest("--iac-aws-sandbox=moto", "-rs", str(example))

    result.assert_outcomes(skipped=4)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED *the hashicorp/aws provider cannot be installed: no provider mirror "
            "holds it (mirrors checked: none configured) and registry.terraform.io is unreachable*"
            "--iac-provider-mirror=DIR (or PYTEST_IAC_PROVIDER_MIRROR=DIR)*"
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--iac-aws-allowed-accounts=12345,prod"],
            "*iac_aws_allowed_accounts must list 12-digit AWS account ids, not ?'12345', 'prod'?",
        ),
        (["--iac-aws-sandbox=localstack"], "*--iac-aws-sandbox: invalid choice: 'localstack'*"),
    ],
)
def test_bad_aws_settings_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_non_aws_stacks_are_neither_guarded_nor_tagged(
    pytester: pytest.Pytester, iac_home: Path, clean_aws_env: object
) -> None:
    # No AWS settings, no credentials: a module without the AWS provider still deploys.
    copy_example("modules/naming", pytester.path)
    pytester.makepyfile(
        test_label="""
        def test_label(iac_deploy):
            stack = iac_deploy(
                "examples/modules/naming",
                vars={"name": "shop", "environment": "dev", "tags": {"team": "a"}},
            )
            assert "pytest-iac:run" not in str(stack.outputs)
        """
    )
    if shutil.which("terraform") is None:
        pytest.skip("no terraform binary on PATH")
    result = pytester.runpytest("test_label.py")
    result.assert_outcomes(passed=1)
    assert leftovers(iac_home) == []


# --iac-cleanup of AWS deployments: the record says where each went.

BUCKET_MODULE = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws" }
  }
}

resource "aws_s3_bucket" "this" {
  bucket = "pytest-iac-cleanup-guard"
}
"""


def _kept_bucket(pytester: pytest.Pytester, home: Path, *args: str) -> Path:
    """A bucket deployment kept in the ledger on purpose: its record."""
    (pytester.path / "bucket").mkdir()
    (pytester.path / "bucket" / "main.tf").write_text(BUCKET_MODULE)
    pytester.makepyfile(test_keep="def test_keep(iac_deploy):\n    iac_deploy('bucket')\n")
    pytester.runpytest("--iac-teardown=never", *args).assert_outcomes(passed=1)
    [record] = home.glob("projects/*/ledger/*.json")
    return record


def test_cleanup_clears_a_moto_deployment_rather_than_destroy_it(
    pytester: pytest.Pytester,
    iac_home: Path,
    aws_provider_mirror: Path,
    clean_aws_env: pytest.MonkeyPatch,
) -> None:
    _ini(pytester, aws_provider_mirror)
    record = _kept_bucket(pytester, iac_home, "--iac-aws-sandbox=moto")
    assert json.loads(record.read_text())["notes"]["aws"] == "moto"
    # The moto server ended with its run; the environment now holds other credentials.
    for name, value in DUMMY.items():
        clean_aws_env.setenv(name, value)

    result = pytester.runpytest("--iac-cleanup", "--iac-aws-sandbox=account")

    result.stdout.fnmatch_lines(
        [
            "cleared */bucket (test *): it was deployed into a moto sandbox, whose resources "
            "ended with its server",
            "pytest-iac: 0 destroyed, 1 cleared, 0 failed, 0 skipped; 0 left in the ledger",
        ]
    )
    assert result.ret == 0
    assert "terraform destroy" not in result.stdout.str()
    assert not record.exists()
    assert leftovers(iac_home) == []


def test_cleanup_runs_the_account_guard_of_the_deployment(
    pytester: pytest.Pytester,
    iac_home: Path,
    aws_provider_mirror: Path,
    clean_aws_env: pytest.MonkeyPatch,
    foreign_account: str,
    moto_endpoint: str,
) -> None:
    _ini(pytester, aws_provider_mirror, f"iac_aws_allowed_accounts = {FOREIGN_ACCOUNT}")
    for name, value in DUMMY.items():
        clean_aws_env.setenv(name, value)
    clean_aws_env.setenv("AWS_ENDPOINT_URL", foreign_account)
    record = _kept_bucket(pytester, iac_home)
    notes = json.loads(record.read_text())["notes"]
    assert notes == {"aws": "account", "aws_account": FOREIGN_ACCOUNT}

    # The environment now points at another account (moto's default, 123456789012).
    clean_aws_env.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    other = f"--iac-aws-allowed-accounts={FOREIGN_ACCOUNT},123456789012"
    refused = pytester.runpytest("--iac-cleanup", other)
    refused.stdout.fnmatch_lines(
        [
            "REFUSED */bucket (test *): pytest-iac refuses to destroy it: it was recorded in "
            "AWS account 111111111111, but this clean-up's credentials belong to account "
            "123456789012. Nothing was destroyed. Switch the credentials to account "
            "111111111111 and run `pytest --iac-cleanup` again.",
            "*1 refused, 0 skipped; 1 left in the ledger",
        ]
    )
    assert refused.ret == 1
    s3 = _client("s3", foreign_account)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["pytest-iac-cleanup-guard"]  # type: ignore[attr-defined]

    # An account the settings do not allow: the guard the run had refuses too.
    clean_aws_env.setenv("AWS_ENDPOINT_URL", foreign_account)
    guarded = pytester.runpytest("--iac-cleanup", "--iac-aws-allowed-accounts=222222222222")
    guarded.stdout.fnmatch_lines(
        [
            "REFUSED */bucket (test *): pytest-iac refuses to destroy it: this clean-up's AWS "
            f"credentials belong to account {FOREIGN_ACCOUNT} (*), which is not in "
            "iac_aws_allowed_accounts (222222222222). Nothing was destroyed. Point the clean-up "
            "at a sandbox account *, then run `pytest --iac-cleanup` again."
        ]
    )
    assert guarded.ret == 1
    unconfigured = pytester.runpytest("--iac-cleanup", "-o", "iac_aws_allowed_accounts=")
    unconfigured.stdout.fnmatch_lines(
        [
            "REFUSED */bucket (test *): pytest-iac refuses to destroy it: this clean-up's AWS "
            f"credentials belong to account {FOREIGN_ACCOUNT} * and no sandbox accounts are "
            "configured, * Nothing was destroyed. If this is a sandbox account, allow it: *"
            f"--iac-aws-allowed-accounts={FOREIGN_ACCOUNT}, then run `pytest --iac-cleanup` "
            "again; *"
        ]
    )
    clean_aws_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # no answer
    unknown = pytester.runpytest("--iac-cleanup")
    unknown.stdout.fnmatch_lines(
        [
            "REFUSED */bucket (test *): pytest-iac refuses to destroy it: it cannot tell which "
            "AWS account this clean-up's credentials belong to (sts:GetCallerIdentity failed: "
            "*). Nothing was destroyed. Give the clean-up credentials for account "
            f"{FOREIGN_ACCOUNT} (*) and run `pytest --iac-cleanup` again."
        ]
    )
    for refusal in (refused, guarded, unconfigured, unknown):
        assert "deploy" not in refusal.stdout.str().split("refuses to")[1].split("\n")[0]

    clean_aws_env.setenv("AWS_ENDPOINT_URL", foreign_account)
    result = pytester.runpytest("--iac-cleanup")
    result.stdout.fnmatch_lines(["*1 destroyed, 0 failed, 0 skipped; 0 left in the ledger"])
    assert s3.list_buckets()["Buckets"] == []  # type: ignore[attr-defined]


KMS_AND_SECRET = """
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.0" }
  }
}
variable "name" { type = string }
variable "tags" {
  type    = map(string)
  default = {}
}
data "aws_caller_identity" "me" {}
resource "aws_kms_key" "key" {
  deletion_window_in_days = 7
  tags                    = var.tags
}
resource "aws_secretsmanager_secret" "secret" {
  name                    = var.name
  recovery_window_in_days = 7
  tags                    = var.tags
}
output "account" { value = data.aws_caller_identity.me.account_id }
"""

PLAN_THEN_DEPLOY = """
def test_plan_only(iac_plan, iac_name):  # first: nothing else has started moto
    plan = iac_plan(".", vars={"name": iac_name})
    assert plan.creates == ["aws_kms_key.key", "aws_secretsmanager_secret.secret"]


def test_deploy(iac_deploy, iac_name):
    stack = iac_deploy(".", vars={"name": iac_name})
    assert stack.resources == ["aws_kms_key.key", "aws_secretsmanager_secret.secret"]
    assert stack.data_sources == ["data.aws_caller_identity.me"]
"""


def test_plan_only_tests_start_moto_and_scheduled_deletions_are_no_leak(
    pytester: pytest.Pytester, iac_home: Path, aws_provider_mirror: Path, clean_aws_env: object
) -> None:
    pytester.path.joinpath("main.tf").write_text(KMS_AND_SECRET)
    pytester.makepyfile(test_kms=PLAN_THEN_DEPLOY)
    _ini(pytester, aws_provider_mirror)

    result = pytester.runpytest("--iac-aws-sandbox=moto", "-p", "no:randomly")

    result.assert_outcomes(passed=2)
    # The destroy left the key and the secret waiting out their deletion windows, still
    # tagged: not leaks.
    result.stdout.fnmatch_lines(
        ["deployments: 1 made, 1 destroyed, 0 kept, 0 failed to destroy, 0 leaked"]
    )
    assert result.ret == pytest.ExitCode.OK
    assert leftovers(iac_home) == []
