"""The fault matrix: whatever goes wrong, nothing stays deployed that the ledger does not list.

Every test runs a user's pytest session (through pytester; in a subprocess where signals or
crashes are involved) against real Terraform with `terraform_data` resources, injects one
fault, and ends with the same proof: no state holds resources (`leftovers`) and the ledger
is empty, or holds exactly the records the fault must leave, which `pytest --iac-cleanup`
then destroys.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import StateServer, leftovers

# One resource, then a second whose creation runs a command: slow, failing or fine on demand.
MODULE = """
variable "name" {
  type    = string
  default = "fault"
}

variable "apply_command" {
  type    = string
  default = "true"
}

resource "terraform_data" "first" {
  input = var.name
}

resource "terraform_data" "second" {
  input = terraform_data.first.output

  provisioner "local-exec" {
    command = var.apply_command
  }

  provisioner "local-exec" {
    when    = destroy
    command = "test ! -e $FAULT_DIR/slow-destroy || { touch $FAULT_DIR/destroying; sleep 5; }"
  }
}
"""


def ledger(home: Path) -> list[dict[str, object]]:
    """The records in every project ledger under `home`."""
    return [json.loads(path.read_text()) for path in sorted(home.glob("projects/*/ledger/*.json"))]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's project: a module in mod/ and a pytest.ini at its root (also $FAULT_DIR)."""
    monkeypatch.setenv("FAULT_DIR", str(pytester.path))
    module = pytester.path / "mod"
    module.mkdir()
    (module / "main.tf").write_text(MODULE)
    pytester.makeini("[pytest]\n")
    return pytester.path


_started: list[subprocess.Popen[str]] = []


def start(project: Path, *args: str) -> subprocess.Popen[str]:
    """`pytest ARGS` in `project`, in a process of its own (as a CI runner starts it).

    Ctrl-C works there even when this run was started with SIGINT ignored (as a shell does
    for a background job), which Python and terraform would otherwise inherit.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    _started.append(process)
    return process


@pytest.fixture(autouse=True)
def _stop_started_processes() -> Iterator[None]:
    """A test that fails before `finish()` must not leave its pytest running into the next."""
    yield
    while _started:
        process = _started.pop()
        if process.returncode is None:
            process.kill()
            process.communicate()


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def cleanup(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--iac-cleanup", *args)


def assert_clean(home: Path) -> None:
    assert leftovers(home) == []
    assert ledger(home) == []


# Failures inside the run: each test's teardown destroys what was applied, even half of it.


def test_failing_assertion_and_exception_in_the_test(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        def test_assertion(iac_deploy):
            iac_deploy("mod", vars={"name": "a"})
            assert 1 == 2

        def test_exception(iac_deploy):
            iac_deploy("mod", vars={"name": "b"})
            raise RuntimeError("boom")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*deployments: 2 made, 2 destroyed, 0 kept, 0 failed*"])
    assert_clean(iac_home)


def test_half_finished_apply_is_destroyed(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    # The first resource is created, the second fails: the state holds one resource.
    pytester.makepyfile(
        """
        def test_half(iac_deploy):
            iac_deploy("mod", vars={"apply_command": "echo provisioning failed; exit 1"})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*terraform apply failed*", "*local-exec provisioner error*"])
    result.stdout.fnmatch_lines(["*deployments: 1 made, 1 destroyed*"])
    assert_clean(iac_home)


