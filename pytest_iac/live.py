"""Discovery of live root modules: which directories a drift run checks. No pytest import.

A *live root module* is a directory of live configuration that Terraform runs directly (for
example `live/prod/network`), as opposed to a module that only serves others. The rule
`find_live_roots()` applies:

- the directory holds `*.tf` or `*.tf.json` files;
- neither it nor any directory above it (up to the path searched) is hidden or `.terraform`;
- no directory in the searched trees calls it as a local module (`source = "../x"`);
- it has state to compare with: it declares a backend (a `backend "..."` or `cloud` block)
  or holds a local `terraform.tfstate`. A module nobody calls yet, with neither, is a
  reusable module (one tested in a sandbox, say), not deployed configuration; except under
  a path the user named as live (`named`): there it is a new environment, not deployed yet,
  which the drift check reports instead of passing over;
- it matches none of the `exclude` globs (fnmatch against its path relative to `base`).

What the files say is read by `pytest_iac.tfconfig`. A directory with a file the reader
cannot read counts as having a backend: it is checked, and Terraform's plan says what is
wrong, rather than passed over in silence.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from pytest_iac import tfconfig
from pytest_iac.workspace import NOT_MODULES

# Never searched for live configuration: what is not part of a module, and dependencies.
_NEVER_ENTER = NOT_MODULES | {"node_modules", "venv", "site-packages"}
DEFAULT_STATE = "terraform.tfstate"  # a local backend's state without a `path`


def _walk_module_dirs(top: Path) -> Iterator[Path]:
    """Directories with Terraform files under `top`, hidden ones and `.terraform` skipped."""
    for current, dirs, _files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NEVER_ENTER)
        directory = Path(current)
        if tfconfig.is_module_dir(directory):
            yield directory


def has_state(directory: Path, module: tfconfig.Module | None = None) -> bool:
    """Does `directory` (`module`, if read already) declare a backend or hold a local state
    (see the discovery rule)?"""
    if (directory / DEFAULT_STATE).is_file():
        return True
    module = module or tfconfig.read_module(directory)
    return module.backend is not None or not module.readable


def local_sources(directory: Path) -> set[Path]:
    """The directories `directory` calls as local modules (resolved)."""
    return tfconfig.read_module(directory).local_module_dirs


def module_closure(directory: Path) -> set[Path]:
    """`directory` and every local module it calls, directly or not (resolved)."""
    return set(tfconfig.read_closure(directory))


def referenced_modules(trees: Iterable[Path]) -> set[Path]:
    """Every directory that some module under `trees` calls as a local module."""
    referenced: set[Path] = set()
    for tree in trees:
        for directory in _walk_module_dirs(tree):
            referenced.update(local_sources(directory))
    return referenced


def is_excluded(directory: Path, base: Path, exclude: Sequence[str]) -> bool:
    """Does `directory` (relative to `base`) match one of the `exclude` globs?"""
    try:
        relative = directory.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        relative = directory.resolve().as_posix()
    return any(
        fnmatch.fnmatch(relative, pattern.rstrip("/")) or fnmatch.fnmatch(f"{relative}/", pattern)
        for pattern in exclude
    )


def is_live_root(
    directory: Path,
    referenced: set[Path],
    *,
    base: Path,
    exclude: Sequence[str] = (),
    named: Sequence[Path] = (),
) -> bool:
    """The discovery rule for one directory (see the module documentation).

    `named`: resolved paths named as live, under which a root module without state counts.
    """
    resolved = directory.resolve()
    return (
        directory.is_dir()
        and directory.name not in _NEVER_ENTER
        and not directory.name.startswith(".")
        and tfconfig.is_module_dir(directory)
        and resolved not in referenced
        and (has_state(directory) or any(p == resolved or p in resolved.parents for p in named))
        and not is_excluded(directory, base, exclude)
    )


def find_live_roots(
    paths: Sequence[Path], *, base: Path | None = None, exclude: Sequence[str] = ()
) -> list[Path]:
    """Live root modules under `paths`, sorted; modules called by others are left out."""
    base = base or Path.cwd()
    referenced = referenced_modules(paths)
    roots = {
        directory.resolve()
        for path in paths
        for directory in _walk_module_dirs(path)
        if is_live_root(directory, referenced, base=base, exclude=exclude)
    }
    return sorted(roots)


def relative_name(directory: Path, base: Path) -> str:
    try:
        return directory.resolve().relative_to(base.resolve()).as_posix() or "."
    except ValueError:
        return directory.resolve().as_posix()
