"""One test run's pytest-iac state: its engine, sandbox, names, and what it kept.

Built by the plugin from options; usable without pytest (a script can make one too).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from pytest_iac.cleanup import Guard
from pytest_iac.engine import Engine, Settings, Terraform, find_engine
from pytest_iac.errors import IacError
from pytest_iac.init_cache import InitCache, engine_identity
from pytest_iac.ledger import Ledger, Tally
from pytest_iac.progress import Progress
from pytest_iac.sandbox import Hook, Sandbox, Stack
from pytest_iac.shared import SharedDeployments

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


def find_project(inifile: Path | None, invocation_dir: Path) -> Path:
    """The project pytest runs in: the ini file's directory, else the git work tree's top,
    else the invocation directory.

    Not pytest's rootdir: that is the common ancestor of the command line's paths, and a
    plugin option's value in the space form (`--iac-provider-mirror /opt/mirror`) counts
    as one, since plugin options are unknown when pytest picks it.
    """
    if inifile is not None:
        return inifile.resolve().parent
    start = invocation_dir.resolve()
    for directory in (start, *start.parents):
        if (directory / ".git").exists():  # a directory, or a file in a linked worktree
            return directory
    return start


def project_dir(project: Path) -> Path:
    """This project's directory under `home()`: outside the source tree, one per checkout."""
    project = project.resolve()
    digest = hashlib.sha256(str(project).encode()).hexdigest()[:10]
    return home() / "projects" / f"{_slug(project.name, 30) or 'root'}-{digest}"


class HomeError(IacError):
    """pytest-iac's home cannot be written."""


def _home_error(path: Path, error: OSError) -> HomeError:
    where = (
        f"PYTEST_IAC_HOME is {os.environ['PYTEST_IAC_HOME']!r}"
        if os.environ.get("PYTEST_IAC_HOME")
        else "PYTEST_IAC_HOME is not set, so it is $XDG_STATE_HOME/pytest-iac"
    )
    return HomeError(
        f"pytest-iac cannot write its home: {path}: {error.strerror or error}. It keeps "
        f"working directories, state and the ledger there ({where}); set PYTEST_IAC_HOME "
        "to a directory you can write."
    )


def new_run_id() -> str:
    return secrets.token_hex(4)


def _slug(text: str, length: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length].strip("-")


