"""Upgrade tests: deploy a module as it was at a git ref, then move that deployment to the
working tree's version. No pytest import here.

    stack = iac_deploy(".", vars={...}, from_ref="v1.2.0")   # the module as tagged v1.2.0
    plan = stack.upgrade()                                    # the working tree, same state
    assert not plan.replaces and not plan.deletes
    stack.apply()                                             # upgraded outputs

An `UpgradeStack` takes its code from the repository at the ref (`vcs.module_at`, resolved
before anything is made: `vcs.RefError` otherwise), laid out as in the repository. The
working tree's code is laid out the same way, so `upgrade()` swaps the code in place around
the state: the module's directory, the ledger's record and the destroy command stay right
whichever version the stack ends in, and teardown destroys that.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_iac.plan import Plan
from pytest_iac.sandbox import ERRORED_STATE, OWN_STATE_FILE, Stack
from pytest_iac.vcs import ModuleAtRef, RefError, module_at, write_module
from pytest_iac.workspace import copy_module

__all__ = ["ModuleAtRef", "RefError", "UpgradeStack", "module_at"]

# What a deployment keeps beside its code: the local backend's state (and workspaces), a
# state Terraform could not save, and the override file that keeps the state there (never a
# moment without: a `terraform init` by hand in the copy would otherwise configure the
# module's own backend).
_KEPT = {
    *("terraform.tfstate", "terraform.tfstate.backup", "terraform.tfstate.d"),
    *(ERRORED_STATE, OWN_STATE_FILE),
}


class UpgradeStack(Stack):
    """A deployment of a module as it was at a git ref; `upgrade()` moves it to the working
    tree's version of the module (`source`)."""

    def __init__(self, *args: Any, at: ModuleAtRef, **options: Any) -> None:
        self.from_ref = at
        self.upgraded = False  # the code in place is the working tree's
        self._upgrade_applied = False  # ... and was applied: there is no way back
        super().__init__(*args, **options)

    def __repr__(self) -> str:
        version = "the working tree" if self.upgraded else self.from_ref.describe()
        return f"<UpgradeStack {self.source} ({version}) in {self.workdir}>"

    def _place(self, source: Path, destination: Path) -> Path:
        if self.upgraded:
            placed = copy_module(source, destination, anchor=self.from_ref.root)
        else:
            placed = write_module(self.from_ref, destination)
        if placed != destination / self.from_ref.module:
            raise RefError(f"{source} is not at {self.from_ref.module} in {self.from_ref.root}")
        return placed

    def upgrade(self, vars: Mapping[str, Any] | None = None) -> Plan:
        """Put the working tree's code in place of the ref's, keeping the state, and return
        the plan of that upgrade; `apply()` then applies it.

        `vars` (a variable the new version requires, say) join the stack's own: `apply()`
        and the teardown's destroy use them too. Should init or plan fail with the new code,
        the ref's code (and variables) are put back, so that teardown destroys with the code
        that made the state.
        """
        before = dict(self.vars)
        if not self.upgraded:
            self._swap_code(upgraded=True)
        self.vars.update(vars or {})
        try:
            return self.plan()
        except BaseException:
            if not self._upgrade_applied:
                self.vars = before
                self._swap_code(upgraded=False)
            raise

    def apply(self, vars: Mapping[str, Any] | None = None) -> UpgradeStack:
        self._upgrade_applied = self._upgrade_applied or self.upgraded
        super().apply(vars)
        return self

    def _swap_code(self, *, upgraded: bool) -> None:
        """Replace the code under `src` with the ref's or the working tree's version."""
        staging = self.workdir / "next"
        shutil.rmtree(staging, ignore_errors=True)
        was, self.upgraded = self.upgraded, upgraded
        try:
            self._place(self.source, staging)  # first: a failure here leaves the code as it was
        except BaseException:
            self.upgraded = was
            shutil.rmtree(staging, ignore_errors=True)
            raise
        src = self.workdir / "src"
        _remove_code(src, self.module_dir)
        shutil.copytree(staging, src, symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(staging)
        self._initialised = False  # the new code is initialised afresh


def _remove_code(directory: Path, module_dir: Path) -> None:
    """Remove everything under `directory` but what `_KEPT` names in `module_dir`."""
    for child in directory.iterdir():
        if child == module_dir or child in module_dir.parents:
            _remove_code(child, module_dir)
        elif directory == module_dir and child.name in _KEPT:
            continue
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
