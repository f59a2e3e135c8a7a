"""Which tests a change can affect (`--iac-changed-since`). No pytest or git import here.

Each selectable item says what its result depends on (a `Watch`): the directory trees it
deploys or plans (a module, the local modules it calls, a live directory) and single files
(its test file, the `conftest.py` files above it, backend settings). An item is kept when a
changed file lies in one of its trees or is one of its files. pytest's own files (test files,
`conftest.py`) in a tree count only for the items that name them: a module's test file does
not change what the module deploys for the modules that call it. Nor does a file in what a
copy of a module leaves out (`.terraform`, `__pycache__`, other hidden directories).

Some changes cannot be placed this safely; they keep everything (`everything_reason`): a
`conftest.py` at or above the rootdir, pytest's or the Python environment's settings, a
Terraform lock file outside any module directory (shared, or copied in by a script), a
Terraform file the reader cannot parse (its module calls are unknown), and Python code the
tests import. A selection that skips a test that should have run is worse than none.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pytest_iac import tfconfig
from pytest_iac.workspace import skipped

K = TypeVar("K")

# pytest's settings and the Python environment the tests run in, at or above the rootdir.
SETTINGS_FILES = (
    "pyproject.toml",
    "pytest.ini",
    ".pytest.ini",
    "tox.ini",
    "setup.cfg",
    "requirements*.txt",
    "poetry.lock",
    "uv.lock",
    "Pipfile.lock",
)
LOCK_FILE = ".terraform.lock.hcl"
SANDBOX_TEST, LIVE_DIR = "sandbox test", "live dir"  # the kinds of items, in summary order


@dataclass(frozen=True)
class Watch:
    """What one item's result depends on; `kind` names the item in summaries."""

    kind: str  # SANDBOX_TEST or LIVE_DIR
    trees: frozenset[Path]
    files: frozenset[Path] = frozenset()
    always: str | None = None  # why the item is kept whatever changed


@dataclass(frozen=True)
class Layout:
    """The facts about the project the rules need."""

    rootdir: Path
    top: Path  # the work tree's root
    pytest_files: Sequence[str] = ("test_*.py", "*_test.py")  # ini python_files
    inifile: Path | None = None
    imported: Collection[Path] = ()  # files of the Python modules the run has loaded
    is_module_dir: Callable[[Path], bool] = tfconfig.is_module_dir

    def is_pytest_file(self, path: Path) -> bool:
        return path.name == "conftest.py" or any(
            fnmatch.fnmatch(path.name, pattern) for pattern in self.pytest_files
        )

    def above_rootdir(self, path: Path) -> bool:
        """Is `path` directly in the rootdir or a directory above it (up to the work tree)?"""
        return path.parent == self.rootdir or (
            path.parent in self.rootdir.parents
            and (path.parent == self.top or self.top in path.parent.parents)
        )


def everything_reason(changed: Sequence[Path], layout: Layout) -> str | None:
    """Why a change keeps every item (the first such file), or None when all can be placed."""
    for path in changed:
        why = _unplaceable(path, layout)
        if why is not None:
            return f"{_shown(path, layout)} changed ({why})"
    return None


def _unplaceable(path: Path, layout: Layout) -> str | None:
    if path.name == "conftest.py" and layout.above_rootdir(path):
        return "its fixtures and hooks reach every test"
    if path == layout.inifile or (
        layout.above_rootdir(path) and any(fnmatch.fnmatch(path.name, p) for p in SETTINGS_FILES)
    ):
        return "pytest's settings or the tests' Python environment"
    if path.name == LOCK_FILE and path.parent.is_dir() and not layout.is_module_dir(path.parent):
        return "a lock file outside any module directory: which modules use it is unknown"
    if tfconfig.is_module_file(path.name) and path.is_file():
        read = tfconfig.module_from_files(path.parent, {path.name: path.read_bytes()})
        if read.unreadable:
            why = read.unreadable[0].reason
            return f"the reader cannot parse it ({why}): its module calls are unknown"
    if path.suffix == ".py" and not layout.is_pytest_file(path) and path in layout.imported:
        return "Python code the tests import"
    return None


def _shown(path: Path, layout: Layout) -> str:
    try:
        return path.relative_to(layout.top).as_posix()
    except ValueError:
        return str(path)


def affecting(watch: Watch, changed: Sequence[Path], layout: Layout) -> str | None:
    """Why `watch`'s item is kept (the first changed file it depends on), or None."""
    if watch.always is not None:
        return watch.always
    for path in changed:
        if path in watch.files:
            return _shown(path, layout)
        if layout.is_pytest_file(path):
            continue  # counts only where named: a module's tests don't change what it deploys
        if any(tree in path.parents and _copied(path, tree) for tree in watch.trees):
            return _shown(path, layout)
    return None


def _copied(path: Path, tree: Path) -> bool:
    """Is `path` in what a deployment or drift check copies of `tree` (not in `.terraform`,
    `__pycache__` or another hidden directory)? Local state is: drift checks read it."""
    return not any(skipped(part, True) for part in path.relative_to(tree).parts[:-1])


@dataclass
class Selection(Generic[K]):
    """What the option keeps: per kept item, why (the changed file that kept it)."""

    kept: dict[K, str] = field(default_factory=dict)
    deselected: list[K] = field(default_factory=list)
    everything: str | None = None  # why every item was kept
    totals: dict[str, int] = field(default_factory=dict)  # selectable items per kind
    counts: dict[str, int] = field(default_factory=dict)  # kept ones per kind


def select(
    watches: Mapping[K, Watch | None], changed: Sequence[Path], layout: Layout
) -> Selection[K]:
    """Keep the items a changed file can affect; items without a `Watch` are always kept."""
    selection: Selection[K] = Selection(everything=everything_reason(changed, layout))
    for key, watch in watches.items():
        if watch is None:
            continue
        selection.totals[watch.kind] = selection.totals.get(watch.kind, 0) + 1
        cause = affecting(watch, changed, layout)
        if cause is not None:
            selection.kept[key] = cause
        elif selection.everything is None:
            selection.deselected.append(key)
            continue
        selection.counts[watch.kind] = selection.counts.get(watch.kind, 0) + 1
    return selection


def summary(selection: Selection[K], files: int, since: str) -> str:
    """One line: `3 of 41 sandbox tests, 2 of 120 live dirs affected by 4 files changed since
    origin/main (merge base 1a2b3c4)`; `since` is the part from "since" on."""
    changed = f"{files} file{'' if files == 1 else 's'} changed since {since}"
    if not selection.totals:
        return f"no sandbox tests or live dirs to select; {changed}"
    parts = ", ".join(
        f"{selection.counts.get(kind, 0)} of {total} {kind}{'' if total == 1 else 's'}"
        for kind, total in sorted(selection.totals.items(), key=_kind_order)
    )
    if selection.everything is not None:
        return f"{parts} kept: {selection.everything}; {changed}"
    return f"{parts} affected by {changed}"


def _kind_order(entry: tuple[str, int]) -> tuple[int, str]:
    kind = entry[0]
    return ((SANDBOX_TEST, LIVE_DIR).index(kind) if kind in (SANDBOX_TEST, LIVE_DIR) else 2, kind)
