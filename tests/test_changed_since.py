"""--iac-changed-since as a user sees it: real git repositories holding copies of the example
modules and two small live directories; real Terraform runs where the result matters."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import git
import pytest

from tests.conftest import EXAMPLES, leftovers
from tests.test_affected import commit, diverge, new_repo, write

LIVE = {
    # Calls the naming module; planned against an empty local state: drift (it would create).
    "live/dev/main.tf": """
terraform {
  backend "local" {}
}

module "label" {
  source      = "../../modules/naming"
  name        = "shop"
  environment = "dev"
}
""",
    "live/other/main.tf": """
terraform {
  backend "local" {}
}
""",
    "live/other/backend.tfbackend": 'path = "other.tfstate"\n',
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> Iterator[git.Repo]:
    """modules/{naming,network,app} from the examples (app calls naming and network), live/
    dev (calls naming) and live/other: committed on main."""
    for name in ("naming", "network", "app"):
        shutil.copytree(EXAMPLES / "modules" / name, pytester.path / "modules" / name)
    files = {"pytest.ini": "[pytest]\n", ".gitignore": "__pycache__/\n*.tfstate\n", **LIVE}
    with new_repo(pytester.path, files) as repo:  # closed: its git processes end with the test
        yield repo


def run(pytester: pytest.Pytester, *args: str, since: str = "main") -> pytest.RunResult:
    return pytester.runpytest(
        "-p", "no:cacheprovider", "-m", "sandbox or drift", f"--iac-changed-since={since}", *args
    )


def selected(result: pytest.RunResult) -> list[str]:
    """The node ids `--collect-only -q` lists."""
    return [line for line in result.outlines if "::" in line and " " not in line]


SANDBOX = {  # the example tests that deploy
    "naming": ["modules/naming/test_naming.py::test_label_is_deployed"],
    "network": [
        "modules/network/test_network.py::test_one_subnet_per_zone",
        "modules/network/test_network.py::test_adding_a_zone_only_adds_a_subnet",
    ],
    "app": [
        "modules/app/test_app.py::test_app_stack",
        "modules/app/test_app.py::test_scaling_in_only_removes_instances",
    ],
}


def test_a_module_change_runs_its_tests_and_its_callers_only(
    pytester: pytest.Pytester, project: git.Repo, iac_home: Path
) -> None:
    diverge(
        project,
        {"modules/naming/extra.tf": 'locals {\n  unused = "x"\n}\n'},
        {"modules/network/extra.tf": "# on main\n"},  # main moved on: not the branch's change
    )
    base = project.merge_base("main", "HEAD")[0].hexsha

    result = run(pytester, "-v", "--iac-report-json=drift.json", "--iac-report-md=drift.md")

    # naming's own test, app's two (app calls naming) and live/dev; not network, not other.
    result.assert_outcomes(passed=3, failed=1, deselected=8)
    result.stdout.fnmatch_lines(
        [
            "live/dev::drift FAILED*",
            "modules/app/test_app.py::test_app_stack PASSED*",
            "modules/app/test_app.py::test_scaling_in_only_removes_instances PASSED*",
            "modules/naming/test_naming.py::test_label_is_deployed PASSED*",
            f"iac-changed-since: 3 of 5 sandbox tests, 1 of 2 live dirs affected by 1 file "
            f"changed since main (merge base {base[:7]})",
            "  live/dev::drift: modules/naming/extra.tf",
            "  modules/app/test_app.py::test_app_stack: modules/naming/extra.tf",
        ]
    )
    report = json.loads((pytester.path / "drift.json").read_text())
    assert [d["name"] for d in report["directories"]] == ["live/dev"]
    assert report["changes"] == {
        "since": "main",
        "merge_base": base,
        "files": ["modules/naming/extra.tf"],
    }
    markdown = (pytester.path / "drift.md").read_text()
    assert (
        f"Only the directories that 1 file changed since `main` (merge base `{base[:7]}`) "
        "can affect were checked." in markdown
    )
    assert "- `modules/naming/extra.tf`" in markdown
    assert leftovers(iac_home) == []


def test_a_deleted_module_runs_its_callers_which_fail(
    pytester: pytest.Pytester, project: git.Repo, iac_home: Path
) -> None:
    project.git.rm("-r", "-q", "modules/naming")

    result = run(pytester, "-m", "drift", "-rA")

    result.assert_outcomes(errors=1, deselected=7)
    result.stdout.fnmatch_lines(
        [
            "*Error: Unreadable module directory*",
            "iac-changed-since: 1 of 2 live dirs affected by 6 files changed since main*",
            "ERROR live/dev::drift - Failed: could not check live/dev for drift:",
        ]
    )
    collected = run(pytester, "--collect-only", "-q")
    assert selected(collected) == ["live/dev::drift", *SANDBOX["app"]]
    assert leftovers(iac_home) == []


@pytest.mark.parametrize(
    ("change", "kept"),
    [
        pytest.param(
            {"live/other/backend.tfbackend": 'path = "elsewhere.tfstate"\n'},
            ["live/other::drift"],
            id="tfbackend",
        ),
        pytest.param(
            {"modules/network/conftest.py": ""}, SANDBOX["network"], id="conftest-of-a-module"
        ),
        pytest.param(
            {"modules/naming/test_naming.py": "def test_new(iac_deploy):\n    iac_deploy()\n"},
            ["modules/naming/test_naming.py::test_new"],
            id="test-file-not-its-callers",
        ),
        pytest.param(
            {
                "modules/fresh/main.tf": "",
                "modules/fresh/test_fresh.py": "def test_fresh(iac_deploy):\n    iac_deploy()\n",
            },
            ["modules/fresh/test_fresh.py::test_fresh"],
            id="untracked-new-module",
        ),
        pytest.param(
            {"modules/network/README.md": "-> modules/naming/NETWORK.md"},
            ["live/dev::drift", *SANDBOX["app"], *SANDBOX["naming"], *SANDBOX["network"]],
            id="rename-across-modules",
        ),
        pytest.param({"README.md": "# docs\n"}, [], id="nothing-deployed"),
    ],
)
def test_what_a_change_selects(
    pytester: pytest.Pytester,
    project: git.Repo,
    change: dict[str, str],
    kept: list[str],
) -> None:
    for name, text in change.items():
        if text.startswith("-> "):
            project.git.mv(name, text[3:])
        else:
            write(pytester.path, {name: text})
    result = run(pytester, "--collect-only", "-q")
    assert sorted(selected(result)) == sorted(kept)


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("conftest.py", "", "its fixtures and hooks reach every test"),
        ("pytest.ini", "[pytest]\nxfail_strict = true\n", "pytest's settings*"),
        (".terraform.lock.hcl", "", "a lock file outside any module directory*"),
        ("modules/network/broken.tf", 'module "x" {\n', "the reader cannot parse it*"),
    ],
)
def test_changes_that_keep_everything_say_so(
    pytester: pytest.Pytester, project: git.Repo, name: str, text: str, why: str
) -> None:
    write(pytester.path, {name: text})
    result = run(pytester, "--collect-only", "-q")
    assert len(selected(result)) == 7  # every sandbox test and live dir
    result.stdout.fnmatch_lines(
        [f"iac-changed-since: 5 of 5 sandbox tests, 2 of 2 live dirs kept: {name} changed ({why}*"]
    )


@pytest.mark.parametrize("how", ["option", "ini", "env"])
def test_ref_from_ini_or_environment_and_a_detached_head(
    pytester: pytest.Pytester, project: git.Repo, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = project.head.commit.hexsha
    write(pytester.path, {"live/other/extra.tf": "# changed\n"})
    commit(project, "other")
    project.git.checkout("-q", "--detach", "HEAD")
    args = ["-p", "no:cacheprovider", "-m", "sandbox or drift", "--collect-only", "-q"]
    if how == "option":
        args.append("--iac-changed-since=HEAD~1")
    elif how == "ini":
        args += ["-o", "iac_changed_since=HEAD~1"]
    else:
        monkeypatch.setenv("PYTEST_IAC_CHANGED_SINCE", "HEAD~1")
    result = pytester.runpytest(*args)
    assert selected(result) == ["live/other::drift"]
    result.stdout.fnmatch_lines(
        [
            f"iac-changed-since: 0 of 5 sandbox tests, 1 of 2 live dirs affected by 1 file "
            f"changed since HEAD~1 (merge base {first[:7]})"
        ]
    )


def test_a_shallow_clone_without_the_ref_says_to_fetch(
    pytester: pytest.Pytester, tmp_path: Path, iac_home: Path
) -> None:
    origin = tmp_path / "origin"
    with new_repo(origin, {"pytest.ini": "[pytest]\n", **LIVE}) as repo:
        repo.git.checkout("-q", "-b", "feature")
        write(origin, {"live/dev/extra.tf": ""})
        commit(repo, "on the branch")
    # A CI checkout of the branch: one commit deep, no other branch.
    git.Repo.clone_from(f"file://{origin}", pytester.path / "clone", depth=1).close()

    result = pytester.runpytest("clone", "-m", "drift", "--iac-changed-since=origin/main")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --iac-changed-since origin/main: 'origin/main' is no commit, branch or tag "
            "known in *clone. This is a shallow clone*`git fetch --unshallow origin`*"
        ]
    )
    assert leftovers(iac_home) == []


def test_outside_a_repository(pytester: pytest.Pytester, iac_home: Path) -> None:
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest("--iac-changed-since=main")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --iac-changed-since main: * is not inside a git work tree*drop the option*"]
    )
    assert leftovers(iac_home) == []


STACK_TESTS = """
import pytest_iac

