"""Working copies of modules, and the private files written beside them. No pytest here.

`copy_module()` copies a module with the local modules it calls (`source = "../network"`,
found by `pytest_iac.tfconfig`) at the same relative places, leaving out what is never part
of a module (`skipped()`): Terraform's own directory and state files, plan
files, hidden directories, caches. `write_private()` writes a file only its owner can read:
var files and backend settings may hold secrets.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from pytest_iac import tfconfig

log = logging.getLogger("pytest_iac")

# Never part of a module: Terraform's data directory, caches, VCS (hidden ones all go).
NOT_MODULES = frozenset({".terraform", "__pycache__", ".pytest_cache", ".git"})
_STATE_FILES = ("terraform.tfstate", ".terraform.tfstate.lock.info")


def skipped(name: str, is_dir: bool) -> bool:
    """Is a file or directory of this name never part of a copy of a module?"""
    if name in NOT_MODULES or name.startswith(_STATE_FILES) or name.endswith(".tfplan"):
        return True
    return is_dir and name.startswith(".")


def copy_module(source: Path, destination: Path, anchor: Path | None = None) -> Path:
    """Copy `source` and the local modules it calls; return where `source` landed.

    The copies keep their layout relative to each other (and to `anchor`, by default the
    deepest directory holding them all), so relative `source` paths resolve in the copy as
    they do in the original tree. A file the reader cannot read may call local modules
    that are then not copied: a warning names it (init will say what is missing); the rest
    is copied as usual.
    """
    closure = tfconfig.read_closure(source)
    for module in closure.values():
        for unreadable in module.unreadable:
            log.warning(
                "could not read %s (%s): local modules it calls, if any, are not copied "
                "along with %s",
                unreadable.path,
                unreadable.reason,
                source,
            )
    source = source.resolve()
    needed = set(closure)
    anchor = anchor or Path(os.path.commonpath(needed))
    for directory in sorted(needed):
        if any(parent in needed for parent in directory.parents):
            continue  # copied with its parent
        shutil.copytree(
            directory,
            destination / directory.relative_to(anchor),
            ignore=_ignored,
            dirs_exist_ok=True,
        )
    return destination / source.relative_to(anchor)


def _ignored(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if skipped(n, Path(directory, n).is_dir())}


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: var files and backend settings hold secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
