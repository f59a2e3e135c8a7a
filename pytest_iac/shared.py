"""Session-scoped deployments under pytest-xdist: made once for the run, used by every worker.

pytest-xdist's documented pattern for session resources. Each shared deployment is keyed on
what it deploys. The first worker to want it takes a file lock in the run's shared directory
(under the run's home), deploys, and writes down where the deployment is: its working
directory and its ledger record. The others wait on the lock, then use that working directory
as it is: its state holds the outputs. No worker destroys it; the controller does, once every
worker is done, from the ledger records (`pytest_iac.cleanup`, as `pytest --iac-cleanup`
would). A worker killed meanwhile loses nothing: the record stays in the ledger until the
destroy succeeds. No pytest import here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_iac.cleanup import Guard, Outcome, cleanup
from pytest_iac.engine import Engine, Settings, Terraform
from pytest_iac.errors import IacError
from pytest_iac.ledger import Ledger, Scan
from pytest_iac.sandbox import Stack


@dataclass(frozen=True)
class Made:
    """Where a shared deployment is, as the worker that made it wrote down."""

    source: str
    workdir: str
    module_dir: str
    record: str  # its ledger record


class SharedStack(Stack):
    """A deployment another worker made: used in place, never copied, initialised or destroyed
    here (the controller destroys it at the end of the run)."""

    def __init__(self, terraform: Terraform, made: Made, **options: Any) -> None:
        self._made_module_dir = Path(made.module_dir)
        super().__init__(terraform, Path(made.source), Path(made.workdir), **options)
        self._initialised = True

    def _place(self, source: Path, destination: Path) -> Path:
        return self._made_module_dir

    def destroy(self) -> None:
        """Nothing: the deployment belongs to the run; the controller destroys it."""


class SharedDeployments:
    """The run's shared deployments: a lock and a note per key in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, key: str, deploy: Callable[[], Stack], ledger: Ledger) -> Stack | Made:
        """The deployment for `key`: made now by `deploy()` (a `Stack`), or by another worker.

        A deployment that failed is not tried again by the next worker: its error is raised.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        note = self.directory / f"{key}.json"
        with (self.directory / f"{key}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            if note.exists():
                found = json.loads(note.read_text(encoding="utf-8"))
                if "error" in found:
                    raise IacError(found["error"])
                return Made(**found)
            try:
                stack = deploy()
            except IacError as error:
                _write(note, {"error": str(error)})
                raise
            record = ledger.record_path(stack)
            made = Made(str(stack.source), str(stack.workdir), str(stack.module_dir), str(record))
            _write(note, asdict(made))
            return stack

    def records(self) -> list[Path]:
        """The ledger records of the deployments made."""
        if not self.directory.is_dir():
            return []
        found = []
        for note in sorted(self.directory.glob("*.json")):
            record = json.loads(note.read_text(encoding="utf-8")).get("record")
            if record:
                found.append(Path(record))
        return found

    def destroy(
        self,
        ledger: Ledger,
        *,
        settings: Settings,
        config_dir: Path,
        engine: Callable[[], Engine],
        guards: Sequence[Guard] = (),
        write: Callable[[str], None],
    ) -> Outcome:
        """Destroy every shared deployment still in the ledger, once every worker is done."""
        only = _Only(ledger, set(self.records()))
        outcome = Outcome()
        if only.scan().entries:
            # Every worker is done (they may not have exited yet): no one else destroys these.
            outcome = cleanup(
                only,
                settings=settings,
                config_dir=config_dir,
                engine=engine,
                force=True,
                guards=guards,
                write=write,
            )
        shutil.rmtree(self.directory, ignore_errors=True)  # what failed stays in the ledger
        return outcome


def key(name: str, source: Path, options: Mapping[str, Any]) -> str:
    """What makes two shared deployments one: the fixture, the module, and every option."""
    text = json.dumps([name, str(source), options], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Only(Ledger):
    """A view of a ledger that lists only the given records."""

    def __init__(self, ledger: Ledger, records: set[Path]) -> None:
        super().__init__(ledger.directory, run_id=ledger.run_id, worker=ledger.worker)
        self._only = records

    def scan(self) -> Scan:
        return Scan(entries=[e for e in super().scan().entries if e.path in self._only])


def _write(path: Path, data: Mapping[str, Any]) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(data), encoding="utf-8")
    partial.replace(path)
