"""pytest glue for the AWS sandbox: options, the `aws_sandbox` fixture, the leak sweep. Thin.

The work is done by `pytest_iac.aws.AwsSandbox`; this module only reads settings, installs
its hook in the run, and reports.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_iac.aws import (
    SANDBOX_KINDS,
    AwsError,
    AwsSandbox,
    AwsSettings,
    module_uses_aws,
    provider_unavailable,
)
from pytest_iac.fixtures import RUN_KEY, deploys

AWS_KEY = pytest.StashKey[AwsSandbox]()
_WORKER_LEAKS_KEY = pytest.StashKey[list[str]]()
_MOTO_SERVER = ("moto", "flask", "flask_cors")  # what `moto.server` imports (moto[server])


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iac")
    group.addoption(
        "--iac-aws-sandbox",
        choices=SANDBOX_KINDS,
        help="where AWS stacks deploy: 'account' (default: the account the iac_aws_* settings "
        "or the AWS_* environment point at) or 'moto' (a local moto server per process, "
        "dummy credentials; needs pytest-iac[moto]) (ini iac_aws_sandbox)",
    )
    group.addoption("--iac-aws-profile", help="AWS profile of the sandbox (ini iac_aws_profile)")
    group.addoption("--iac-aws-region", help="AWS region of the sandbox (ini iac_aws_region)")
    group.addoption(
        "--iac-aws-role-arn",
        help="IAM role assumed for the sandbox, session named after the run (ini iac_aws_role_arn)",
    )
    group.addoption(
        "--iac-aws-allowed-accounts",
        metavar="IDS",
        help="comma-separated AWS account ids the run may deploy into; any other account "
        "stops the run before it deploys (ini iac_aws_allowed_accounts)",
    )
    group.addoption(
        "--iac-fail-on-leak",
        action="store_const",
        const=True,
        dest="iac_fail_on_leak",
        help="fail the run when resources tagged with its run id outlive teardown "
        "(the default; ini iac_fail_on_leak)",
    )
    group.addoption(
        "--iac-no-fail-on-leak",
        action="store_const",
        const=False,
        dest="iac_fail_on_leak",
        help="only report resources that outlive teardown",
    )
    parser.addini("iac_aws_sandbox", "where AWS stacks deploy: account or moto")
    parser.addini("iac_aws_profile", "AWS profile of the sandbox")
    parser.addini("iac_aws_region", "AWS region of the sandbox")
    parser.addini("iac_aws_role_arn", "IAM role assumed for the sandbox")
    parser.addini(
        "iac_aws_allowed_accounts", "AWS account ids the run may deploy into", type="args"
    )
    parser.addini("iac_fail_on_leak", "fail the run on leaked resources", type="bool", default=True)


def _settings(config: pytest.Config) -> AwsSettings:
    def value(name: str) -> str | None:
        found = config.getoption(name) or config.getini(name) or None
        return str(found) if found is not None else None

    accounts = config.getoption("iac_aws_allowed_accounts")
    allowed = accounts.split(",") if accounts else config.getini("iac_aws_allowed_accounts")
    fail_on_leak = config.getoption("iac_fail_on_leak")
    if fail_on_leak is None:
        fail_on_leak = bool(config.getini("iac_fail_on_leak"))
    sandbox = value("iac_aws_sandbox") or "account"
    try:
        settings = AwsSettings(
            profile=value("iac_aws_profile"),
            region=value("iac_aws_region"),
            role_arn=value("iac_aws_role_arn"),
            allowed_accounts=tuple(a.strip() for a in allowed if a.strip()),
            sandbox=sandbox,
            fail_on_leak=fail_on_leak,
        )
    except AwsError as error:
        raise pytest.UsageError(str(error)) from None
    # Found, not imported: moto's import takes about a second, paid only when a test uses it.
    if settings.sandbox == "moto" and not all(map(importlib.util.find_spec, _MOTO_SERVER)):
        raise pytest.UsageError(
            "iac_aws_sandbox=moto needs moto's server: pip install 'pytest-iac[moto]'"
        )
    return settings


@pytest.hookimpl(trylast=True)  # after the core plugin has made the run
def pytest_configure(config: pytest.Config) -> None:
    run = config.stash[RUN_KEY]
    aws = AwsSandbox(_settings(config), run.run_id, run.worker)
    config.stash[AWS_KEY] = aws
    config.stash[_WORKER_LEAKS_KEY] = []
    run.hooks.insert(0, aws.hook)  # before the ledger records what will be applied
    run.guards.append(aws.cleanup_guard)  # --iac-cleanup asks it again before a destroy
    run.share_sessions = not aws.is_moto  # a moto server per worker: nothing to share
    run.settings.env = aws.terraform_env(base=run.settings.env)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistLeaks(), "iac-aws-xdist")


def _needs_aws(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    if "aws_sandbox" in names:
        return True
    if item.get_closest_marker("sandbox") is None and "iac_plan" not in names:
        return False
    return module_uses_aws(Path(item.path).parent)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before an AWS test's fixtures deploy: is the provider installable? Start moto."""
    if not _needs_aws(item):
        return
    config = item.config
    if deploys(item) or "iac_plan" in getattr(item, "fixturenames", ()):
        mirrors = config.stash[RUN_KEY].settings.provider_mirrors
        why = _provider_check(config, tuple(mirrors))
        if why:
            pytest.skip(why)
    config.stash[AWS_KEY].start()


