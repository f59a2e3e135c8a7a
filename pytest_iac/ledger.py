"""The ledger: a durable record of every deployment, from before its apply to after its destroy.

One JSON file per deployment in a per-project directory, written (temporary file, fsync,
rename, fsync of the directory) before the first `apply` starts and removed only after a
successful destroy. Whatever kills a run (a second Ctrl-C, SIGKILL, a dead xdist worker, a
power cut), what it deployed is still listed, with what it takes to destroy it:
`pytest --iac-cleanup` reads the ledger.

Records hold paths and names, never values: variables are in a var file (mode 0600) that the
record points to. Every process holds an exclusive lock on an owner file for as long as it
runs, and each record names its owner: a record whose owner lock can be taken belongs to a
process that is gone, whatever host it ran on or whatever pid it had.
No pytest import here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from pytest_iac.sandbox import Event, Stack

log = logging.getLogger("pytest_iac")

_SUFFIX = ".json"
_OWNERS = "owners"
FORMAT = 1


@dataclass(frozen=True)
class Record:
    """What the ledger knows of one deployment: enough to find and destroy it."""

    module: str  # the module under test
    workdir: str  # the deployment's working directory (copy of the module, state, var file)
    module_dir: str  # where terraform runs: the copy of the module inside workdir
    state: str  # where the state is: a local file, or the backend named in the module
    var_files: list[str]  # paths only, never values
    engine: list[str]  # the argv that runs terraform, as the run used it
    tf_data_dir: str
    run_id: str
    worker: str
    test: str  # the test (or module, for shared deployments) that deployed it
    started: str  # ISO 8601, UTC
    pid: int
    host: str
    owner: str  # the owner lock file of the process that deployed it
    env_names: list[str] = field(default_factory=list)  # extra env of the stack: names only
    kept: str = ""  # why it was kept on purpose (--iac-teardown), if it was
    destroy_command: str = ""
    format: int = FORMAT

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        why = f", kept: {self.kept}" if self.kept else ""
        return (
            f"{self.module} (test {self.test}, run {self.run_id}/{self.worker}, "
            f"started {self.started}, pid {self.pid} on {self.host}{why})"
        )


@dataclass(frozen=True)
class Entry:
    """A record as found on disk."""

    path: Path
    record: Record


class Ledger:
    """This process's view of a project's ledger directory."""

    def __init__(self, directory: Path, *, run_id: str = "", worker: str = "main") -> None:
        self.directory = directory
        self.run_id = run_id
        self.worker = worker
        self.made = 0  # deployments recorded by this process
        self.destroyed = 0  # of those, destroyed
        self._records: dict[Path, Path] = {}  # stack workdir -> its record
        self._owner: IO[str] | None = None
        self._owner_path: Path | None = None

    # Hooked into every Stack of the run (Sandbox.hooks)

    def hook(self, event: Event, stack: Stack) -> None:
        if event == "before-apply" and stack.workdir not in self._records:
            self.add(stack)
        elif event == "destroyed":
            self.remove(stack)

    # Writing

    def add(self, stack: Stack) -> Path:
        """Record `stack` durably; call before its first apply."""
        owner = self._own()
        record = Record(
            module=str(stack.source),
            workdir=str(stack.workdir),
            module_dir=str(stack.module_dir),
            state=state_location(stack),
            var_files=[str(f) for f in stack.var_file_paths],
            engine=list(stack.terraform.engine.argv),
            tf_data_dir=str(stack.data_dir),
            run_id=self.run_id,
            worker=self.worker,
            test=stack.test_id,
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            pid=os.getpid(),
            host=socket.gethostname(),
            owner=str(owner),
            env_names=sorted(k for k in stack.env if k != "TF_DATA_DIR"),
            destroy_command=stack.destroy_command(),
        )
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{stack.workdir.name}-{secrets.token_hex(4)}"
        path = self.directory / f"{name}{_SUFFIX}"
        write_durably(path, json.dumps(asdict(record), indent=2) + "\n")
        self._records[stack.workdir] = path
        self.made += 1
        return path

    def remove(self, stack: Stack) -> None:
        """Forget `stack`: it was destroyed."""
        path = self._records.pop(stack.workdir, None)
        if path is not None:
            remove_durably(path)
            self.destroyed += 1

    def mark_kept(self, stack: Stack, why: str) -> None:
        """Note in the record that `stack` is kept on purpose (it stays in the ledger)."""
        path = self._records.get(stack.workdir)
        if path is None:
            return
        entry = read(path)
        if entry is not None:
            data = asdict(entry.record)
            data["kept"] = why
            write_durably(path, json.dumps(data, indent=2) + "\n")

    def record_path(self, stack: Stack) -> Path | None:
        return self._records.get(stack.workdir)

    # Reading

    def entries(self) -> list[Entry]:
        """Every record in the ledger, oldest first; unreadable files are skipped (logged)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            entry = read(path)
            if entry is not None:
                found.append(entry)
        return found

    def is_live(self, record: Record) -> bool:
        """Whether the process that made `record` still runs (holds its owner lock)."""
        owner = Path(record.owner)
        if self._owner_path is not None and owner == self._owner_path:
            return True
        try:
            fd = os.open(owner, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock we took
        return False

    def forget(self, entry: Entry) -> None:
        """Remove a record (its deployment was destroyed by `pytest --iac-cleanup`)."""
        remove_durably(entry.path)

    def prune_owners(self) -> None:
        """Remove owner files of processes that are gone and left no record."""
        owners = self.directory / _OWNERS
        if not owners.is_dir():
            return
        referenced = {Path(e.record.owner) for e in self.entries()}
        for owner in owners.iterdir():
            if owner == self._owner_path or owner in referenced:
                continue
            with contextlib.suppress(OSError):
                fd = os.open(owner, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    owner.unlink()
                except BlockingIOError:
                    pass
                finally:
                    os.close(fd)

    # This process's owner lock

    def _own(self) -> Path:
        if self._owner_path is None:
            owners = self.directory / _OWNERS
            owners.mkdir(parents=True, exist_ok=True)
            name = f"{self.run_id or 'run'}-{self.worker}-{os.getpid()}-{secrets.token_hex(4)}"
            path = owners / f"{name}.lock"
            handle = path.open("a", encoding="utf-8")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never waits
            self._owner, self._owner_path = handle, path
        return self._owner_path

    def close(self) -> None:
        """Release the owner lock; remove the owner file when no record names it."""
        if self._owner is None or self._owner_path is None:
            return
        if not self._records:
            with contextlib.suppress(OSError):
                self._owner_path.unlink()
        self._owner.close()
        self._owner = None
        self._owner_path = None


def read(path: Path) -> Entry | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Entry(path, Record.from_json(data))
    except FileNotFoundError:
        return None  # removed meanwhile: destroyed by its owner
    except (OSError, ValueError, TypeError) as error:
        log.warning("pytest-iac: unreadable ledger record %s: %s", path, error)
        return None


def state_location(stack: Stack) -> str:
    """Where the deployment's state lives: the backend init configured, else the local file."""
    backend = stack.data_dir / "terraform.tfstate"
    with contextlib.suppress(OSError, ValueError):
        kind = json.loads(backend.read_text(encoding="utf-8")).get("backend", {}).get("type")
        if kind and kind != "local":
            return f"{kind} backend (configured in {backend})"
    return str(stack.module_dir / "terraform.tfstate")


def write_durably(path: Path, text: str) -> None:
    """Write `path` so that it is either absent or complete, even after a crash or power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Tally:
    """A run's deployments, counted for the terminal summary (summed over xdist workers)."""

    made: int = 0
    destroyed: int = 0
    kept: list[list[str]] = field(default_factory=list)  # [module, workdir, destroy command]
    failed: list[list[str]] = field(default_factory=list)  # the same, for failed destroys
    leaked: list[str] = field(default_factory=list)  # found by a sweep after the destroys

    def add(self, other: Tally) -> None:
        self.made += other.made
        self.destroyed += other.destroyed
        self.kept += other.kept
        self.failed += other.failed
        self.leaked += other.leaked

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def line(self) -> str:
        return (
            f"deployments: {self.made} made, {self.destroyed} destroyed, {len(self.kept)} kept, "
            f"{len(self.failed)} failed to destroy, {len(self.leaked)} leaked"
        )

    def summary(self, left: int, ledger: Path) -> Summary | None:
        """The run's summary section; None when the run deployed nothing and left nothing.

        `left`: how many of the run's records are still in the `ledger` directory.
        """
        if not (self.made or left or self.leaked):
            return None
        trouble = bool(self.failed or self.leaked or left > len(self.kept))
        found = (
            ("kept", self.kept),
            ("failed to destroy", self.failed),
            ("leaked", self.leaked),
            ("left in the ledger", left),
        )
        what = ", ".join(name for name, present in found if present)
        lines = [self.line()]
        for title, rows in (("kept", self.kept), ("failed to destroy", self.failed)):
            for module, workdir, command in rows:
                lines += [f"{title}: {module} in {workdir}", f"  destroy: {command}"]
        lines += [f"leaked: {leak}" for leak in self.leaked]
        if left:
            lines.append(
                f"{left} deployment(s) of this run are in the ledger ({ledger}): "
                "`pytest --iac-cleanup` destroys them (`--iac-cleanup-dry-run` lists them)"
            )
        return Summary(
            title="pytest-iac" + (f": deployments {what}" if what else ""),
            lines=lines,
            trouble=trouble,
            warning=bool(left) and not trouble,
        )


@dataclass(frozen=True)
class Summary:
    """What the terminal summary shows of a run's deployments."""

    title: str
    lines: list[str]
    trouble: bool  # something failed, leaked or was left behind: shown in red
    warning: bool  # only deployments kept on purpose remain: shown in yellow
