"""The AWS sandbox through a user's eyes: real Terraform, the AWS provider, real moto servers.

AWS provider commands take seconds each, so these tests deploy as little as they can.
"""

from __future__ import annotations

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
