"""The ledger: records written before apply, removed after destroy, owned by live processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_iac import Sandbox, Settings, Terraform, find_engine
from pytest_iac.ledger import Ledger, Record
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


def ledger_files(home: Path) -> list[Path]:
    return sorted(home.glob("projects/*/ledger/*.json"))


def test_record_is_written_before_apply_and_removed_after_destroy(
    pytester: pytest.Pytester, iac_home: Path
) -> None:
    (pytester.path / "mod").mkdir()
    (pytester.path / "mod" / "main.tf").write_text(MODULE)
    pytester.makeini("[pytest]\n")
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
    (pytester.path / "mod").mkdir()
    (pytester.path / "mod" / "main.tf").write_text(MODULE)
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(
        """
        def test_one(iac_deploy):
            iac_deploy("mod", vars={"token": "a-token"})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--iac-teardown=never")
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


def test_owner_lock_tells_live_processes_from_dead_ones(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(tmp_path / "owner.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    ledger = Ledger(tmp_path / "ledger")
    record = _record(owner=str(tmp_path / "owner.lock"))
    assert ledger.is_live(record)
    holder.kill()  # a SIGKILL: no chance to clean up, the lock goes with the process
    holder.communicate()
    assert not ledger.is_live(record)
    assert not ledger.is_live(_record(owner=str(tmp_path / "never-existed.lock")))


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


def _record(owner: str) -> Record:
    return Record(
        module="m",
        workdir="w",
        module_dir="w/src",
        state="w/src/terraform.tfstate",
        var_files=[],
        engine=["terraform"],
        tf_data_dir="w/tfdata",
        run_id="r",
        worker="main",
        test="t",
        started="now",
        pid=1,
        host="h",
        owner=owner,
    )
