"""The ledger: records written before apply, removed after destroy, owned by live processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_iac import Sandbox, Settings, Terraform, find_engine
from pytest_iac.ledger import MARKER, Ledger, Record
from pytest_iac.run import IacRun, find_project
from tests.conftest import leftovers

MODULE = """
variable "token" {
  type      = string
  sensitive = true
}

resource "terraform_data" "one" {
  input = sha256(var.token)
}
"""


def _project(pytester: pytest.Pytester) -> None:
    """A user's project: the module in mod/, a pytest ini file at its root."""
    (pytester.path / "mod").mkdir()
    (pytester.path / "mod" / "main.tf").write_text(MODULE)
    pytester.makeini("[pytest]\n")


def ledger_files(home: Path) -> list[Path]:
    return sorted(home.glob("projects/*/ledger/*.json"))


def test_record_is_written_before_apply_and_removed_after_destroy(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    _project(pytester)
    # The test looks at the ledger while its deployment exists.
    pytester.makepyfile(
        f"""
        import json, os, pathlib, stat

        def test_recorded(iac_deploy):
            stack = iac_deploy("mod", vars={{"token": "hunter2-value"}})
            [path] = pathlib.Path({str(iac_home)!r}).glob("projects/*/ledger/*.json")
            record = json.loads(path.read_text())
            assert "hunter2-value" not in path.read_text()
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert record["module"].endswith("mod")
            assert record["module_dir"] == str(stack.module_dir)
            assert record["state"] == str(stack.module_dir / "terraform.tfstate")
            assert record["var_files"][-1].endswith("pytest-iac.tfvars.json")
            assert record["test"].endswith("::test_recorded")
            assert record["pid"] == os.getpid()
            assert record["destroy_command"] == stack.destroy_command()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert ledger_files(iac_home) == []
    assert leftovers(iac_home) == []


def test_teardown_never_keeps_deployments_in_the_ledger_until_cleanup(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    _project(pytester)
    pytester.makepyfile(
        """
        def test_one(iac_deploy):
            iac_deploy("mod", vars={"token": "a-token"})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--iac-teardown=never", "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*pytest-iac: deployments kept, left in the ledger*",
            "deployments: 1 made, 0 destroyed, 1 kept, 0 failed to destroy, 0 leaked",
            "kept: *mod in *",
            "  destroy: cd * destroy -auto-approve *",
            "1 deployment(s) of this run are in the ledger*`pytest --iac-cleanup` destroys them*",
        ]
    )
    [path] = ledger_files(iac_home)
    assert json.loads(path.read_text())["kept"] == "--iac-teardown=never"

    cleanup = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--iac-cleanup")
    assert cleanup.ret == 0
    cleanup.stdout.fnmatch_lines(["*destroying *kept: --iac-teardown=never)", "  destroyed"])
    assert ledger_files(iac_home) == []
    assert leftovers(iac_home) == []


