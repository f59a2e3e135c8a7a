"""`--iac-cleanup` acts only inside what pytest-iac made.

A ledger record is a claim. Each test makes a real deployment (kept with
`--iac-teardown=never`, so it is in the ledger), then forges, damages or busies its record
the way a stale file, a hand edit, a crash or a still-running terraform would, and shows
what the user sees: the record named with the reason and the manual command, kept, a
non-zero exit, and nothing touched outside the project's working directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_iac.engine import Settings
from pytest_iac.run import IacRun, find_project, project_dir, remove_ended_runs
from tests.conftest import leftovers
from tests.test_faults import wait_for

MODULE = """
variable "hold" {
  type    = string
  default = ""
}

resource "terraform_data" "one" {
  input = "x"
}

# With `hold` set, its apply waits until that file exists: a terraform still running.
resource "terraform_data" "held" {
  count = var.hold == "" ? 0 : 1

  provisioner "local-exec" {
    command = "touch ${var.hold}.started; while [ ! -e ${var.hold} ]; do sleep 0.1; done"
  }
}
"""


def records(home: Path) -> list[Path]:
    return sorted(home.glob("projects/*/ledger/*.json"))


def cleanup(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--iac-cleanup", *args)


@pytest.fixture
def terraform() -> str:
    """The terraform binary, run by hand in these tests as a user (or a stray process) would."""
    found = shutil.which("terraform")
    if found is None:
        pytest.skip("no terraform binary on PATH")
    return found


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    (pytester.path / "mod").mkdir()
    (pytester.path / "mod" / "main.tf").write_text(MODULE)
    pytester.makeini("[pytest]\n")
    return pytester.path


@pytest.fixture
def kept(pytester: pytest.Pytester, project: Path, iac_home: Path) -> Path:
    """A real deployment left in the ledger on purpose: its record."""
    pytester.makepyfile(test_keep="def test_keep(iac_deploy):\n    iac_deploy('mod')\n")
    pytester.runpytest("-p", "no:cacheprovider", "--iac-teardown=never").assert_outcomes(passed=1)
    [record] = records(iac_home)
    assert leftovers(iac_home)  # its state holds a resource
    return record


def forge(record: Path, **changes: Any) -> Path:
    """A copy of `record` with `changes`, named to be cleaned up first (newest)."""
    data = {**json.loads(record.read_text()), **changes}
    forged = record.with_name("zz-forged.json")
    forged.write_text(json.dumps(data))
    return forged


def assert_refused_and_real_one_destroyed(result: pytest.RunResult, home: Path) -> None:
    result.stdout.fnmatch_lines(
        [
            "*The record is kept. If its deployment exists, destroy it by hand*",
            "*then remove the record: rm */zz-forged.json",
        ]
    )
    result.stdout.fnmatch_lines(
        ["pytest-iac: 1 destroyed, 0 failed, 1 refused, 0 skipped; 1 left in the ledger"]
    )
    assert result.ret == 1
    assert [p.name for p in records(home)] == ["zz-forged.json"]  # kept, named
    assert leftovers(home) == []  # the genuine record's deployment was destroyed


def test_a_deployment_whose_new_code_was_never_initialised_is_destroyed(
    pytester: pytest.Pytester, kept: Path, iac_home: Path
) -> None:
    """A run killed between an upgrade test's new code and its init: the copy holds code
    its data directory was not initialised for (here, a module call more). The destroy says
    to run init; the clean-up does, in that working directory only, and destroys."""
    record = json.loads(kept.read_text())
    module_dir = Path(record["module_dir"])
    (module_dir / "extra").mkdir()
    (module_dir / "extra" / "main.tf").write_text("")
    (module_dir / "upgrade.tf").write_text('module "extra" {\n  source = "./extra"\n}\n')
    result = cleanup(pytester)
    result.stdout.fnmatch_lines(
        [
            "*destroy needs init first (code changed after its last init): init, then destroy",
            "  destroyed",
            "pytest-iac: 1 destroyed, 0 failed, 0 skipped; 0 left in the ledger",
        ]
    )
    assert result.ret == 0
    assert records(iac_home) == []
    assert leftovers(iac_home) == []


def test_record_pointing_at_a_user_directory_deletes_nothing(
    pytester: pytest.Pytester, kept: Path, iac_home: Path
) -> None:
    precious = pytester.path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("mine")
    forge(kept, workdir=str(precious), module_dir=str(precious))

    result = cleanup(pytester)

    result.stdout.fnmatch_lines(
        [
            "REFUSED */mod (test *): its working directory */precious is not under this "
            "project's */runs; pytest-iac acts only in working directories it made."
        ]
    )
    assert_refused_and_real_one_destroyed(result, iac_home)
    assert (precious / "data.txt").read_text() == "mine"


def test_record_pointing_terraform_at_a_live_root_runs_nothing_there(
    pytester: pytest.Pytester, kept: Path, iac_home: Path, terraform: str
) -> None:
    live = pytester.path / "live"
    live.mkdir()
    (live / "main.tf").write_text(MODULE)
    for command in (["init"], ["apply", "-auto-approve"]):  # as its owners would
        subprocess.run([terraform, *command, "-input=false"], cwd=live, check=True)
    state = (live / "terraform.tfstate").read_bytes()
    assert json.loads(state)["resources"]
    forge(kept, module_dir=str(live), tf_data_dir=str(live / ".terraform"))

    result = cleanup(pytester)

    result.stdout.fnmatch_lines(
        ["REFUSED */mod (test *): its module_dir */live is outside its working directory *"]
    )
    assert_refused_and_real_one_destroyed(result, iac_home)
    assert (live / "terraform.tfstate").read_bytes() == state


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(["/bin/sh", "-c", "touch {pwned}"], id="shell-command"),
        pytest.param(["/bin/sh"], id="shell"),
        pytest.param(["{project}/terraform"], id="script-named-terraform"),
    ],
)
def test_record_whose_engine_is_not_terraform_runs_nothing(
    pytester: pytest.Pytester, kept: Path, iac_home: Path, engine: list[str]
) -> None:
    pwned = pytester.path / "pwned"
    fake = pytester.path / "terraform"
    fake.write_text(f"#!/bin/sh\ntouch {pwned}\n")
    fake.chmod(0o755)
    genuine = kept.read_text()
    kept.write_text(
        json.dumps(
            {
                **json.loads(genuine),
                "engine": [p.format(pwned=pwned, project=pytester.path) for p in engine],
            }
        )
    )

    result = cleanup(pytester)

    result.stdout.fnmatch_lines(
        [
            "REFUSED */mod (test *): its engine * is not terraform, tofu or pytest-iac's "
            "embedded engine.",
            "*The record is kept*",
        ]
        if engine[0] == "/bin/sh"
        else [
            "REFUSED */mod (test *): its engine * does not answer `version` as terraform or tofu."
        ]
    )
    assert result.ret == 1
    assert records(iac_home) == [kept]
    assert leftovers(iac_home)
    if engine[0] == "/bin/sh":
        assert not pwned.exists()  # the shell never ran

    kept.write_text(genuine)
    assert cleanup(pytester).ret == 0
    assert leftovers(iac_home) == []


def test_recorded_embedded_engine_is_this_process_own(
    pytester: pytest.Pytester, kept: Path, iac_home: Path
) -> None:
    # `sh -m FILE` would run FILE: the recorded interpreter is never used.
    pwned = pytester.path / "pwned"
    (pytester.path / "mod" / "pytest_iac.embedded").write_text(f"touch {pwned}\n")
    forged = json.loads(kept.read_text())
    forged["engine"] = ["/bin/sh", "-m", "pytest_iac.embedded"]
    kept.write_text(json.dumps(forged))

    result = cleanup(pytester)

    assert result.ret == 0, result.stdout.str()
    assert not pwned.exists()
    assert leftovers(iac_home) == []


def test_record_of_another_deployment_directory_is_refused(
    pytester: pytest.Pytester, kept: Path, iac_home: Path
) -> None:
    # The directory is one pytest-iac made, but for another record: its marker says so.
    forge(kept, marker="0" * 32)

    result = cleanup(pytester)

    result.stdout.fnmatch_lines(
        [
            "REFUSED */mod (test *): its working directory * has no pytest-iac marker for "
            "this record*"
        ]
    )
    assert_refused_and_real_one_destroyed(result, iac_home)


def _truncated(text: str) -> str:
    return text[: len(text) // 2]


def _wrong_type(text: str) -> str:
    return json.dumps({**json.loads(text), "var_files": "pytest-iac.tfvars.json"})


def _not_an_object(text: str) -> str:
    return json.dumps([json.loads(text)])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        pytest.param(_truncated, "is not valid JSON (*)", id="truncated"),
        pytest.param(
            _wrong_type,
            "field 'var_files' is str ('pytest-iac.tfvars.json'), not list[str]",
            id="wrong-type",
        ),
        pytest.param(_not_an_object, "not a JSON object but list", id="not-an-object"),
    ],
)
def test_damaged_record_is_named_kept_and_fails_the_cleanup(
    pytester: pytest.Pytester,
    kept: Path,
    iac_home: Path,
    damage: Callable[[str], str],
    reason: str,
) -> None:
    genuine = kept.read_text()
    kept.write_text(damage(genuine))

    result = cleanup(pytester)

    result.stdout.fnmatch_lines(
        [
            "pytest-iac: 1 record(s) in the ledger (*)",
            f"KEPT {kept}: the record {reason}.",
            "  It is kept; pytest-iac does not act on it. Destroy its deployment by hand*",
            f"*then remove the record: rm {kept}",
            "pytest-iac: 0 destroyed, 0 failed, 1 refused, 0 skipped; 1 left in the ledger",
        ]
    )
    assert "ledger is empty" not in result.stdout.str()
    assert "INTERNALERROR" not in result.stdout.str()
    assert result.ret == 1
    assert records(iac_home) == [kept]
    assert leftovers(iac_home)  # nothing was destroyed on the strength of a bad record

    kept.write_text(genuine)  # repaired: the clean-up finishes
    assert cleanup(pytester).ret == 0
    assert records(iac_home) == []
    assert leftovers(iac_home) == []


def test_cleanup_refuses_a_deployment_whose_terraform_still_runs(
    pytester: pytest.Pytester, kept: Path, iac_home: Path, terraform: str
) -> None:
    record = json.loads(kept.read_text())
    release = pytester.path / "release"
    # A terraform that outlived its pytest (SIGKILL), still applying this deployment.
    apply = subprocess.Popen(
        [terraform, "apply", "-auto-approve", "-input=false", f"-var=hold={release}"]
        + [f"-var-file={f}" for f in record["var_files"]],
        cwd=record["module_dir"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: Path(f"{release}.started").exists(), "the apply to run")
        state = Path(record["state"]).read_bytes()

        result = cleanup(pytester)

        result.stdout.fnmatch_lines(
            [
                "  waiting up to *s for the terraform that holds */terraform.tfstate to end",
                "REFUSED */mod (test *): terraform is still running on it (terraform apply "
                "since * holds the lock of its state */terraform.tfstate)*",
                "  Let that terraform finish, or stop it, then run pytest --iac-cleanup again*",
                "pytest-iac: 0 destroyed, 0 failed, 1 refused, 0 skipped; 1 left in the ledger",
            ]
        )
        assert result.ret == 1
        assert records(iac_home) == [kept]
        assert Path(record["state"]).read_bytes() == state
    finally:
        release.touch()
        assert apply.wait(timeout=60) == 0
    # Once it has finished, the clean-up destroys what it made too.
    result = cleanup(pytester)
    result.stdout.fnmatch_lines(["*1 destroyed, 0 failed, 0 skipped; 0 left in the ledger"])
    assert leftovers(iac_home) == []


def test_record_of_a_deployment_whose_apply_never_started_is_cleared(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    # A process that recorded a deployment and died before its apply started.
    run = IacRun(
        project=find_project(project / "pytest.ini", project), run_id="r", settings=Settings()
    )
    stack = run.sandbox.stack(project / "mod", "never-applied")
    run.ledger.hook("before-apply", stack)
    run.ledger.close()
    assert len(records(iac_home)) == 1

    result = cleanup(pytester)

    result.stdout.fnmatch_lines(
        [
            "cleared */mod (test *): its apply never started (no state in */never-applied), "
            "so nothing was deployed",
            "pytest-iac: 0 destroyed, 1 cleared, 0 failed, 0 skipped; 0 left in the ledger",
        ]
    )
    assert result.ret == 0
    assert records(iac_home) == []
    assert not stack.workdir.exists()
    run.close()


def test_a_later_run_removes_only_what_ended_runs_left_in_their_own_directories(
    tmp_path: Path,
) -> None:
    """Unit tier: which directories under `runs/` `remove_ended_runs` may touch."""
    runs = project_dir(tmp_path) / "runs"
    made: dict[str, IacRun] = {}

    def run_dir(name: str) -> Path:
        run_id, worker = name.split("-")
        run = made[name] = IacRun(tmp_path, run_id, Settings(), worker=worker)
        run.prepare_home()
        (run.workdir / "drift" / "app-0").mkdir(parents=True)
        (run.workdir / "drift" / "app-0" / "drift.tfplan").write_text("a copy of state")
        return run.workdir

    outside = tmp_path / "outside"
    (outside / "drift").mkdir(parents=True)
    ended = run_dir("aaaa0001-main")
    deployed = run_dir("aaaa0002-gw0")
    (deployed / "sandboxes" / "t-app-123456").mkdir(parents=True)
    alive = run_dir("aaaa0003-gw1")
    forged = run_dir("aaaa0004-main")
    unmarked = runs / "aaaa0005-main"
    (unmarked / "drift").mkdir(parents=True)
    (runs / "aaaa0006-main").symlink_to(outside)
    fifo = run_dir("aaaa0008-main")
    (fifo / ".pytest-iac-run").unlink()
    os.mkfifo(fifo / ".pytest-iac-run")
    linked = run_dir("aaaa0007-main")
    shutil.rmtree(linked / "drift")
    (linked / "drift").symlink_to(outside / "drift")
    (linked / "sandboxes" / "t-app-654321").mkdir(parents=True)
    for name, run in made.items():
        if name != "aaaa0003-gw1":
            assert run._marker is not None
            run._marker.close()  # as a killed process's lock goes
    (forged / ".pytest-iac-run").write_text("pytest-iac run aaaa0001-main\n")

    assert remove_ended_runs(runs) == ["aaaa0001-main", "aaaa0002-gw0/drift"]
    assert not ended.exists()
    assert sorted(p.name for p in deployed.iterdir()) == [".pytest-iac-run", "sandboxes"]
    for untouched in (alive, forged, unmarked, linked, fifo):
        assert (untouched / "drift").exists()
    assert (linked / "drift").is_symlink()
    assert (runs / "aaaa0006-main").is_symlink()
    made["aaaa0003-gw1"].close()
    assert (outside / "drift").is_dir()
