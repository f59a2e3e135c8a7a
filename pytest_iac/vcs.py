"""GitPython, for what pytest-iac asks of the repository: the commit a drift run checked, the
trunk guard, a module as it was at a ref (upgrade tests) and the files changed since a ref
(--iac-changed-since). No pytest import here."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iac.errors import IacError
from pytest_iac.live import module_closure
from pytest_iac.tfconfig import is_module_file, module_from_files
from pytest_iac.workspace import skipped

if TYPE_CHECKING:
    import git  # imported where used: a run without drift checks never loads GitPython

log = logging.getLogger("pytest_iac")


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


def describe_later(path: Path) -> Future[VcsInfo | None]:
    """`describe(path)` in a thread of its own, while the run goes on. A git that cannot
    answer (no git binary, a damaged repository) gives None, with a warning in the log."""

    def describe_or_none() -> VcsInfo | None:
        try:
            return describe(path)
        except Exception as error:  # ImportError, GitCommandError, OSError...
            log.warning("pytest-iac: git could not describe %s: %s", path, error)
            return None

    pool = ThreadPoolExecutor(1, thread_name_prefix="pytest-iac-git")
    try:
        return pool.submit(describe_or_none)
    finally:
        pool.shutdown(wait=False)


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


# A module as it was at a ref: what upgrade tests deploy first


class RefError(IacError):
    """A module cannot be read at the ref asked for."""


@dataclass(frozen=True)
class ModuleAtRef:
    """A module and the local modules it calls, as they were at `ref` (resolved up front)."""

    ref: str
    commit: str
    root: Path  # the repository's work tree
    module: str  # the module's path in the repository (posix, relative to `root`)
    directories: tuple[str, ...]  # the module and the local modules it calls, at `commit`

    def describe(self) -> str:
        return f"{self.module} at {self.ref} ({self.commit[:12]})"


def module_at(module: Path, ref: str) -> ModuleAtRef:
    """Resolve `ref` for the module at `module` and find what it calls there.

    Raises `RefError` before anything is written: not in a repository, an unknown ref (with
    the tags there are, and what to fetch in a shallow clone), a module or a local module it
    calls that did not exist at that ref, or a local module outside the repository.
    """
    import git

    repo = _repo(module)
    if repo is None or repo.working_tree_dir is None:
        raise RefError(
            f"from_ref={ref!r}: {module} is not inside a git repository, so it has no "
            "version to deploy first"
        )
    with repo:
        root = Path(repo.working_tree_dir).resolve()
        try:
            commit = repo.commit(ref)
        except (git.BadName, ValueError):
            raise RefError(_unknown_ref(repo, ref, root)) from None
        relative = module.resolve().relative_to(root).as_posix()
        outside = sorted(str(d) for d in module_closure(module) if not d.is_relative_to(root))
        if outside:
            raise RefError(
                f"from_ref={ref!r}: {module} calls local modules outside the repository "
                f"({', '.join(outside)}): their version at {ref} cannot be read"
            )
        found = _closure_at(commit, relative, ref)
        return ModuleAtRef(ref, commit.hexsha, root, relative, tuple(sorted(found)))


def _unknown_ref(repo: git.Repo, ref: str, root: Path) -> str:
    tags = sorted(t.name for t in repo.tags)
    known = ", ".join(tags[-10:]) if tags else "none"
    message = f"from_ref={ref!r}: no tag, branch or commit {ref!r} in {root} (tags: {known})."
    if (Path(repo.git_dir) / "shallow").exists():
        message += (
            " This clone is shallow: fetch the history and tags first "
            "(`git fetch --tags --unshallow`; actions/checkout: `fetch-depth: 0`)."
        )
    return message


def _closure_at(commit: git.Commit, module: str, ref: str) -> set[str]:
    """`module` and the local modules it calls, directly or not, in `commit`'s tree."""
    seen: set[str] = set()
    pending = [(module, "")]
    while pending:
        directory, caller = pending.pop()
        if directory in seen:
            continue
        where = f"{directory} (called by {caller})" if caller else directory
        if directory.startswith("../") or directory == "..":
            raise RefError(
                f"from_ref={ref!r}: {where} is outside the repository: it cannot be read at a ref"
            )
        try:
            tree = commit.tree / directory if directory != "." else commit.tree
        except KeyError:
            tree = None
        tf_files = [b for b in tree.blobs if is_module_file(b.name)] if tree is not None else []
        if tree is None or tree.type != "tree" or not tf_files:
            raise RefError(
                f"from_ref={ref!r}: {where} did not exist at {ref} (commit "
                f"{commit.hexsha[:12]}): no .tf files there. Pick a ref where it did."
            )
        seen.add(directory)
        read = module_from_files(
            Path(directory), {b.name: b.data_stream.read() for b in tree.blobs}
        )
        for unreadable in read.unreadable:
            log.warning(
                "from_ref=%r: could not read %s at %s (%s): local modules it calls, if any, "
                "are not deployed with it",
                ref,
                unreadable.path,
                ref,
                unreadable.reason,
            )
        for call in read.module_calls.values():
            if call.is_local and call.source is not None:
                called = posixpath.normpath(posixpath.join(directory, call.source))
                pending.append((called, directory))
    return seen


