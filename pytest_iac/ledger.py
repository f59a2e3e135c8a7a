"""The ledger: a durable record of every deployment, from before its apply to after its destroy.

One JSON file per deployment in a per-project directory, written (temporary file, fsync,
rename, fsync of the directory) before the first `apply` starts and removed only after a
successful destroy. Whatever kills a run (a second Ctrl-C, SIGKILL, a dead xdist worker, a
power cut), what it deployed is still listed, with what it takes to destroy it:
`pytest --iac-cleanup` reads the ledger.

Records hold paths and names, never values: variables are in a var file (mode 0600) that the
record points to. A record is only a claim, so before the record is written the deployment's
working directory gets a marker file holding a random token the record holds too
(`MARKER`, like CACHEDIR.TAG): `--iac-cleanup` acts only on a record whose working directory
is under the project's `runs/` directory and carries the marker with the record's token.
The process that deploys holds an exclusive lock on that marker until the deployment is
destroyed or the process ends: a record whose marker lock can be taken belongs to a process
that is gone, whatever host it ran on or pid it had. The lock lives with the deployment, not
in the ledger directory, so removing the ledger directory mid-run cannot make a live
deployment look abandoned; records this process still holds are written again when found
missing.
No pytest import here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pytest_iac.sandbox import Event, Stack

log = logging.getLogger("pytest_iac")

_SUFFIX = ".json"
MARKER = ".pytest-iac-deployment"  # in a working directory pytest-iac made
_MARKER_LINE = "pytest-iac deployment {token}\n"
FORMAT = 2  # 2: a marker token instead of an owner lock file in the ledger


class BadRecord(ValueError):
    """A ledger file that is not a record this pytest-iac can act on."""


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
    marker: str  # the token in the working directory's marker file
    env_names: list[str] = field(default_factory=list)  # extra env of the stack: names only
    notes: dict[str, str] = field(default_factory=dict)  # what hooks said (aws: moto)
    kept: str = ""  # why it was kept on purpose (--iac-teardown), if it was
    destroy_command: str = ""
    format: int = FORMAT

    @classmethod
    def from_json(cls, data: object) -> Record:
        """The record in `data`; `BadRecord` names the first field that is missing or wrong."""
        if not isinstance(data, dict):
            raise BadRecord(f"not a JSON object but {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise BadRecord(
                f"record format {data.get('format')!r}; this pytest-iac reads format {FORMAT}"
            )
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise BadRecord(f"field {f.name!r} is missing")
                continue
            if not _has_type(data[f.name], str(f.type)):
                raise BadRecord(
                    f"field {f.name!r} is {type(data[f.name]).__name__} "
                    f"({data[f.name]!r:.60}), not {f.type}"
                )
            values[f.name] = data[f.name]
        return cls(**values)

    def describe(self) -> str:
        why = f", kept: {self.kept}" if self.kept else ""
        return (
            f"{self.module} (test {self.test}, run {self.run_id}/{self.worker}, "
            f"started {self.started}, pid {self.pid} on {self.host}{why})"
        )


def _has_type(value: object, annotation: str) -> bool:
    if annotation == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation == "str":
        return isinstance(value, str)
    if annotation == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if annotation == "dict[str, str]":
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    raise AssertionError(f"no check for {annotation}")  # a new field needs one


@dataclass(frozen=True)
class Entry:
    """A record as found on disk."""

    path: Path
    record: Record


@dataclass(frozen=True)
class Damaged:
    """A ledger file that cannot be read as a record: kept, and named by `--iac-cleanup`."""

    path: Path
    reason: str
    data: object = None  # what could be parsed, if anything


@dataclass
class Scan:
    entries: list[Entry] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)


class Ledger:
    """This process's view of a project's ledger directory."""

    def __init__(self, directory: Path, *, run_id: str = "", worker: str = "main") -> None:
        self.directory = directory
        self.run_id = run_id
        self.worker = worker
        self.made = 0  # deployments recorded by this process
        self.destroyed = 0  # of those, destroyed
        self._records: dict[Path, tuple[Path, Record]] = {}  # stack workdir -> its record
        self._markers: dict[Path, IO[str]] = {}  # workdir -> its marker, locked while we live

    @property
    def runs(self) -> Path:
        """Where the project's working directories are: the only place cleanup acts in."""
        return self.directory.parent / "runs"

    # Hooked into every Stack of the run (Sandbox.hooks)

    def hook(self, event: Event, stack: Stack) -> None:
        if event == "before-apply" and stack.workdir not in self._records:
            self.add(stack)
        elif event == "not-applied":
            self.discard(stack)
        elif event == "destroyed":
            self.remove(stack)

    # Writing

    def add(self, stack: Stack) -> Path:
        """Mark `stack`'s working directory and record it durably; call before its first apply."""
        self._restore()
        token = secrets.token_hex(16)
        self._markers[stack.workdir] = _write_marker(stack.workdir, token)
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
            marker=token,
            env_names=sorted(k for k in stack.env if k != "TF_DATA_DIR"),
            notes=dict(stack.notes),
            destroy_command=stack.destroy_command(),
        )
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{stack.workdir.name}-{secrets.token_hex(4)}"
        path = self.directory / f"{name}{_SUFFIX}"
        _write_record(path, record)
        self._records[stack.workdir] = (path, record)
        self.made += 1
        return path

    def remove(self, stack: Stack) -> None:
        """Forget `stack`: it was destroyed."""
        found = self._records.pop(stack.workdir, None)
        if found is not None:
            remove_durably(found[0])
            self.destroyed += 1
        marker = self._markers.pop(stack.workdir, None)
        if marker is not None:
            marker.close()  # releases the lock
        self._restore()

    def discard(self, stack: Stack) -> None:
        """Forget `stack` uncounted: its apply stopped before it deployed anything."""
        if stack.workdir in self._records:
            self.made -= 1
            self.destroyed -= 1  # counted by `remove`, and nothing was deployed
        self.remove(stack)

    def mark_kept(self, stack: Stack, why: str) -> None:
        """Note in the record that `stack` is kept on purpose (it stays in the ledger)."""
        found = self._records.get(stack.workdir)
        if found is None:
            return
        path, record = found
        record = dataclasses.replace(record, kept=why)
        self._records[stack.workdir] = (path, record)
        _write_record(path, record)
        self._restore()

    def record_path(self, stack: Stack) -> Path | None:
        found = self._records.get(stack.workdir)
        return found[0] if found else None

    def _restore(self) -> None:
        """Write again the records of this process's deployments that someone removed."""
        for path, record in self._records.values():
            if path.exists():
                continue
            log.warning(
                "pytest-iac: the ledger record %s of a deployment still in place was "
                "removed; writing it again",
                path,
            )
            try:
                _write_record(path, record)
            except OSError as error:  # not this call's business to fail: say it and go on
                log.error(
                    "pytest-iac: could not write %s again (%s); its deployment: %s, destroy: %s",
                    path,
                    error,
                    record.workdir,
                    record.destroy_command,
                )

    # Reading

    def scan(self) -> Scan:
        """Every record in the ledger, oldest first, and every file that is not one."""
        found = Scan()
        if not self.directory.is_dir():
            return found
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue  # removed meanwhile: destroyed by its owner
            except (OSError, ValueError) as error:
                found.damaged.append(Damaged(path, f"cannot be read: {error}"))
                continue
            try:
                data = json.loads(text)
            except ValueError as error:
                found.damaged.append(Damaged(path, f"is not valid JSON ({error})"))
                continue
            try:
                found.entries.append(Entry(path, Record.from_json(data)))
            except BadRecord as error:
                found.damaged.append(Damaged(path, str(error), data))
        return found

    def entries(self) -> list[Entry]:
        """Every readable record in the ledger, oldest first."""
        return self.scan().entries

    def is_live(self, record: Record) -> bool:
        """Whether the process that made `record` still runs (holds its marker's lock)."""
        workdir = Path(record.workdir)
        return workdir in self._markers or lock_is_held(workdir / MARKER, "flock")

    def check(self, record: Record) -> str:
        """Why `--iac-cleanup` must not act on `record` ('' when it may): its working
        directory is not one pytest-iac made for this very record, or it names paths
        outside it."""
        workdir = Path(record.workdir)
        runs = self.runs.resolve()
        if not workdir.is_absolute() or not _inside(workdir.resolve(), runs):
            return f"its working directory {workdir} is not under this project's {runs}"
        if not workdir.is_dir():
            return f"its working directory {workdir} (with the state) is gone"
        if not _marker_matches(workdir, record.marker):
            return f"its working directory {workdir} has no pytest-iac marker for this record"
        for name in ("module_dir", "tf_data_dir"):
            path = Path(getattr(record, name))
            if not path.is_absolute() or not _inside(path.resolve(), workdir.resolve()):
                return f"its {name} {path} is outside its working directory {workdir}"
        return ""

    def forget(self, entry: Entry | Damaged) -> None:
        """Remove a record (its deployment was destroyed, or provably never existed)."""
        remove_durably(entry.path)

    def close(self) -> None:
        """Release this process's marker locks (its deployments can now be cleaned up)."""
        self._restore()
        for marker in self._markers.values():
            marker.close()
        self._markers.clear()


