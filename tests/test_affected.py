"""--iac-changed-since, the fast tier: changed files from real git repositories, the
selection rules and the deploy paths read from test code. No terraform runs here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import git
import pytest

from pytest_iac.affected import Layout, Watch, everything_reason, select, summary
from pytest_iac.deploy_paths import Deploy, deploy_calls
from pytest_iac.vcs import ChangesError, changed_since


def new_repo(path: Path, files: dict[str, str]) -> git.Repo:
    """A repository on `main` whose first commit holds `files`."""
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "test@example.com")
    write(path, files)
    commit(repo, "first")
    return repo


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def commit(repo: git.Repo, message: str) -> str:
    repo.git.add(A=True)
    repo.git.commit("-q", "-m", message)
    return repo.head.commit.hexsha


def diverge(repo: git.Repo, branch: dict[str, str], main: dict[str, str]) -> None:
    """Commit `branch` on a new branch `feature` and then `main` on main; end on feature."""
    root = Path(repo.working_tree_dir or ".")
    repo.git.checkout("-q", "-b", "feature")
    write(root, branch)
    commit(repo, "on the branch")
    repo.git.checkout("-q", "main")
    write(root, main)
    commit(repo, "on main after the branch: not the branch's change")
    repo.git.checkout("-q", "feature")


def names(root: Path, files: tuple[Path, ...]) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


# Changed files


def test_changes_since_the_merge_base_in_the_work_tree(tmp_path: Path) -> None:
    files = {".gitignore": "*.log\n", "a.tf": "", "b.tf": "", "c.tf": "", "d.tf": "", "e.tf": ""}
    with new_repo(tmp_path, files) as repo:
        base = repo.head.commit.hexsha
        diverge(repo, {"a.tf": "# committed on the branch"}, {"b.tf": "# on main"})
        write(tmp_path, {"c.tf": "# staged", "d.tf": "# not staged", "new.tf": "", "x.log": ""})
        repo.index.add(["c.tf"])
        repo.git.mv("e.tf", "renamed.tf")  # both paths count
    (tmp_path / "a.tf").unlink()  # deleted after its commit: still changed

    changes = changed_since("main", tmp_path)

    expected = ["a.tf", "c.tf", "d.tf", "e.tf", "new.tf", "renamed.tf"]  # not b.tf, x.log
    assert names(tmp_path, changes.files) == expected
    assert changes.to_dict() == {"since": "main", "merge_base": base, "files": expected}


def test_detached_head_is_its_commit(tmp_path: Path) -> None:
    with new_repo(tmp_path, {"a.tf": ""}) as repo:
        first = repo.head.commit.hexsha
        write(tmp_path, {"b.tf": ""})
        commit(repo, "second")
        repo.git.checkout("-q", "--detach", "HEAD")

    changes = changed_since("HEAD~1", tmp_path)

    assert changes.merge_base == first
    assert names(tmp_path, changes.files) == ["b.tf"]


def test_unknown_ref(tmp_path: Path) -> None:
    new_repo(tmp_path, {"a.tf": ""}).close()
    with pytest.raises(ChangesError) as error:
        changed_since("origin/nope", tmp_path)
    assert str(error.value) == (
        f"--iac-changed-since origin/nope: 'origin/nope' is no commit, branch or tag known in "
        f"{tmp_path.resolve()}. Check the name; a remote one may need `git fetch`."
    )


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(ChangesError, match="is not inside a git work tree"):
        changed_since("main", tmp_path)


def test_repository_without_commits(tmp_path: Path) -> None:
    git.Repo.init(tmp_path).close()
    with pytest.raises(ChangesError, match="has no commits yet"):
        changed_since("main", tmp_path)


def test_shallow_clone_without_the_merge_base_says_to_fetch(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    with new_repo(origin, {"a.tf": ""}) as repo:
        diverge(repo, {"b.tf": ""}, {"c.tf": ""})
    clone = tmp_path / "clone"
    # What a CI checkout does: the branch's last commit only (all branches, one deep).
    git.Repo.clone_from(
        f"file://{origin}", clone, depth=1, no_single_branch=True, branch="feature"
    ).close()

    with pytest.raises(ChangesError) as error:
        changed_since("origin/main", clone)

    message = str(error.value)
    assert "have no common ancestor here" in message
    assert "shallow clone" in message
    assert "`git fetch --unshallow origin`" in message


# The selection rules


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """modules/{naming,network,app} (app calls both) and live/{dev,other}, resolved."""
    write(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "modules/naming/main.tf": 'locals {\n  id = "x"\n}\n',
            "modules/naming/test_naming.py": "",
            "modules/network/main.tf": "",
            "modules/app/main.tf": "",
            "live/dev/main.tf": "",
            "live/dev/conftest.py": "",
            "shared/.terraform.lock.hcl": "",
        },
    )
    return tmp_path.resolve()


def layout(root: Path, **changes: Any) -> Layout:
    return Layout(rootdir=root, top=root, inifile=root / "pytest.ini", **changes)


def watches(root: Path) -> dict[str, Watch | None]:
    naming, network, app = (root / "modules" / m for m in ("naming", "network", "app"))
    return {
        "naming test": Watch("sandbox test", frozenset({naming}), frozenset({naming / "t.py"})),
        "network test": Watch("sandbox test", frozenset({network})),
        "app test": Watch("sandbox test", frozenset({app, naming, network})),
        "dev": Watch("live dir", frozenset({root / "live/dev", naming}), frozenset()),
        "other": Watch("live dir", frozenset({root / "live/other"})),
        "plan-only test": None,
    }


def test_a_module_change_keeps_its_tests_and_its_callers(tree: Path) -> None:
    changed = [tree / "modules/naming/main.tf"]
    selection = select(watches(tree), changed, layout(tree))

    assert selection.kept == {
        "naming test": "modules/naming/main.tf",
        "app test": "modules/naming/main.tf",
        "dev": "modules/naming/main.tf",
    }
    assert selection.deselected == ["network test", "other"]
    assert selection.everything is None
    assert summary(selection, 1, "main (merge base 1a2b3c4)") == (
        "2 of 3 sandbox tests, 1 of 2 live dirs affected by 1 file changed since main "
        "(merge base 1a2b3c4)"
    )


def test_pytest_files_count_only_where_named(tree: Path) -> None:
    changed = [tree / "modules/naming/test_naming.py", tree / "live/dev/conftest.py"]
    items = watches(tree)
    items["dev"] = Watch("live dir", frozenset({tree / "live/dev"}), frozenset(changed[1:]))
    selection = select(items, changed, layout(tree))

    # naming's test file does not change what naming deploys for app or dev.
    assert selection.kept == {"dev": "live/dev/conftest.py"}


def test_files_no_copy_holds_count_for_nothing(tree: Path) -> None:
    changed = [
        tree / "modules/naming/__pycache__/x.pyc",
        tree / "modules/naming/.terraform/modules/modules.json",
        tree / "modules/naming/.github/notes.md",
    ]
    selection = select(watches(tree), changed, layout(tree))
    assert selection.kept == {}
    local_state = tree / "live/dev/terraform.tfstate"  # a drift check reads it
    assert select(watches(tree), [local_state], layout(tree)).kept == {
        "dev": "live/dev/terraform.tfstate"
    }


def test_an_item_that_cannot_be_placed_is_always_kept(tree: Path) -> None:
    items: dict[str, Watch | None] = {
        "t": Watch("sandbox test", frozenset(), always="it deploys a path only known at run time")
    }
    selection = select(items, [tree / "README.md"], layout(tree))
    assert selection.kept == {"t": "it deploys a path only known at run time"}


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("conftest.py", "", "its fixtures and hooks reach every test"),
        ("pytest.ini", "[pytest]\n", "pytest's settings or the tests' Python environment"),
        ("pyproject.toml", "", "pytest's settings or the tests' Python environment"),
        ("tox.ini", "", "pytest's settings or the tests' Python environment"),
        ("requirements-dev.txt", "", "pytest's settings or the tests' Python environment"),
        ("shared/.terraform.lock.hcl", "", "a lock file outside any module directory"),
        ("modules/naming/broken.tf", 'resource "x" {\n', "the reader cannot parse it"),
        ("modules/naming/main.tf.json", "[]", "the reader cannot parse it"),
        ("helpers/util.py", "", "Python code the tests import"),
    ],
)
def test_changes_that_keep_everything(tree: Path, name: str, text: str, why: str) -> None:
    write(tree, {name: text})
    imported = {tree / "helpers/util.py"}
    selection = select(watches(tree), [tree / name], layout(tree, imported=imported))

    assert selection.everything is not None
    assert selection.everything.startswith(f"{name} changed ({why}")
    assert selection.deselected == []
    assert summary(selection, 1, "main (merge base 1a2b3c4)") == (
        f"3 of 3 sandbox tests, 2 of 2 live dirs kept: {selection.everything}; "
        "1 file changed since main (merge base 1a2b3c4)"
    )


@pytest.mark.parametrize(
    "name",
    [
        "modules/naming/.terraform.lock.hcl",  # a module's own lock file: that module's change
        "modules/naming/conftest.py",  # a conftest below the rootdir: only its own tests
        "modules/naming/handler.py",  # Python the tests do not import: a module's file
        "docs/pyproject.toml",  # settings of another project, below the rootdir
    ],
)
def test_changes_that_are_placed(tree: Path, name: str) -> None:
    write(tree, {name: ""})
    assert everything_reason([tree / name], layout(tree)) is None


def test_settings_above_a_rootdir_below_the_work_tree(tmp_path: Path) -> None:
    rules = Layout(rootdir=tmp_path / "infra", top=tmp_path)
    assert everything_reason([tmp_path / "pyproject.toml"], rules) == (
        "pyproject.toml changed (pytest's settings or the tests' Python environment)"
    )
    assert everything_reason([tmp_path / "app" / "pyproject.toml"], rules) is None
    assert everything_reason([tmp_path.parent / "pyproject.toml"], rules) is None  # outside


def test_summary_without_selectable_items(tree: Path) -> None:
    selection = select({"plan-only test": None}, [tree / "README.md"], layout(tree))
    assert selection.kept == {}
    assert selection.deselected == []
    assert summary(selection, 2, "main (merge base 1a2b3c4)") == (
        "no sandbox tests or live dirs to select; 2 files changed since main (merge base 1a2b3c4)"
    )


# Paths read from test code

CONSTANT = "../constant"


def test_deploy_paths_read_from_code() -> None:
    def literal(iac_deploy: Any) -> None:
        iac_deploy("../network", vars={"name": "x"})
        iac_deploy(path="../naming", var_files=["prod.tfvars", CONSTANT])
        iac_deploy(vars={"name": "x"})
        iac_deploy(CONSTANT)
        iac_deploy(Path(__file__).parent / "sub" / "mod")

    here = Path(__file__).resolve().parent
    assert deploy_calls(literal, "iac_deploy") == [
        Deploy(Path("../network")),
        Deploy(Path("../naming"), (Path("prod.tfvars"), Path("../constant"))),
        Deploy(Path()),
        Deploy(Path("../constant")),
        Deploy(here / "sub" / "mod"),
    ]


def computed(iac_deploy: Any, name: str) -> None:
    iac_deploy(f"../{name}")


def passed_on(iac_deploy: Any, helper: Callable[..., None]) -> None:
    helper(iac_deploy)


def shadowed(iac_deploy: Any) -> None:
    CONSTANT = "elsewhere"  # a local that hides the module's constant
    iac_deploy(CONSTANT)


def spread(iac_deploy: Any, options: dict[str, Any]) -> None:
    iac_deploy(**options)


def var_files_computed(iac_deploy: Any, files: list[str]) -> None:
    iac_deploy(".", var_files=files)


@pytest.mark.parametrize("function", [computed, passed_on, shadowed, spread, var_files_computed])
def test_deploy_paths_that_cannot_be_read(function: Callable[..., None]) -> None:
    assert deploy_calls(function, "iac_deploy") is None