_PROVIDER_KEY = pytest.StashKey[str]()


def _provider_check(config: pytest.Config, mirrors: tuple[Path, ...]) -> str:
    if _PROVIDER_KEY not in config.stash:
        config.stash[_PROVIDER_KEY] = provider_unavailable(mirrors) or ""
    return config.stash[_PROVIDER_KEY]


@pytest.fixture(scope="session")
def aws_sandbox(request: pytest.FixtureRequest) -> Any:
    """A `boto3.Session` on the sandbox: the account (checked against
    iac_aws_allowed_accounts) and region Terraform deploys into, or the moto server."""
    aws = request.config.stash[AWS_KEY]
    try:
        aws.check_account()
    except AwsError as error:
        pytest.fail(str(error), pytrace=False)
    return aws.session


@pytest.fixture
def iac_tags(request: pytest.FixtureRequest) -> dict[str, str]:
    """The tags this test's deployments get: `pytest-iac:run` (the sweep's key) and
    `pytest-iac:test`. Tag what a test creates itself with them, and the sweep finds it."""
    run = request.config.stash[RUN_KEY]
    aws = request.config.stash[AWS_KEY]
    return aws.tags(run.name(request.node.name, request.node.nodeid))


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None]:
    # First of all sessionfinish hooks: the run's tally (sent to the xdist controller and
    # shown in the summary) is made from run.leaked by the core plugin's hook.
    config = session.config
    aws = config.stash[AWS_KEY]
    run = config.stash[RUN_KEY]
    if aws.used and exitstatus != pytest.ExitCode.INTERRUPTED:
        kept = [stack.workdir.name for stack in (*run.kept, *run.failed, *run.handed_over)]
        run.leaked.extend(str(leak) for leak in aws.sweep(kept))
    result = yield
    leaks = len(run.leaked) + len(config.stash[_WORKER_LEAKS_KEY])
    if leaks and aws.settings.fail_on_leak and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    return result


@pytest.hookimpl(trylast=True)  # after the core plugin listed the leaks
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    aws = config.stash.get(AWS_KEY, None)
    if aws is None:
        return
    leaks = len(config.stash[RUN_KEY].leaked) + len(config.stash[_WORKER_LEAKS_KEY])
    if leaks:
        verdict = (
            "the run fails (--iac-fail-on-leak)"
            if aws.settings.fail_on_leak
            else "reported only (--iac-no-fail-on-leak)"
        )
        terminalreporter.write_line(
            f"pytest-iac: {leaks} resource(s) tagged pytest-iac:run={aws.run_id} outlived "
            f"teardown: {verdict}.",
            red=True,
        )
        terminalreporter.write_line(
            "Delete them by hand; a resource a test made itself should be deleted by the test.",
            red=True,
        )


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    aws = config.stash.get(AWS_KEY, None)
    if aws is not None:
        aws.close()


class _XdistLeaks:
    """Registered only with pytest-xdist: the controller counts the workers' leaks."""

    @staticmethod
    def pytest_testnodedown(node: Any, error: object) -> None:
        tally = (getattr(node, "workeroutput", None) or {}).get("iac_tally") or {}
        node.config.stash[_WORKER_LEAKS_KEY].extend(tally.get("leaked", []))
