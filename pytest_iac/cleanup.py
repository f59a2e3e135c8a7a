"""`pytest --iac-cleanup`: destroy what the ledger lists, with the same retries as a test run.

A record is a claim, so it is checked before anything runs (`Ledger.check`): its working
directory must be one pytest-iac made for it (under the project's `runs/`, with the marker
holding the record's token) and terraform runs only in the module copy inside it, with an
engine that is terraform, tofu or the embedded engine. Deployments of a pytest process that
still runs are skipped unless forced (that process destroys them itself); one whose
terraform still runs (it holds the local state lock) is refused. Guards (the account guard
of the AWS plugin) are asked before each destroy. A record that fails a check, or cannot be
read, is named with the reason and kept, and the clean-up fails. A record is removed only
after its destroy succeeded, or when its deployment provably never created anything.
No pytest import here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_iac.engine import EMBEDDED, Engine, Settings, Terraform, find_engine
from pytest_iac.errors import IacError, TerraformError
from pytest_iac.ledger import Damaged, Entry, Ledger, Record, lock_is_held, other_ledgers
from pytest_iac.sandbox import finish_unsaved, unsaved_state

COMMAND = "pytest --iac-cleanup"
LOCK_WAIT = 10.0  # seconds to wait for a terraform that still holds a deployment's state lock

# Asked before a deployment is destroyed: a reason it needs no destroy (its record is then
# cleared), or None to go on; an IacError refuses the destroy (the record is kept).
Guard = Callable[[Record], str | None]

_ENGINE_NAME = re.compile(r"(terraform|tofu)[\w.-]*")
_STATE_FILE = re.compile(r".*\.tfstate(\.backup)?|\.terraform\.tfstate\.lock\.info")


@dataclass
class Outcome:
    """What a clean-up did, record by record."""

    destroyed: list[Entry] = field(default_factory=list)
    cleared: list[Entry] = field(default_factory=list)  # needed no destroy: record removed
    failed: list[Entry] = field(default_factory=list)  # the destroy failed
    refused: list[Entry | Damaged] = field(default_factory=list)  # failed a check: kept
    skipped: list[Entry] = field(default_factory=list)  # owned by a running process

    @property
    def left(self) -> int:
        return len(self.failed) + len(self.refused) + len(self.skipped)


class Refused(Exception):
    """A record pytest-iac must not act on: why, and what the user can do instead."""

    def __init__(self, reason: str, manual: str = "") -> None:
        super().__init__(reason)
        self.manual = manual


def cleanup(
    ledger: Ledger,
    *,
    settings: Settings,
    config_dir: Path,
    engine: Callable[[], Engine],
    override: bool = False,
    dry_run: bool = False,
    force: bool = False,
    guards: Sequence[Guard] = (),
    lock_wait: float = LOCK_WAIT,
    write: Callable[[str], None] = print,
) -> Outcome:
    """Destroy every deployment `ledger` lists; `engine()` is used where the record's is gone
    (or always, with `override`)."""
    outcome = Outcome()
    scan = ledger.scan()
    if not scan.entries and not scan.damaged:
        write(f"pytest-iac: the ledger is empty ({ledger.directory}): nothing to clean up")
        _mention_others(ledger, write)
        return outcome
    total = len(scan.entries) + len(scan.damaged)
    write(f"pytest-iac: {total} record(s) in the ledger ({ledger.directory})")
    for damaged in scan.damaged:
        outcome.refused.append(damaged)
        write(f"KEPT {damaged.path}: the record {damaged.reason}.")
        write("  " + _damaged_manual(damaged).replace("\n", "\n  "))
    engines = _Engines(settings, config_dir, engine, override)
    verb = "would destroy" if dry_run else "destroying"
    for entry in reversed(scan.entries):  # newest first, like a teardown
        record = entry.record
        if ledger.is_live(record) and not force:
            outcome.skipped.append(entry)
            write(
                f"skipped {record.describe()}: the pytest process that made it is still "
                "running and will destroy it itself; --iac-cleanup-force destroys it anyway"
            )
            continue
        try:
            chosen = _checked(ledger, entry, engines, guards, lock_wait, dry_run, write)
        except Refused as refusal:
            outcome.refused.append(entry)
            write(f"REFUSED {record.describe()}: {refusal}.")
            write("  " + (refusal.manual or _manual(entry)).replace("\n", "\n  "))
            continue
        except _NothingToDestroy as nothing:
            outcome.cleared.append(entry)
            write(f"{'would clear' if dry_run else 'cleared'} {record.describe()}: {nothing}")
            if not dry_run:
                ledger.forget(entry)
                _remove_workdir(Path(record.workdir), ledger.runs)
            continue
        write(f"{verb} {record.describe()}")
        write(f"  in {record.module_dir}")
        if dry_run:
            continue
        try:
            _destroy(engines.runner(chosen), record, write)
        except (TerraformError, IacError, OSError) as error:
            outcome.failed.append(entry)
            write("  FAILED: " + str(error).replace("\n", "\n  "))
            if record.env_names:
                write(
                    "  It was deployed with these environment variables set: "
                    f"{', '.join(record.env_names)}; set them and run {COMMAND} again."
                )
            continue
        ledger.forget(entry)
        _remove_workdir(Path(record.workdir), ledger.runs)
        outcome.destroyed.append(entry)
        write("  destroyed")
    engines.close()
    if dry_run:
        acted = outcome.skipped + outcome.refused + outcome.cleared
        would = len(scan.entries) + len(scan.damaged) - len(acted)
        write(f"pytest-iac: dry run: {would} would be destroyed{_extra(outcome)}")
        _mention_others(ledger, write)
        return outcome
    write(
        f"pytest-iac: {len(outcome.destroyed)} destroyed, "
        + (f"{len(outcome.cleared)} cleared, " if outcome.cleared else "")
        + f"{len(outcome.failed)} failed, "
        + (f"{len(outcome.refused)} refused, " if outcome.refused else "")
        + f"{len(outcome.skipped)} skipped; {outcome.left} left in the ledger"
    )
    return outcome


class _NothingToDestroy(Exception):
    """The deployment needs no destroy (why): its record is cleared."""


def _checked(
    ledger: Ledger,
    entry: Entry,
    engines: _Engines,
    guards: Sequence[Guard],
    lock_wait: float,
    dry_run: bool,
    write: Callable[[str], None],
) -> Engine:
    """The engine to destroy `entry` with, once every check passed.

    Raises `Refused` (keep the record) or `_NothingToDestroy` (clear it).
    """
    record = entry.record
    problem = ledger.check(record)
    if problem:
        raise Refused(f"{problem}; pytest-iac acts only in working directories it made")
    unsaved = unsaved_state(Path(record.module_dir))
    if unsaved:  # a destroy would miss what is only there
        env = _data_dir_env(record.tf_data_dir, record.module_dir)
        raise Refused(
            f"Terraform could not save its state: {unsaved}",
            "The record is kept. Once the state's backend takes writes again, put what "
            f"Terraform made back into the state:\n  "
            f"{finish_unsaved(Path(record.module_dir), record.engine, env)}\n"
            f"then run {COMMAND} again.",
        )
    engine = engines.get(record.engine)
    state = _local_state(record)
    if state is not None:
        _wait_for_terraform(state, 0 if dry_run else lock_wait, write)
    for guard in guards:
        try:
            why = guard(record)
        except IacError as error:
            raise Refused(str(error).rstrip(".")) from None
        if why:
            raise _NothingToDestroy(why)
    if state is not None and _never_applied(record, state):
        raise _NothingToDestroy(
            f"its apply never started (no state in {record.workdir}), so nothing was deployed"
        )
    return engine


class _Engines:
    """The engine of each record, checked to be terraform, tofu or the embedded engine."""

    def __init__(
        self, settings: Settings, config_dir: Path, default: Callable[[], Engine], override: bool
    ) -> None:
        self.settings = settings
        self.config_dir = config_dir
        self.default = default
        self.override = override
        self._runners: dict[tuple[str, ...], Terraform] = {}
        self._answers: dict[Path, bool] = {}  # binary -> whether it answered as terraform

    def get(self, argv: list[str]) -> Engine:
        """The engine for a record's `argv` (checked), or the run's with `override`."""
        return self.default() if self.override else self._recorded(argv)

    def runner(self, engine: Engine) -> Terraform:
        """What runs `engine`'s commands; made only for a destroy (it writes its config)."""
        if engine.argv not in self._runners:
            self._runners[engine.argv] = Terraform(engine, self.settings, self.config_dir)
        return self._runners[engine.argv]

    def _recorded(self, argv: list[str]) -> Engine:
        if len(argv) == 3 and argv[1:] == ["-m", "pytest_iac.embedded"]:
            try:
                return find_engine(EMBEDDED)  # this process's own, not the recorded python
            except IacError:
                return self.default()
        path = Path(argv[0]) if len(argv) == 1 else None
        if path is None or not _ENGINE_NAME.fullmatch(path.name):
            raise Refused(
                f"its engine {shlex.join(argv)} is not terraform, tofu or pytest-iac's "
                "embedded engine"
            )
        if not path.exists():
            return self.default()  # uninstalled since: the engine this clean-up would use
        if path not in self._answers:
            self._answers[path] = path.is_file() and os.access(path, os.X_OK)
            self._answers[path] = self._answers[path] and _says_terraform(path)
        if not self._answers[path]:
            raise Refused(f"its engine {path} does not answer `version` as terraform or tofu")
        return Engine(
            name="tofu" if "tofu" in path.name else "terraform", argv=(str(path),), path=path
        )

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()


