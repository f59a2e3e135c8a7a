"""What commit a drift run checked, and the trunk guard. GitPython; no pytest import here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iac.errors import IacError

if TYPE_CHECKING:
    import git  # imported where used: a run without drift checks never loads GitPython


class TrunkError(IacError):
    """The checkout is not the trunk the run requires, or has uncommitted changes."""


@dataclass(frozen=True)
class VcsInfo:
    """The checkout a run looked at."""

    root: Path
    commit: str | None  # None in a repository without commits
    branch: str | None  # None when HEAD is detached
    dirty: bool  # uncommitted changes (untracked files included) anywhere in the work tree

    def to_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "branch": self.branch, "dirty": self.dirty}


def _repo(path: Path) -> git.Repo | None:
    import git

    try:
        return git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None


def describe(path: Path) -> VcsInfo | None:
    """The commit, branch and dirty flag of the git checkout holding `path`; None outside one."""
    repo = _repo(path)
    if repo is None or repo.working_tree_dir is None:
        return None
    with repo:
        try:
            commit: str | None = repo.head.commit.hexsha
        except ValueError:  # no commits yet
            commit = None
        branch = None if repo.head.is_detached else repo.active_branch.name
        return VcsInfo(
            Path(repo.working_tree_dir), commit, branch, repo.is_dirty(untracked_files=True)
        )


def uncommitted(repo: git.Repo, directories: Iterable[Path]) -> list[str]:
    """Paths (relative to the work tree) under `directories` that differ from HEAD."""
    import git

    assert repo.working_tree_dir is not None
    top = Path(repo.working_tree_dir).resolve()
    prefixes = []
    for directory in directories:
        try:
            relative = directory.resolve().relative_to(top).as_posix()
        except ValueError:
            continue  # outside this work tree
        prefixes.append("" if relative == "." else relative + "/")
    changed: set[str] = set(repo.untracked_files)
    changed.update(d.a_path or d.b_path or "" for d in repo.index.diff(None))
    try:
        changed.update(d.a_path or d.b_path or "" for d in repo.index.diff("HEAD"))
    except git.BadName:  # no commits yet: everything staged is uncommitted
        changed.update(str(path) for path, _stage in repo.index.entries)
    return sorted(p for p in changed if p and any(p.startswith(pre) for pre in prefixes))


def require_trunk(branch: str, directories: Iterable[Path], start: Path) -> VcsInfo:
    """Check that HEAD is on `branch` with no uncommitted changes under `directories`.

    Raises `TrunkError` saying which check failed and what to do.
    """
    directories = list(directories)
    repo = _repo(start)
    if repo is None:
        raise TrunkError(
            f"--iac-require-trunk={branch}: {start} is not inside a git checkout, so the "
            "commit to check cannot be known. Run from a clone of the repository."
        )
    with repo:
        if repo.head.is_detached:
            sha = repo.head.commit.hexsha[:12]
            raise TrunkError(
                f"--iac-require-trunk={branch}: HEAD is detached at {sha}, not on branch "
                f"{branch!r}. Check out {branch} (in CI: check out the branch, not the commit)."
            )
        current = repo.active_branch.name
        if current != branch:
            raise TrunkError(
                f"--iac-require-trunk={branch}: HEAD is on branch {current!r}, not {branch!r}. "
                f"Drift is checked against the trunk only: `git checkout {branch}`."
            )
        changed = uncommitted(repo, directories)
        if changed:
            shown = "\n  ".join(changed[:20]) + ("\n  ..." if len(changed) > 20 else "")
            raise TrunkError(
                f"--iac-require-trunk={branch}: uncommitted changes under the live "
                f"directories (or the local modules they use):\n  {shown}\n"
                "Commit or discard them: drift is checked against committed code only."
            )
    info = describe(start)
    assert info is not None
    return info