def write_module(at: ModuleAtRef, destination: Path) -> Path:
    """Write the files of `at` under `destination`, laid out as in the repository; return
    where the module itself landed. Terraform's own files and hidden directories are left
    out, as from any copy of a module."""
    import git

    with git.Repo(at.root) as repo:
        tree = repo.commit(at.commit).tree
        for directory in at.directories:
            if any(directory.startswith(f"{d}/") for d in at.directories if d != ".") or (
                directory != "." and "." in at.directories
            ):
                continue  # written with the directory that holds it
            _write_tree(tree / directory if directory != "." else tree, destination)
    (destination / at.module).mkdir(parents=True, exist_ok=True)
    return destination / at.module


def _write_tree(tree: git.Tree, destination: Path) -> None:
    for blob in tree.blobs:
        if skipped(blob.name, False):
            continue
        path = destination / blob.path
        path.parent.mkdir(parents=True, exist_ok=True)
        data = blob.data_stream.read()
        if blob.mode == 0o120000:  # a symbolic link: the blob is its target
            path.symlink_to(data.decode())
        else:
            path.write_bytes(data)
            path.chmod(0o755 if blob.mode & 0o111 else 0o644)
    for subtree in tree.trees:
        if not skipped(subtree.name, True):
            _write_tree(subtree, destination)


class ChangesError(IacError):
    """The files changed since a ref cannot be known: not a checkout, unknown ref, no base."""


@dataclass(frozen=True)
class Changes:
    """The files that differ from the merge base of `ref` and HEAD, in the work tree."""

    ref: str
    merge_base: str
    root: Path  # the work tree
    files: tuple[Path, ...]  # absolute, sorted; a rename gives both paths

    def relative(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.ref,
            "merge_base": self.merge_base,
            "files": [self.relative(f) for f in self.files],
        }


_FETCH_ADVICE = (
    "This is a shallow clone (CI checkouts often are), so the history that holds it may "
    "just not be here: fetch it with `git fetch --unshallow origin` (GitHub Actions: "
    "`fetch-depth: 0` in actions/checkout)."
)


def changed_since(ref: str, start: Path) -> Changes:
    """What changed since the merge base of `ref` and HEAD: commits since then, staged and
    unstaged changes and untracked files that are not ignored. A renamed or deleted file
    counts by both of its paths; a detached HEAD is just the commit it points at.

    Raises `ChangesError` saying what is missing and what to do.
    """
    import git

    option = f"--iac-changed-since {ref}"
    repo = _repo(start)
    tree = repo.working_tree_dir if repo is not None else None
    if repo is None or tree is None:
        if repo is not None:  # a bare repository
            repo.close()
        raise ChangesError(
            f"{option}: {start} is not inside a git work tree, so what changed cannot be "
            "known. Run from a clone of the repository, or drop the option to run every test."
        )
    with repo:
        root = Path(tree).resolve()
        shallow = Path(repo.git_dir, "shallow").is_file()
        try:
            head = repo.head.commit
        except ValueError:
            raise ChangesError(f"{option}: {root} has no commits yet") from None
        try:
            since = repo.commit(ref)
        except (git.BadName, git.BadObject, ValueError):
            raise ChangesError(
                f"{option}: {ref!r} is no commit, branch or tag known in {root}. "
                + (
                    _FETCH_ADVICE
                    if shallow
                    else "Check the name; a remote one may need `git fetch`."
                )
            ) from None
        bases = repo.merge_base(since, head)
        if not bases:
            raise ChangesError(
                f"{option}: {ref} ({since.hexsha[:7]}) and HEAD ({head.hexsha[:7]}) have no "
                "common ancestor here. "
                + (_FETCH_ADVICE if shallow else "They come from unrelated histories.")
            )
        base = bases[0].hexsha
        diff = repo.git.diff("--name-only", "-z", "--no-renames", base, "--")
        names = {name for name in diff.split("\0") if name}
        names.update(repo.untracked_files)
    return Changes(ref, base, root, tuple(sorted(root / name for name in names)))