def _says_terraform(binary: Path) -> bool:
    try:
        result = subprocess.run(
            [str(binary), "version", "-json"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "CHECKPOINT_DISABLE": "1"},
            check=False,
        )
        return "terraform_version" in json.loads(result.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError, TypeError):
        return False


def _local_state(record: Record) -> Path | None:
    """The deployment's local state file, or None when its backend is not local (or unknown)."""
    settings = Path(record.tf_data_dir) / "terraform.tfstate"
    try:
        backend = json.loads(settings.read_text(encoding="utf-8")).get("backend") or {}
    except FileNotFoundError:
        backend = {}  # init never finished: the apply never ran either
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(backend, dict) or backend.get("type", "local") != "local":
        return None
    config = backend.get("config") or {}
    path = config.get("path") if isinstance(config, dict) else None
    return Path(record.module_dir) / (
        path if isinstance(path, str) and path else "terraform.tfstate"
    )


def _wait_for_terraform(state: Path, wait: float, write: Callable[[str], None]) -> None:
    """Refuse while a terraform holds the state's lock (it takes an fcntl lock on the file
    for as long as it runs), after waiting up to `wait` seconds for it to end."""
    deadline = time.monotonic() + wait
    told = False
    while lock_is_held(state, "fcntl"):
        if time.monotonic() >= deadline:
            raise Refused(
                f"terraform is still running on it ({_lock_holder(state)}holds the lock of "
                f"its state {state}): whatever it is doing would be unknown to a destroy",
                f"Let that terraform finish, or stop it, then run {COMMAND} again. This is "
                "not a transient error: cleaning up now could leave behind what it creates.",
            )
        if not told:
            write(f"  waiting up to {wait:g}s for the terraform that holds {state} to end")
            told = True
        time.sleep(0.1)