def test_cleanup_of_an_empty_ledger_says_so(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--iac-cleanup")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["pytest-iac: the ledger is empty (*): nothing to clean up"])


def _unwritable(pytester: pytest.Pytester, where: str) -> Path:
    if where == "under-a-file":
        (pytester.path / "a-file").write_text("")
        return pytester.path / "a-file" / "home"
    read_only = pytester.path / "read-only"
    read_only.mkdir(mode=0o555)
    if os.access(read_only, os.W_OK):  # root: permissions do not stop it; /sys does
        read_only = Path("/sys")
    return read_only / "pytest-iac"


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_unwritable_home_is_one_usage_error_only_when_needed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    _project(pytester)
    pytester.makepyfile(
        test_plain="def test_plain():\n    pass\n",
        test_deploys="def test_deploys(iac_deploy):\n    iac_deploy('mod', vars={'token': 'a'})\n",
    )
    home = _unwritable(pytester, where)
    monkeypatch.setenv("PYTEST_IAC_HOME", str(home))
    message = (
        f"ERROR: pytest-iac cannot write its home: {home}*: *. It keeps working directories, "
        f"state and the ledger there (PYTEST_IAC_HOME is '{home}'); set PYTEST_IAC_HOME to "
        "a directory you can write."
    )

    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_plain.py")
    plain.assert_outcomes(passed=1)  # deploys nothing: needs no home

    for args in ([], ["--iac-cleanup"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([message])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
    # Under xdist a worker cannot stop the run: the test that needs the home errors with it.
    spread = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    spread.assert_outcomes(passed=1, failed=1)
    spread.stdout.fnmatch_lines([f"E   *HomeError: {message.removeprefix('ERROR: ')}"])
    assert "INTERNALERROR" not in spread.stdout.str() + spread.stderr.str()
    assert not home.exists()


def test_cleanup_finds_the_project_from_a_subdirectory_and_however_options_are_spelled(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, iac_home: Path
) -> None:
    _project(pytester)
    (pytester.path / "sub").mkdir()
    (pytester.path / "sub" / "test_keep.py").write_text(
        "def test_keep(iac_deploy):\n    iac_deploy('../mod', vars={'token': 'abc'})\n"
    )
    mirror = pytester.path.parent / f"{pytester.path.name}-mirror"  # outside the project
    mirror.mkdir()
    kept = pytester.runpytest("-p", "no:cacheprovider", "--iac-teardown=never")
    kept.assert_outcomes(passed=1)

    # From a sub-directory, with an option's value in the space form (pytest takes it for a
    # path, and it moves pytest's rootdir to the mirror).
    monkeypatch.chdir(pytester.path / "sub")
    option = ["--iac-provider-mirror", str(mirror)]
    dry = pytester.runpytest("-p", "no:cacheprovider", *option, "--iac-cleanup-dry-run")
    assert f"rootdir: {pytester.path}\n" not in dry.stdout.str()  # pytest's moved away
    dry.stdout.fnmatch_lines(["would destroy */mod (test *test_keep*"])
    assert dry.ret == 0

    result = pytester.runpytest("-p", "no:cacheprovider", *option, "--iac-cleanup")
    result.stdout.fnmatch_lines(["*1 destroyed, 0 failed, 0 skipped; 0 left in the ledger"])
    assert ledger_files(iac_home) == []
    assert leftovers(iac_home) == []


def test_project_without_ini_file_is_its_git_work_tree(tmp_path: Path) -> None:
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    assert find_project(None, tmp_path / "repo" / "a" / "b") == (tmp_path / "repo").resolve()
    assert find_project(None, tmp_path) == tmp_path.resolve()  # no git: where it started
    ini = tmp_path / "repo" / "a" / "tox.ini"
    assert find_project(ini, tmp_path / "repo" / "a" / "b") == ini.parent.resolve()


def test_dry_run_mentions_other_projects_ledgers(pytester: pytest.Pytester, tmp_path: Path) -> None:
    other = tmp_path / "other-project"
    (other / "mod").mkdir(parents=True)
    (other / "mod" / "main.tf").write_text(MODULE)
    run = IacRun(project=other, run_id="r", settings=Settings())
    run.ledger.hook("before-apply", run.sandbox.stack(other / "mod", "elsewhere"))
    run.close()
    pytester.makeini("[pytest]\n")

    result = pytester.runpytest("-p", "no:cacheprovider", "--iac-cleanup-dry-run")

    result.stdout.fnmatch_lines(
        [
            "pytest-iac: the ledger is empty (*): nothing to clean up",
            "pytest-iac: another project's ledger holds 1 record(s): */projects/other-project-*"
            "/ledger (e.g. */other-project/mod); run the clean-up from that project",
        ]
    )
    assert result.ret == 0


def test_marker_lock_tells_live_processes_from_dead_ones(tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    workdir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(workdir / MARKER),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    ledger = Ledger(tmp_path / "ledger")
    record = _record(workdir=str(workdir))
    assert ledger.is_live(record)
    holder.kill()  # a SIGKILL: no chance to clean up, the lock goes with the process
    holder.communicate()
    assert not ledger.is_live(record)
    assert not ledger.is_live(_record(workdir=str(tmp_path / "never-existed")))


def test_records_of_concurrent_writers_never_collide(tmp_path: Path) -> None:
    # Two processes (or xdist workers) of one run, deploying same-named stacks in one second.
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "main.tf").write_text(MODULE)
    terraform = Terraform(find_engine(), Settings(), tmp_path / "config")
    ledgers = [Ledger(tmp_path / "ledger", run_id="r", worker="main") for _ in range(2)]
    for n, ledger in enumerate(ledgers):
        stack = Sandbox(terraform, tmp_path / f"process-{n}").stack(tmp_path / "mod", "same")
        ledger.hook("before-apply", stack)
    entries = ledgers[0].entries()
    assert len(entries) == 2
    assert len({e.path for e in entries}) == 2
    assert {Path(e.record.workdir).name for e in entries} == {"same"}
    assert not list((tmp_path / "ledger").glob(".*.tmp"))
    for ledger in ledgers:
        ledger.close()


def test_a_plan_with_other_variables_leaves_the_destroy_command_the_applied_ones(
    tmp_path: Path,
) -> None:
    # The ledger's command destroys with the deployment's var files: after a kill, a what-if
    # plan's variables (another region, say) must not be what --iac-cleanup destroys with.
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "main.tf").write_text(MODULE)
    terraform = Terraform(find_engine(), Settings(), tmp_path / "config")
    sandbox = Sandbox(terraform, tmp_path / "sandboxes")
    with sandbox.deploy(tmp_path / "mod", "what-if", vars={"token": "applied"}) as stack:
        stack.plan(vars={"token": "planned"})
        texts = [path.read_text() for path in stack.var_file_paths]
        assert "applied" in texts[-1]
        assert not any("planned" in text for text in texts)
    assert leftovers(tmp_path / "sandboxes") == []
    terraform.close()


def _record(**fields: Any) -> Record:
    values: dict[str, Any] = {
        "module": "m",
        "workdir": "w",
        "module_dir": "w/src",
        "state": "w/src/terraform.tfstate",
        "var_files": [],
        "engine": ["terraform"],
        "tf_data_dir": "w/tfdata",
        "run_id": "r",
        "worker": "main",
        "test": "t",
        "started": "now",
        "pid": 1,
        "host": "h",
        "marker": "0123",
    }
    return Record(**{**values, **fields})