def other_ledgers(directory: Path) -> list[tuple[Path, int, str]]:
    """The other non-empty ledgers beside `directory` (one per project in the same home):
    each with its number of records and the module of one of them."""
    found = []
    for other in sorted(directory.parent.parent.glob(f"*/{directory.name}")):
        if other == directory:
            continue
        scan = Ledger(other).scan()
        count = len(scan.entries) + len(scan.damaged)
        if count:
            found.append((other, count, scan.entries[0].record.module if scan.entries else ""))
    return found


def lock_is_held(path: Path, kind: Literal["flock", "fcntl"]) -> bool:
    """Whether a process holds a lock on `path` (a missing file holds none); never waits.

    `flock`: the lock on a marker; `fcntl`: the POSIX lock Terraform's local backend takes
    on its state file for as long as a command runs (the two kinds do not see each other).
    """
    flags = os.O_RDONLY if kind == "flock" else os.O_RDWR  # fcntl write locks need write
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if kind == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def _inside(path: Path, directory: Path) -> bool:
    return directory in path.parents


def _write_marker(workdir: Path, token: str) -> IO[str]:
    """Write `workdir`'s marker, durably, and lock it for as long as this process lives."""
    fd = os.open(workdir / MARKER, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    handle = os.fdopen(fd, "r+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never waits
        handle.write(_MARKER_LINE.format(token=token))
        handle.write("Made by pytest-iac; `pytest --iac-cleanup` destroys and deletes it.\n")
        handle.flush()
        os.fsync(handle.fileno())
        _fsync_dir(workdir)
    except BaseException:
        handle.close()
        raise
    return handle


def _marker_matches(workdir: Path, token: str) -> bool:
    try:
        fd = os.open(workdir / MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
        first = f.readline(200)
    return bool(token) and secrets.compare_digest(first, _MARKER_LINE.format(token=token))


def state_location(stack: Stack) -> str:
    """Where the deployment's state lives: the backend init configured, else the local file."""
    backend = stack.data_dir / "terraform.tfstate"
    with contextlib.suppress(OSError, ValueError):
        kind = json.loads(backend.read_text(encoding="utf-8")).get("backend", {}).get("type")
        if kind and kind != "local":
            return f"{kind} backend (configured in {backend})"
    return str(stack.module_dir / "terraform.tfstate")


def _write_record(path: Path, record: Record) -> None:
    write_durably(path, json.dumps(asdict(record), indent=2) + "\n")


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
    """Remove `path` and make that durable; a file (or directory) already gone is fine."""
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

    def summary(
        self, left: int, ledger: Path, *, detailed: bool = True, rootdir: Path | None = None
    ) -> Summary | None:
        """The run's summary section; None when the run deployed nothing and left nothing.

        `left`: how many of the run's records are still in the `ledger` directory. Not
        `detailed` (pytest without -v), every line fits 120 columns: modules relative to
        `rootdir`, no working directories or commands.
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
                if detailed:
                    lines += [f"{title}: {module} in {workdir}", f"  destroy: {command}"]
                else:
                    lines.append(f"{title}: {_relative(module, rootdir)} ({Path(workdir).name})")
        if not detailed and (self.kept or self.failed):
            lines.append("(-v shows where each is and the command that destroys it)")
        lines += [f"leaked: {leak}" for leak in self.leaked]
        if left:
            where = f" ({ledger})" if detailed else ""
            lines.append(
                f"{left} deployment(s) of this run are in the ledger{where}: "
                "`pytest --iac-cleanup` destroys them (`--iac-cleanup-dry-run` lists them)"
            )
        if not detailed:
            lines = [line if len(line) <= _WIDTH else line[: _WIDTH - 3] + "..." for line in lines]
        return Summary(
            title="pytest-iac" + (f": deployments {what}" if what else ""),
            lines=lines,
            trouble=trouble,
            warning=bool(left) and not trouble,
        )


_WIDTH = 120  # the summary's lines without -v


def _relative(module: str, rootdir: Path | None) -> str:
    path = Path(module)
    if rootdir is not None and path.is_relative_to(rootdir):
        return str(path.relative_to(rootdir))
    return module


@dataclass(frozen=True)
class Summary:
    """What the terminal summary shows of a run's deployments."""

    title: str
    lines: list[str]
    trouble: bool  # something failed, leaked or was left behind: shown in red
    warning: bool  # only deployments kept on purpose remain: shown in yellow