def _lock_holder(state: Path) -> str:
    """What Terraform's lock info says of the lock's holder: `terraform apply since ... `."""
    try:
        info = json.loads((state.parent / f".{state.name}.lock.info").read_text("utf-8"))
        operation = str(info["Operation"]).removeprefix("OperationType").lower()
        what = f"terraform {operation}" if operation not in ("", "invalid") else "terraform"
        return f"{what} since {info['Created']} "
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ""


def _never_applied(record: Record, state: Path) -> bool:
    """True only when no state file ever appeared in the working directory: terraform
    creates (and locks) the state file before an apply changes anything."""
    workdir = Path(record.workdir).resolve()
    if workdir not in state.resolve().parents:
        return False  # the state lives elsewhere: cannot tell
    backend_settings = Path(record.tf_data_dir).resolve() / "terraform.tfstate"
    for directory, _, files in os.walk(workdir):
        for name in files:
            if _STATE_FILE.fullmatch(name) and Path(directory, name) != backend_settings:
                return False
    return True


def _destroy(runner: Terraform, record: Record, write: Callable[[str], None]) -> None:
    """Destroy the deployment; if terraform says to run init first (a run killed between an
    upgrade test's new code and its init), and the state is the local one pytest-iac gave
    the copy, run init there and destroy again."""

    def run(args: list[str]) -> None:
        runner.run(
            args,
            cwd=Path(record.module_dir),
            env=_data_dir_env(record.tf_data_dir, record.module_dir),
            label=Path(record.workdir).name,
            module=record.module,
        )

    destroy = ["destroy", "-auto-approve", *(f"-var-file={f}" for f in record.var_files)]
    try:
        run(destroy)
    except TerraformError as error:
        # Terraform's advice, whatever the line breaks: 'Run "terraform init" to install...'
        if "terraform init" not in " ".join(error.output.split()) or not _local_state(record):
            raise
        write(
            "  the destroy needs init first (code changed after its last init): init, then destroy"
        )
        run(["init", "-input=false"])
        run(destroy)