def test_exception_while_a_module_scoped_deployment_is_set_up(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest_iac

        shared = pytest_iac.deployment("mod", vars={"apply_command": "exit 3"})

        def test_one(shared):
            pass

        def test_two(shared):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*terraform apply failed for module*"])
    assert_clean(iac_home)


def test_timeouts_during_apply_and_during_the_test(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        import time
        import pytest

        @pytest.mark.timeout(1, method="signal")
        def test_slow_apply(iac_deploy):
            iac_deploy("mod", vars={"apply_command": "sleep 4 && touch $IAC_MARKER"})

        @pytest.mark.timeout(1, method="signal")
        def test_slow_test(iac_deploy):
            iac_deploy("mod")
            time.sleep(10)
        """
    )
    marker = pytester.path / "apply-finished"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IAC_MARKER", str(marker))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*Failed: Timeout*"])
    time.sleep(4)  # as long as the provisioner would have needed to finish
    assert not marker.exists()  # terraform was interrupted mid-apply, not left to finish
    assert_clean(iac_home)


# Signals: the run is interrupted as a user or a CI runner interrupts it.


@pytest.mark.parametrize(
    ("signum", "engine"),
    [
        pytest.param(signal.SIGINT, "binary", id="SIGINT-binary"),
        pytest.param(signal.SIGINT, "embedded", id="SIGINT-embedded"),
        pytest.param(signal.SIGTERM, "binary", id="SIGTERM-binary"),
        pytest.param(signal.SIGHUP, "binary", id="SIGHUP-binary"),  # a closed terminal
    ],
    indirect=["engine"],
)
def test_signal_during_apply(
    project: Path, iac_home: Path, signum: signal.Signals, engine: str
) -> None:
    (project / "test_x.py").write_text(
        """
def test_slow(iac_deploy):
    iac_deploy("mod", vars={"apply_command": "touch $FAULT_DIR/applying; sleep 20"})
"""
    )
    process = start(project, "-s", f"--iac-binary={engine}")
    wait_for(lambda: (project / "applying").exists(), "the apply to run")
    assert len(ledger(iac_home)) == 1  # recorded before the apply started
    process.send_signal(signum)
    code, output = finish(process)
    assert code == pytest.ExitCode.INTERRUPTED, output
    # terraform got the interrupt and stopped gracefully, then the teardown destroyed.
    assert "Interrupt received" in output or "Stopping operation" in output, output
    # It was told on the terminal how long terraform may take, and how to cut that short.
    assert "pytest-iac: terraform was interrupted: it finishes the operations" in output
    assert "Interrupt again to kill it" in output
    # Both: the first was created, the second is in the state as tainted.
    assert "Destroy complete! Resources: 2 destroyed." in output, output
    assert_clean(iac_home)


# A test that deploys, says it is running, then takes its time: to be interrupted.
SLOW_TEST = """
import pathlib, time

def test_slow(iac_deploy):
    iac_deploy("mod")
    pathlib.Path("testing").touch()
    time.sleep(30)
"""


def test_sigint_during_the_test(project: Path, iac_home: Path) -> None:
    (project / "test_x.py").write_text(SLOW_TEST)
    process = start(project)
    wait_for(lambda: (project / "testing").exists(), "the test to run")
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert "deployments: 1 made, 1 destroyed" in output, output
    assert_clean(iac_home)


def test_one_interrupt_during_destroy_lets_it_finish(project: Path, iac_home: Path) -> None:
    (project / "slow-destroy").touch()
    (project / "test_x.py").write_text(
        """
def test_one(iac_deploy):
    iac_deploy("mod")

def test_two():
    pass
"""
    )
    process = start(project, "-v")
    wait_for(lambda: (project / "destroying").exists(), "the destroy to run")
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert "SIGINT while destroying" in output
    assert "test_two" not in output.split("test_one")[-1]  # the run stopped after the destroy
    assert_clean(iac_home)


def test_second_interrupt_aborts_the_destroy_and_cleanup_finishes_it(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    (project / "slow-destroy").touch()
    (project / "test_x.py").write_text(SLOW_TEST)
    process = start(project)
    wait_for(lambda: (project / "testing").exists(), "the test to run")
    process.send_signal(signal.SIGINT)  # stop the run: the teardown destroys
    wait_for(lambda: (project / "destroying").exists(), "the destroy to run")
    process.send_signal(signal.SIGINT)  # and stop that too
    code, output = finish(process)
    assert code == pytest.ExitCode.INTERRUPTED, output
    assert "destroy stopped" in output, output
    assert "run `pytest --iac-cleanup` in the project" in output
    assert len(ledger(iac_home)) == 1
    assert leftovers(iac_home)

    (project / "slow-destroy").unlink()
    result = cleanup(pytester)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*destroying *mod (test test_x.py::test_slow*", "*destroyed"])
    assert_clean(iac_home)


# Crashes: what a dead process deployed stays in the ledger for --iac-cleanup.


def test_dead_xdist_worker_leaves_its_record_for_cleanup(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        import os

        def test_dies(iac_deploy):
            iac_deploy("mod")
            os._exit(1)
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "1", "--max-worker-restart=0"
    )
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*worker*crashed*", "*1 deployment(s) of this run are in the*"])
    [record] = ledger(iac_home)
    assert record["test"] == "test_dead_xdist_worker_leaves_its_record_for_cleanup.py::test_dies"
    assert record["worker"] == "gw0"

    dry = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--iac-cleanup-dry-run")
    assert dry.ret == 0
    dry.stdout.fnmatch_lines(["*would destroy *mod (test *test_dies*"])
    assert len(ledger(iac_home)) == 1

    result = cleanup(pytester)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 destroyed, 0 failed, 0 skipped; 0 left in the ledger"])
    assert_clean(iac_home)


# Faults of terraform itself, injected by a wrapper around the real binary.


@pytest.fixture
def faulty_terraform(tmp_path: Path) -> Path:
    """A terraform that fails (as its FAULTS dir says) before running the real one."""
    real = shutil.which("terraform")
    if real is None:
        pytest.skip("no terraform binary on PATH")
    faults = tmp_path / "faults"
    faults.mkdir()
    wrapper = tmp_path / "bin" / "terraform"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f"""#!/bin/sh
faults={faults}
# once-<cmd>: fail <cmd> once with a transient error; always-<cmd>: fail it every time.
if [ -e "$faults/once-$1" ]; then
    rm "$faults/once-$1"; touch "$faults/failed-once-$1"
    echo "Error: read tcp 10.0.0.1:443: read: connection reset by peer" >&2
    exit 1
fi
if [ -e "$faults/always-$1" ]; then
    echo "Error: permission denied on the sandbox account" >&2
    exit 1
fi
exec {real} "$@"
"""
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def test_transient_errors_on_first_apply_and_destroy_are_retried(
    pytester: pytest.Pytester, project: Path, iac_home: Path, faulty_terraform: Path
) -> None:
    faults = faulty_terraform.parent.parent / "faults"
    (faults / "once-apply").touch()
    (faults / "once-destroy").touch()
    pytester.makepyfile(
        """
        def test_ok(iac_deploy):
            assert iac_deploy("mod").outputs == {}
        """
    )
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        f"--iac-binary={faulty_terraform}",
        "--iac-retries=1",
        "--iac-retry-wait=0.05",
    )
    result.assert_outcomes(passed=1)
    assert sorted(p.name for p in faults.iterdir()) == ["failed-once-apply", "failed-once-destroy"]
    assert_clean(iac_home)


def test_permanent_destroy_failure_keeps_state_and_record_until_cleanup(
    pytester: pytest.Pytester, project: Path, iac_home: Path, faulty_terraform: Path
) -> None:
    faults = faulty_terraform.parent.parent / "faults"
    (faults / "always-destroy").touch()
    pytester.makepyfile(
        """
        def test_ok(iac_deploy):
            iac_deploy("mod")
        """
    )
    result = pytester.runpytest(
        "-p", "no:cacheprovider", f"--iac-binary={faulty_terraform}", "--iac-retries=0"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*terraform destroy failed for module*",
            "*permission denied on the sandbox account*",
            "*run `pytest --iac-cleanup` in the project*",
            "*deployments: 1 made, 0 destroyed, 0 kept, 1 failed to destroy, 0 leaked",
        ]
    )
    assert len(ledger(iac_home)) == 1
    assert any(k.startswith("state with resources") for k in leftovers(iac_home))

    still = cleanup(pytester)  # the fault is still there: nothing changes, and it says so
    assert still.ret == 1
    still.stdout.fnmatch_lines(["*FAILED: terraform destroy failed*", "*1 left in the ledger"])
    assert len(ledger(iac_home)) == 1

    (faults / "always-destroy").unlink()
    result = cleanup(pytester)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*1 destroyed, 0 failed, 0 skipped; 0 left in the ledger"])
    assert_clean(iac_home)


# Two runs at once in one project: separate records, and a clean-up that spares live runs.


def test_two_processes_at_once_and_cleanup_spares_live_runs(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    (project / "test_x.py").write_text(
        """
import os, pathlib, time

def test_hold(iac_deploy):
    iac_deploy("mod")
    pathlib.Path(os.environ["HOLDING"]).touch()
    deadline = time.monotonic() + 30
    while not pathlib.Path("release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""
    )
    processes = []
    for name in ("a", "b"):
        os.environ["HOLDING"] = f"holding-{name}"
        try:
            processes.append(start(project))
        finally:
            del os.environ["HOLDING"]
    wait_for(lambda: all((project / f"holding-{n}").exists() for n in "ab"), "both runs to deploy")
    records = ledger(iac_home)
    assert len(records) == 2
    assert len({r["pid"] for r in records}) == 2

    result = cleanup(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*skipped *still running*", "*skipped *still running*"])
    assert len(ledger(iac_home)) == 2

    (project / "release").touch()
    for process in processes:
        code, output = finish(process)
        assert code == 0, output
        assert "deployments: 1 made, 1 destroyed" in output
    assert_clean(iac_home)


# A killed pytest: what it started stops with it, and leaves nothing that no state knows.


def processes_of(project: Path) -> list[str]:
    """The live processes started for `project` (they inherit its $FAULT_DIR), but this one."""
    needle = f"FAULT_DIR={project}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile, or not ours
            continue
        if needle in environ and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


def wait_until_ended(project: Path, what: str) -> None:
    try:
        wait_for(lambda: not processes_of(project), f"{what} to end")
    except AssertionError:
        raise AssertionError(f"{what} still running: {processes_of(project)}") from None


def resources_in_states(home: Path) -> list[str]:
    return sorted(
        f"{resource['type']}.{resource['name']}"
        for state in home.rglob("*.tfstate")
        for resource in json.loads(state.read_text() or "{}").get("resources", [])
    )


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_sigkill_during_apply_stops_terraform_and_its_provisioner(
    pytester: pytest.Pytester, project: Path, iac_home: Path, engine: str
) -> None:
    (project / "test_x.py").write_text(
        """
def test_slow(iac_deploy):
    iac_deploy("mod", vars={
        "apply_command": "touch $FAULT_DIR/applying; sleep 4; touch $FAULT_DIR/applied"
    })
"""
    )
    process = start(project, f"--iac-binary={engine}")
    wait_for(lambda: (project / "applying").exists(), "the apply to run")
    process.kill()
    finish(process)
    # At once, as a CI job's next step would: terraform has stopped, or is saving its state.
    result = cleanup(pytester)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*1 destroyed, 0 failed*"])
    # Once nothing of the run is left, nothing can create a resource that no state knows.
    wait_until_ended(project, "the run's and the clean-up's processes")
    assert not (project / "applied").exists()
    assert_clean(iac_home)


# The provisioner starts, then takes far longer than any of these runs: it must be stopped.
LONG_PROVISIONER = """
import pytest

{mark}
def test_slow(iac_deploy):
    iac_deploy("mod", vars={{
        "apply_command": "touch $FAULT_DIR/applying; sleep 60; touch $FAULT_DIR/applied"
    }})
"""


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize(
    ("how", "mark", "options"),
    [
        pytest.param("SIGINT", "", (), id="ctrl-c"),
        pytest.param("", "", ("--iac-timeout=4",), id="iac-timeout"),
        # pytest-timeout's thread method ends the process with os._exit: like a SIGKILL.
        pytest.param("", '@pytest.mark.timeout(4, method="thread")', (), id="timeout-thread"),
    ],
)
def test_an_interrupted_apply_leaves_no_provisioner_running(
    pytester: pytest.Pytester,
    project: Path,
    iac_home: Path,
    engine: str,
    how: str,
    mark: str,
    options: tuple[str, ...],
) -> None:
    (project / "test_x.py").write_text(LONG_PROVISIONER.format(mark=mark))
    process = start(project, f"--iac-binary={engine}", *options)
    wait_for(lambda: (project / "applying").exists(), "the provisioner to start")
    if how:
        process.send_signal(getattr(signal, how))
    code, output = finish(process)
    assert code != 0, output
    # Nothing of the run is left running: nothing can still touch `applied`.
    wait_until_ended(project, "the run's processes")
    assert not (project / "applied").exists()
    if "thread" in mark:  # pytest died (os._exit): the clean-up finishes what it started
        assert "Timeout" in output, output
        assert len(ledger(iac_home)) == 1
        # terraform stopped gracefully: its state holds both resources (the second tainted).
        assert resources_in_states(iac_home) == ["terraform_data.first", "terraform_data.second"]
        assert cleanup(pytester).ret == 0
    assert_clean(iac_home)
    wait_until_ended(project, "the clean-up's processes")


# The ledger directory removed while a run uses it.


def test_ledger_directory_removed_mid_run(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    (project / "test_x.py").write_text(
        """
import os, pathlib, shutil, time

def test_hold(iac_deploy):
    iac_deploy("mod", vars={"name": "a"})
    [ledger] = pathlib.Path(os.environ["PYTEST_IAC_HOME"]).glob("projects/*/ledger")
    shutil.rmtree(ledger)  # someone removes the ledger while the run uses it
    iac_deploy("mod", vars={"name": "b"})  # ... which writes the first record again
    pathlib.Path("holding").touch()
    deadline = time.monotonic() + 30
    while not pathlib.Path("release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(ledger)  # and once more: the destroys find no records to remove
"""
    )
    process = start(project)
    wait_for(lambda: (project / "holding").exists(), "the run to deploy twice")
    assert len(ledger(iac_home)) == 2  # nothing lost

    result = cleanup(pytester)  # a running test's deployments are not taken
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*skipped *still running*", "*skipped *still running*"])
    assert len(ledger(iac_home)) == 2

    (project / "release").touch()
    code, output = finish(process)
    assert code == 0, output
    assert "deployments: 2 made, 2 destroyed, 0 kept, 0 failed to destroy" in output, output
    assert_clean(iac_home)


# A killed drift run: its working directories (plans are copies of state) do not outlive it.


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_drift_working_directories_of_a_killed_run_are_removed_by_a_later_run(
    pytester: pytest.Pytester, project: Path, iac_home: Path, state_server: StateServer
) -> None:
    live = project / "live" / "app"
    live.mkdir(parents=True)
    (live / "main.tf").write_text(
        f'terraform {{\n  backend "http" {{\n    address = "{state_server.address}"\n  }}\n}}\n'
        'resource "terraform_data" "x" {\n  input = "live"\n}\n'
    )
    state_server.hold.clear()  # every check waits for its state, mid-way
    killed = start(project, "-m", "drift", "live")
    wait_for(lambda: state_server.gets >= 1, "the killed run's check to ask for its state")
    [killed_check] = iac_home.glob("projects/*/runs/*/drift/*")
    alive = start(project, "-m", "drift", "live")
    wait_for(lambda: state_server.gets >= 2, "the live run's check to ask for its state")
    [alive_check] = set(iac_home.glob("projects/*/runs/*/drift/*")) - {killed_check}
    killed.kill()
    finish(killed)
    runs, killed_run = killed_check.parents[2], killed_check.parents[1]

    result = cleanup(pytester)  # a later run: it removes what the killed one left, only that
    result.stdout.fnmatch_lines(
        [
            f"pytest-iac: removed what runs that ended without cleaning up left in {runs}: "
            f"{killed_run.name}"
        ]
    )
    assert not killed_run.exists()
    assert alive_check.is_dir()  # the live run's, untouched

    state_server.hold.set()
    _, output = finish(alive)  # its check ran to the end (the backend holds no state yet)
    assert "never-applied  live/app" in output, output
    wait_until_ended(project, "the runs' processes")
    assert sorted(runs.iterdir()) == []