PATHS = ["../modules/network"]

network = pytest_iac.deployment("../modules/network", var_files=["../shared/net.tfvars"])


def test_network(network):
    pass


def test_naming(iac_deploy):
    iac_deploy("../modules/naming", vars={"name": "abc", "environment": "dev"})


def test_computed(iac_deploy):
    iac_deploy(PATHS[0])
"""


def test_paths_a_test_deploys(pytester: pytest.Pytester, project: git.Repo) -> None:
    write(pytester.path, {"tests/test_stack.py": STACK_TESTS, "shared/net.tfvars": ""})
    commit(project, "tests beside no module")
    write(pytester.path, {"modules/naming/extra.tf": ""})

    result = run(pytester, "--collect-only", "-q")

    assert sorted(selected(result)) == sorted(
        [
            *SANDBOX["app"],
            *SANDBOX["naming"],
            "live/dev::drift",
            "tests/test_stack.py::test_computed",  # cannot be placed: kept
            "tests/test_stack.py::test_naming",
        ]
    )
    result = run(pytester, "--collect-only", "-v")
    result.stdout.fnmatch_lines(
        [
            "iac-changed-since: 5 of 8 sandbox tests, 1 of 2 live dirs affected by 1 file*",
            "  tests/test_stack.py::test_naming: modules/naming/extra.tf",
            "  tests/test_stack.py::test_computed: it deploys a path only known at run time",
        ]
    )
    for change in ("modules/network/extra.tf", "shared/net.tfvars"):
        write(pytester.path, {change: "# changed\n"})
        result = run(pytester, "--collect-only", "-q")
        assert "tests/test_stack.py::test_network" in selected(result)
        project.git.checkout("-q", "--", ".")
        project.git.clean("-q", "-f", "-d")


def test_under_xdist_the_workers_select_and_the_summary_says_so(
    pytester: pytest.Pytester, project: git.Repo, iac_home: Path
) -> None:
    pytest.importorskip("xdist")
    write(pytester.path, {"live/other/extra.tf": "# changed\n"})

    result = run(pytester, "-n", "2", "-m", "drift")

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["iac-changed-since: 1 of 2 live dirs affected by 1 file changed since main*"]
    )
    assert leftovers(iac_home) == []


def test_a_module_the_reader_cannot_read_keeps_what_calls_it(
    pytester: pytest.Pytester, project: git.Repo
) -> None:
    write(pytester.path, {"modules/naming/odd.tf": 'resource "x" {\n'})  # unparseable
    commit(project, "an unreadable file in naming")
    write(pytester.path, {"live/other/extra.tf": "# changed\n"})

    result = run(pytester, "--collect-only", "-q")

    # naming's calls are unknown: whatever uses naming is kept; network's tests are not.
    assert sorted(selected(result)) == sorted(
        ["live/dev::drift", "live/other::drift", *SANDBOX["app"], *SANDBOX["naming"]]
    )
    result = run(pytester, "--collect-only", "-v")
    result.stdout.fnmatch_lines(
        ["  live/dev::drift: its module calls are unknown: modules/naming/odd.tf: *"]
    )