def _data_dir_env(tf_data_dir: str, module_dir: str) -> dict[str, str]:
    """TF_DATA_DIR for a record's destroy, unless it is the default `.terraform` there
    (records made before deployments used the default have a data dir of their own)."""
    if not tf_data_dir or Path(tf_data_dir) == Path(module_dir) / ".terraform":
        return {}
    return {"TF_DATA_DIR": tf_data_dir}


def _remove_workdir(workdir: Path, runs: Path) -> None:
    """Remove a checked working directory, and its run's directory once it is empty."""
    shutil.rmtree(workdir, ignore_errors=True)
    sandboxes = workdir.parent
    if (
        sandboxes.name == "sandboxes"
        and sandboxes.parent.parent.resolve() == runs.resolve()
        and sandboxes.is_dir()
        and not any(sandboxes.iterdir())
    ):
        shutil.rmtree(sandboxes.parent, ignore_errors=True)


def _manual(entry: Entry) -> str:
    record = entry.record
    command = record.destroy_command or "(none recorded)"
    return (
        "The record is kept. If its deployment exists, destroy it by hand; the record's "
        f"own command is (check it first):\n  {command}\n"
        f"then remove the record: rm {shlex.quote(str(entry.path))}"
    )


def _damaged_manual(damaged: Damaged) -> str:
    command = damaged.data.get("destroy_command") if isinstance(damaged.data, dict) else None
    shown = (
        f"the command it records (check it first):\n  {command}\n"
        if isinstance(command, str) and command
        else "look inside it for the working directory it names.\n"
    )
    return (
        "It is kept; pytest-iac does not act on it. Destroy its deployment by hand: "
        f"{shown}then remove the record: rm {shlex.quote(str(damaged.path))}"
    )


def _extra(outcome: Outcome) -> str:
    parts = [f"{len(outcome.cleared)} would be cleared"] if outcome.cleared else []
    parts += [f"{len(outcome.refused)} refused"] if outcome.refused else []
    parts += [f"{len(outcome.skipped)} skipped"] if outcome.skipped else []
    return (", " + ", ".join(parts)) if parts else ""


def _mention_others(ledger: Ledger, write: Callable[[str], None]) -> None:
    """Other projects' non-empty ledgers in the same home: the one wanted may be there."""
    for directory, count, example in other_ledgers(ledger.directory):
        write(
            f"pytest-iac: another project's ledger holds {count} record(s): {directory}"
            + (f" (e.g. {example})" if example else "")
            + "; run the clean-up from that project"
        )