@dataclass
class IacRun:
    """The engine, sandbox and bookkeeping of one pytest run (or one xdist worker's share)."""

    project: Path  # `find_project()`: its ledger and init cache are this project's
    run_id: str
    settings: Settings
    engine_spec: str | None = None  # what the user asked for; None: look on PATH
    reuse_init: bool = True  # what init made is kept and reused (`pytest_iac.init_cache`)
    teardown: Teardown = "always"
    worker: str = "main"
    kept: list[Stack] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)  # given to the sandbox: guards, tags
    guards: list[Guard] = field(default_factory=list)  # asked by --iac-cleanup per record
    failed: list[Stack] = field(default_factory=list)  # destroys that failed or were aborted
    leaked: list[str] = field(default_factory=list)  # found by a sweep after the destroys
    interrupts: int = 0  # Ctrl-C/SIGTERM seen: a destroy lets the first one wait, not the next
    finishing: bool = False  # pytest is finishing the session: teardowns must not raise
    progress: Progress | None = None  # the running commands, when a display shows them
    notify: Callable[[str], None] | None = None  # says something on the terminal now
    share_sessions: bool = True  # under xdist, session deployments are the run's (`shared`)
    handed_over: list[Stack] = field(default_factory=list)  # made here, destroyed by the run
    _engine: Engine | None = None
    _ledger: Ledger | None = None
    _terraform: Terraform | None = None
    _sandbox: Sandbox | None = None
    _init_cache: InitCache | None = None
    _home_ready: bool = False  # `prepare_home()` made the run's directory
    _marker: IO[str] | None = None  # the run's directory's marker, locked while the run lives
    # What runs that ended without cleaning up (killed) left, removed by `prepare_home()`.
    removed_leftovers: list[str] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = find_engine(self.engine_spec)
        return self._engine

    @property
    def workdir(self) -> Path:
        return project_dir(self.project) / "runs" / f"{self.run_id}-{self.worker}"

    def prepare_home(self) -> None:
        """Make this run's directory; `HomeError` (naming the path) when the home is unwritable.

        Only what needs the home calls this: a run that deploys nothing never does.
        """
        if self._home_ready:
            return
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._marker = _mark_run(self.workdir)
            self.ledger.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _home_error(Path(error.filename or self.workdir), error) from None
        self._home_ready = True
        self.removed_leftovers = remove_ended_runs(self.workdir.parent)
        if self.removed_leftovers:
            log.info(leftovers_line(self.workdir.parent, self.removed_leftovers))

    @property
    def terraform(self) -> Terraform:
        if self._terraform is None:
            self.prepare_home()
            self._terraform = Terraform(self.engine, self.settings, self.workdir)
            self._terraform.progress = self.progress
            if self.notify is not None:
                self._terraform.notify = self.notify
        return self._terraform

    @property
    def init_cache(self) -> InitCache | None:
        """What init made, kept for reuse by deployments and drift checks alike."""
        if self.reuse_init and self._init_cache is None:
            self._init_cache = InitCache(
                project_dir(self.project) / "init-cache", engine_identity(self.terraform)
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
    def shared(self) -> SharedDeployments | None:
        """Under pytest-xdist (in a worker), where session deployments are shared; else None.

        Not with --iac-teardown on-success or never (each worker keeps what it made), nor
        when `share_sessions` is off (the moto sandbox: a server per worker).
        """
        if self.worker == "main" or self.teardown != "always" or not self.share_sessions:
            return None
        return self.shared_deployments()

    def shared_deployments(self) -> SharedDeployments:
        return SharedDeployments(project_dir(self.project) / "runs" / f"{self.run_id}-shared")

    @property
    def ledger(self) -> Ledger:
        """The project's ledger: every deployment is recorded before its apply."""
        if self._ledger is None:
            self._ledger = Ledger(
                project_dir(self.project) / "ledger", run_id=self.run_id, worker=self.worker
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
        made = self._terraform is not None or self._home_ready
        if made and not (sandboxes.is_dir() and any(sandboxes.iterdir())):
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self._marker is not None:
            self._marker.close()  # the run is over: a later run may remove what is left
            self._marker = None


# A run's directory holds a marker naming it, locked (flock) for as long as the run lives:
# a later run removes what a killed one left only where the marker is there and unlocked.
RUN_MARKER = ".pytest-iac-run"
_RUN_MARKER_LINE = "pytest-iac run {name}\n"


def _mark_run(directory: Path) -> IO[str]:
    """Mark `directory` as this run's; the marker stays locked until it is closed. It is
    locked before it is renamed into place: no moment shows it unlocked."""
    temporary = directory / f"{RUN_MARKER}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never waits
        handle.write(_RUN_MARKER_LINE.format(name=directory.name))
        handle.write("Made by pytest-iac; a later run removes this directory once it ended.\n")
        handle.flush()
        temporary.replace(directory / RUN_MARKER)
    except BaseException:
        handle.close()
        temporary.unlink(missing_ok=True)
        raise
    return handle


def remove_ended_runs(runs: Path) -> list[str]:
    """Remove what runs that ended without cleaning up (killed) left under `runs`, and say
    what (paths relative to `runs`).

    Only a directory whose marker names it and is unlocked (its run's process is gone) is
    touched, and the lock is held meanwhile. Its deployments stay (the ledger lists them,
    `--iac-cleanup` destroys them): only its `drift` working directories go (they may hold
    plans: copies of state), and the whole directory once no deployment is in it. Symlinks
    are never followed.
    """
    removed: list[str] = []
    if runs.is_symlink() or not runs.is_dir():
        return removed
    with os.scandir(runs) as entries:
        directories = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    for directory in sorted(directories):
        with _ended_run(directory) as ended:
            if not ended:
                continue
            sandboxes = directory / "sandboxes"
            if sandboxes.is_symlink() or (sandboxes.is_dir() and any(sandboxes.iterdir())):
                drift = directory / "drift"
                if drift.is_dir() and not drift.is_symlink():
                    shutil.rmtree(drift, ignore_errors=True)
                    removed.append(f"{directory.name}/drift")
            else:
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory.name)
    return removed


@contextlib.contextmanager
def _ended_run(directory: Path) -> Iterator[bool]:
    """Whether `directory` is the directory of a run that ended; its marker stays locked
    while the block runs (another run's sweep waits for nothing and leaves it alone)."""
    try:
        # Non-blocking: a FIFO in its place must not stop the run.
        fd = os.open(directory / RUN_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        yield False  # no marker (or a symlink): not provably a run's directory
        return
    with os.fdopen(fd, encoding="utf-8", errors="replace") as marker:
        try:
            fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False  # its run still lives
            return
        regular = stat.S_ISREG(os.fstat(marker.fileno()).st_mode)
        yield regular and marker.readline(200) == _RUN_MARKER_LINE.format(name=directory.name)


def leftovers_line(runs: Path, removed: Sequence[str]) -> str:
    """One line saying what `remove_ended_runs` removed."""
    return (
        f"pytest-iac: removed what runs that ended without cleaning up left in {runs}: "
        + ", ".join(removed)
    )
