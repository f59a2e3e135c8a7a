"""One test run's pytest-iac state: its engine, sandbox, names, and what it kept.

Built by the plugin from options; usable without pytest (a script can make one too).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pytest_iac.engine import Engine, Settings, Terraform, find_engine
from pytest_iac.init_cache import InitCache, engine_identity
from pytest_iac.ledger import Ledger, Tally
from pytest_iac.sandbox import Hook, Sandbox, Stack

log = logging.getLogger("pytest_iac")

Teardown = Literal["always", "on-success", "never"]
TEARDOWN_POLICIES: tuple[Teardown, ...] = ("always", "on-success", "never")


def home() -> Path:
    """Where pytest-iac keeps working directories: `PYTEST_IAC_HOME`, else XDG state."""
    if os.environ.get("PYTEST_IAC_HOME"):
        return Path(os.environ["PYTEST_IAC_HOME"]).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "pytest-iac"


def plugin_cache() -> Path:
    """The provider plugin cache shared by every run: `PYTEST_IAC_PLUGIN_CACHE`, else XDG."""
    if os.environ.get("PYTEST_IAC_PLUGIN_CACHE"):
        return Path(os.environ["PYTEST_IAC_PLUGIN_CACHE"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pytest-iac" / "plugin-cache"


def project_dir(rootdir: Path) -> Path:
    """This project's directory under `home()`: outside the source tree, one per checkout."""
    rootdir = rootdir.resolve()
    digest = hashlib.sha256(str(rootdir).encode()).hexdigest()[:10]
    return home() / "projects" / f"{_slug(rootdir.name, 30) or 'root'}-{digest}"


def new_run_id() -> str:
    return secrets.token_hex(4)


def _slug(text: str, length: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length].strip("-")


@dataclass
class IacRun:
    """The engine, sandbox and bookkeeping of one pytest run (or one xdist worker's share)."""

    rootdir: Path
    run_id: str
    settings: Settings
    engine_spec: str | None = None  # what the user asked for; None: look on PATH
    reuse_init: bool = True  # what init made is kept and reused (`pytest_iac.init_cache`)
    teardown: Teardown = "always"
    worker: str = "main"
    kept: list[Stack] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)  # given to the sandbox: guards, tags
    failed: list[Stack] = field(default_factory=list)  # destroys that failed or were aborted
    leaked: list[str] = field(default_factory=list)  # found by a sweep after the destroys
    interrupts: int = 0  # Ctrl-C/SIGTERM seen: a destroy lets the first one wait, not the next
    finishing: bool = False  # pytest is finishing the session: teardowns must not raise
    _engine: Engine | None = None
    _ledger: Ledger | None = None
    _terraform: Terraform | None = None
    _sandbox: Sandbox | None = None
    _init_cache: InitCache | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = find_engine(self.engine_spec)
        return self._engine

    @property
    def workdir(self) -> Path:
        return project_dir(self.rootdir) / "runs" / f"{self.run_id}-{self.worker}"

    @property
    def terraform(self) -> Terraform:
        if self._terraform is None:
            self._terraform = Terraform(self.engine, self.settings, self.workdir)
        return self._terraform

    @property
    def init_cache(self) -> InitCache | None:
        """What init made, kept for reuse by deployments and drift checks alike."""
        if self.reuse_init and self._init_cache is None:
            self._init_cache = InitCache(
                project_dir(self.rootdir) / "init-cache", engine_identity(self.terraform)
            )
        return self._init_cache

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(
                self.terraform,
                self.workdir / "sandboxes",
                hooks=[*self.hooks, self.ledger.hook],
                init_cache=self.init_cache,
            )
        return self._sandbox

    @property
    def ledger(self) -> Ledger:
        """The project's ledger: every deployment is recorded before its apply."""
        if self._ledger is None:
            self._ledger = Ledger(
                project_dir(self.rootdir) / "ledger", run_id=self.run_id, worker=self.worker
            )
        return self._ledger

    def name(self, test_name: str, key: str) -> str:
        """A short DNS-safe name, unique to this run and `key`: `t-<test>-<hash>`."""
        digest = hashlib.sha256(f"{self.run_id}:{key}".encode()).hexdigest()[:6]
        return f"t-{_slug(test_name, 16) or 'test'}-{digest}"

    def tally(self) -> Tally:
        """This process's deployments, counted."""

        def row(stack: Stack) -> list[str]:
            return [str(stack.source), str(stack.workdir), stack.destroy_command()]

        made = self._ledger.made if self._ledger else 0
        destroyed = self._ledger.destroyed if self._ledger else 0
        kept, failed = [row(s) for s in self.kept], [row(s) for s in self.failed]
        return Tally(made, destroyed, kept, failed, list(self.leaked))

    def keep(self, stack: Stack, why: str) -> None:
        self.kept.append(stack)
        self.ledger.mark_kept(stack, why)
        log.warning(
            "kept %s (%s) in %s; destroy it with:\n  %s",
            stack.source,
            why,
            stack.workdir,
            stack.destroy_command(),
        )

    def close(self) -> None:
        """Remove the run's directory unless a deployment (kept, or not destroyed) is in it."""
        if self._ledger is not None:
            self._ledger.close()
        if self._terraform is not None:
            self._terraform.close()
        sandboxes = self.workdir / "sandboxes"
        if self._terraform is not None and not (sandboxes.is_dir() and any(sandboxes.iterdir())):
            shutil.rmtree(self.workdir, ignore_errors=True)
