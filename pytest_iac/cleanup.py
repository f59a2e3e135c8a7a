"""`pytest --iac-cleanup`: destroy what the ledger lists, with the same retries as a test run.

Each record names its working directory, var files and engine: the destroy runs there exactly
as the run's own teardown would have. A record is removed only after its destroy succeeded.
Deployments of a pytest process that still runs are skipped unless forced: that process will
destroy them itself. No pytest import here.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_iac.engine import Engine, Settings, Terraform
from pytest_iac.errors import IacError, TerraformError
from pytest_iac.ledger import Entry, Ledger

COMMAND = "pytest --iac-cleanup"


@dataclass
class Outcome:
    """What a clean-up did, record by record."""

    destroyed: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)
    skipped: list[Entry] = field(default_factory=list)  # owned by a running process

    @property
    def left(self) -> int:
        return len(self.failed) + len(self.skipped)


def recorded_engine(argv: list[str]) -> Engine | None:
    """The engine a record names, if it can still run here."""
    if not argv or not Path(argv[0]).exists():
        return None
    embedded = argv[1:3] == ["-m", "pytest_iac.embedded"]
    return Engine(
        name="tofu" if not embedded and "tofu" in Path(argv[0]).name else "terraform",
        argv=tuple(argv),
        path=Path(argv[0]),
        embedded=embedded,
    )


def cleanup(
    ledger: Ledger,
    *,
    settings: Settings,
    config_dir: Path,
    engine: Callable[[], Engine],
    override: bool = False,
    dry_run: bool = False,
    force: bool = False,
    write: Callable[[str], None] = print,
) -> Outcome:
    """Destroy every deployment `ledger` lists; `engine()` is used where the record's is gone
    (or always, with `override`)."""
    outcome = Outcome()
    entries = list(reversed(ledger.entries()))  # newest first, like a teardown
    if not entries:
        write(f"pytest-iac: the ledger is empty ({ledger.directory}): nothing to clean up")
        ledger.prune_owners()
        return outcome
    verb = "would destroy" if dry_run else "destroying"
    write(f"pytest-iac: {len(entries)} deployment(s) in the ledger ({ledger.directory})")
    runners: dict[tuple[str, ...], Terraform] = {}
    for entry in entries:
        record = entry.record
        if ledger.is_live(record) and not force:
            outcome.skipped.append(entry)
            write(
                f"skipped {record.describe()}: the pytest process that made it is still "
                "running and will destroy it itself; --iac-cleanup-force destroys it anyway"
            )
            continue
        write(f"{verb} {record.describe()}")
        write(f"  in {record.module_dir}")
        if dry_run:
            continue
        if not Path(record.module_dir).is_dir():
            outcome.failed.append(entry)
            write(
                "  FAILED: its working directory (with the state) is gone, so pytest-iac "
                "cannot destroy it. Check by hand that nothing of it is deployed, then "
                f"delete the record: rm {shlex.quote(str(entry.path))}"
            )
            continue
        chosen = None if override else recorded_engine(record.engine)
        if chosen is None:
            chosen = engine()
        if chosen.argv not in runners:
            runners[chosen.argv] = Terraform(chosen, settings, config_dir)
        try:
            runners[chosen.argv].run(
                [
                    "destroy",
                    "-auto-approve",
                    *(f"-var-file={f}" for f in record.var_files),
                ],
                cwd=Path(record.module_dir),
                env=_data_dir_env(record.tf_data_dir, record.module_dir),
                label=Path(record.workdir).name,
                module=record.module,
            )
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
        _remove_workdir(Path(record.workdir))
        outcome.destroyed.append(entry)
        write("  destroyed")
    ledger.prune_owners()
    if dry_run:
        write(f"pytest-iac: dry run: {len(entries) - len(outcome.skipped)} would be destroyed")
        return outcome
    write(
        f"pytest-iac: {len(outcome.destroyed)} destroyed, {len(outcome.failed)} failed, "
        f"{len(outcome.skipped)} skipped; {outcome.left} left in the ledger"
    )
    return outcome


def _data_dir_env(tf_data_dir: str, module_dir: str) -> dict[str, str]:
    """TF_DATA_DIR for a record's destroy, unless it is the default `.terraform` there
    (records made before deployments used the default have a data dir of their own)."""
    if not tf_data_dir or Path(tf_data_dir) == Path(module_dir) / ".terraform":
        return {}
    return {"TF_DATA_DIR": tf_data_dir}


def _remove_workdir(workdir: Path) -> None:
    """Remove a destroyed deployment's directory, and its run's directory once it is empty."""
    shutil.rmtree(workdir, ignore_errors=True)
    sandboxes = workdir.parent
    if sandboxes.name == "sandboxes" and sandboxes.is_dir() and not any(sandboxes.iterdir()):
        shutil.rmtree(sandboxes.parent, ignore_errors=True)
