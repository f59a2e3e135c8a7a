"""Shared deployments under pytest-xdist: counted under -n 2 and -n 4, and a worker killed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import leftovers

pytest.importorskip("xdist")

MODULE = """
variable "name" { type = string }
resource "terraform_data" "this" { input = var.name }
output "id" { value = terraform_data.this.id }
"""

CONFTEST = """
import json, os
import pytest

@pytest.fixture(scope="session")
def network(iac_session_deploy):
    return iac_session_deploy("mod", vars={"name": "network"})

@pytest.fixture(scope="session")
def cache(iac_session_deploy):
    return iac_session_deploy("mod", vars={"name": "cache"})

@pytest.fixture
def seen(request):
    # which deployments each test saw, one file per test
    def write(**stacks):
        path = os.path.join(os.path.dirname(__file__), "seen", request.node.name + ".json")
        with open(path, "w") as f:
            json.dump({k: s.outputs["id"] for k, s in stacks.items()}, f)
    return write
"""

TEST_MODULE = """
import pytest_iac

database = pytest_iac.deployment("mod", scope="session", vars={{"name": "database"}})
app = pytest_iac.deployment("mod", scope="module", vars={{"name": "app-{n}"}})

{tests}
"""

TEST = """
def test_{n}_{i}({first}, {second}, database, app, seen):
    seen(network=network, cache=cache, database=database, app=app)
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    pytester.mkdir("mod")
    pytester.path.joinpath("mod", "main.tf").write_text(MODULE)
    pytester.mkdir("seen")
    pytester.makeconftest(CONFTEST)
    for n, order in (("a", "network cache"), ("b", "cache network"), ("c", "network cache")):
        first, second = order.split()  # the factory called in another order on another worker
        tests = "".join(TEST.format(n=n, i=i, first=first, second=second) for i in range(4))
        pytester.makepyfile(**{f"test_{n}": TEST_MODULE.format(n=n, tests=tests)})
    return pytester.path


@pytest.mark.parametrize("workers", ["2", "4"])
def test_session_deployments_are_made_once_per_run_and_module_ones_once_per_module(
    pytester: pytest.Pytester, project: Path, workers: str, iac_home: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-n", workers, "--dist=loadfile"
    )
    result.assert_outcomes(passed=12)
    # 3 session deployments for the whole run, 1 module deployment per test module
    result.stdout.fnmatch_lines(["deployments: 6 made, 6 destroyed, 0 kept, *"])
    seen = [json.loads(p.read_text()) for p in (project / "seen").iterdir()]
    assert len({s["network"] for s in seen}) == 1  # every test, every worker: the same one
    assert len({s["cache"] for s in seen}) == 1
    assert len({s["database"] for s in seen}) == 1
    assert len({s["app"] for s in seen}) == 3
    assert not list(iac_home.rglob("ledger/*.json"))
    assert leftovers(iac_home) == []


def test_a_worker_killed_mid_run_loses_no_shared_deployment(
    pytester: pytest.Pytester, project: Path, iac_home: Path
) -> None:
    pytester.makepyfile(
        test_killed="""
        import os, signal

        def test_killed(network):
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=12, failed=1)
    result.stdout.fnmatch_lines(
        ["*worker 'gw*' crashed while running 'test_killed.py::test_killed'"]
    )
    # the shared deployments, made by whichever worker, were destroyed by the controller
    assert not list(iac_home.rglob("ledger/*.json"))
    assert leftovers(iac_home) == []
