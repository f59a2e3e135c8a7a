"""Plan-only drift checks of live root modules. No pytest import here.

Which directories are live root modules is `pytest_iac.live`'s rule; what a plan changes,
attribute by attribute, is `pytest_iac.plan`'s; how results are shown, `pytest_iac.report`'s.

`check_drift()` plans a live root module without writing anything into it or its state: the
directory is copied (with the local modules it calls) into a working directory, where
`init` (with the backend configuration), `plan -detailed-exitcode -lock=false -refresh=true
-out PLAN` and `show -json PLAN` run with TF_DATA_DIR there too (checks of many directories
first plan without `-out`, and plan again only where something changes). The working
directory is removed afterwards: a plan file holds a copy of the state, and TF_DATA_DIR the
backend configuration. Nothing is ever applied, no state is ever written, no lock is ever
taken.

`InitCache` (`pytest_iac.init_cache`) keeps what `init` made, keyed on what init reads, so
directories that init alike share one init and a re-run reuses it; `DriftRun` plans many
directories at once in a pool of threads that wait on terraform.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_iac import report, tfconfig
from pytest_iac.backend_config import BackendConfig, init_args, remember_settings
from pytest_iac.engine import Terraform
from pytest_iac.errors import TerraformError
from pytest_iac.init_cache import InitCache, InitCall
from pytest_iac.live import DEFAULT_STATE, has_state, relative_name
from pytest_iac.plan import Change, OutputChange, Plan
from pytest_iac.redact import redact, redact_value, remember_plan, remember_variables
from pytest_iac.workspace import copy_module, write_private

log = logging.getLogger("pytest_iac")

# never-applied: the state is empty, so the plan creates everything; not-deployed: no
# backend and no state (a new environment), so there is nothing to compare with.
Status = Literal["clean", "drift", "never-applied", "not-deployed", "error"]
NOT_DEPLOYED = "no backend and no state"


# Results


@dataclass
class DriftResult:
    """What a drift check of one live root module found."""

    name: str  # how reports call the directory: its path relative to the run's base
    directory: Path
    status: Status
    plan: Plan | None = None
    error: str | None = None  # terraform's diagnostic when the check could not be made
    seconds: float = 0.0
    undeclared: tuple[str, ...] = ()  # given values, but declared by no variable: ignored

    @property
    def configuration_drift(self) -> list[Change]:
        """Resources whose configuration differs from the state (`resource_changes`)."""
        return list(self.plan.changes) if self.plan else []

    @property
    def state_drift(self) -> list[Change]:
        """Objects changed outside Terraform, found by refresh (`resource_drift`)."""
        return list(self.plan.drift) if self.plan else []

    @property
    def output_changes(self) -> list[OutputChange]:
        return self.plan.output_changes if self.plan else []

    @property
    def counts(self) -> dict[str, int]:
        return {
            "configuration_drift": len(self.configuration_drift),
            "state_drift": len(self.state_drift),
            "output_changes": len(self.output_changes),
        }

    def summary(self) -> str:
        """One line: `prod/app: drift (configuration 2, state 0, outputs 1)`."""
        if self.status in ("error", "not-deployed"):
            first = (self.error or "").strip().splitlines()
            return f"{self.name}: {self.status} ({first[0] if first else 'could not check'})"
        c = self.counts
        detail = (
            f"configuration {c['configuration_drift']}, state {c['state_drift']}, "
            f"outputs {c['output_changes']}"
        )
        return f"{self.name}: {self.status} ({detail})"

    def table(self) -> str:
        """The changes as text: one section per kind of drift, one line per change."""
        return redact(report.table(self))

    def to_dict(self) -> dict[str, Any]:
        """What reports are made of (JSON, Markdown, xdist), secrets masked."""
        fields: dict[str, Any] = redact_value(self._fields())
        return fields

    def _fields(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "directory": str(self.directory),
            "status": self.status,
            "counts": self.counts,
            "configuration_drift": [report.change_dict(c) for c in self.configuration_drift],
            "state_drift": [report.change_dict(c) for c in self.state_drift],
            "output_changes": [report.output_dict(o, self.plan) for o in self.output_changes],
            "error": self.error,
            "undeclared_variables": list(self.undeclared),
            "seconds": round(self.seconds, 2),
        }


# Checking


def check_drift(
    terraform: Terraform,
    live_dir: Path,
    workdir: Path,
    *,
    name: str | None = None,
    backend_config: Sequence[BackendConfig] = (),
    vars: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    init_cache: InitCache | None = None,
    quiet: bool = False,
    full_plan: bool = True,
    remove: Callable[[Path], object] | None = None,
) -> DriftResult:
    """Plan `live_dir` read-only and say what differs; never raises for terraform failures.

    `backend_config` applies after the directory's own `*.tfbackend` files (sorted), in
    order: files, `KEY=VALUE` strings, or mappings of values. A failed init or plan gives a
    result with status "error" and terraform's diagnostic; a directory with neither backend
    nor state is "not-deployed" (nothing is run), and one whose state holds no resource
    "never-applied" rather than "drift". With `init_cache`, the result of
    an earlier `init` with the very same inputs is reused instead of running it again.
    `quiet` keeps terraform's commands and output out of the log. Without `full_plan`, the
    first plan writes no plan file and a clean one is not read back with `show -json`: its
    `Plan` holds only what refresh found changed outside Terraform, by address and action
    (`Change.attributes_read` is False), from the plan's own messages. A clean directory
    then costs one plan and no second start of its providers; one whose plan changes
    something is planned again with `-out` and read back. `remove`
    removes the working directory afterwards (default: at once, `shutil.rmtree`).
    """
    started = time.monotonic()
    name = name or live_dir.name
    live_dir = live_dir.resolve()
    module = tfconfig.read_module(live_dir)  # read once for what is asked of it below
    undeclared = tuple(tfconfig.undeclared_variables(live_dir, vars or {}, module=module))
    if not has_state(live_dir, module):  # a new environment, say: no state to compare with
        return DriftResult(
            name, live_dir, "not-deployed", error=NOT_DEPLOYED, undeclared=undeclared
        )
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, mode=0o700)  # it will hold the plan: a copy of the state
    try:
        plan, status = _plan(
            terraform,
            live_dir,
            module,
            workdir,
            name,
            backend_config,
            vars,
            env,
            init_cache,
            quiet,
            full_plan,
        )
    except TerraformError as error:
        return DriftResult(
            name,
            live_dir,
            "error",
            error=redact(str(error)),
            seconds=time.monotonic() - started,
            undeclared=undeclared,
        )
    finally:
        (remove or _remove)(workdir)
    seconds = time.monotonic() - started
    return DriftResult(name, live_dir, status, plan, seconds=seconds, undeclared=undeclared)


def _remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _plan(
    terraform: Terraform,
    live_dir: Path,
    module: tfconfig.Module,
    workdir: Path,
    name: str,
    backend_config: Sequence[BackendConfig],
    vars: Mapping[str, Any] | None,
    env: Mapping[str, str] | None,
    init_cache: InitCache | None,
    quiet: bool,
    full_plan: bool,
) -> tuple[Plan, Status]:
    # Masked from here on, wherever they show up: terraform's output, errors and reports.
    remember_variables(live_dir, vars or {}, module=module)  # defaults, terraform.tfvars too
    remember_settings(backend_config)
    module_dir = copy_module(live_dir, workdir / "src")
    run_env = plan_environment(terraform, env)
    data_dir = module_dir / run_env.get("TF_DATA_DIR", ".terraform")  # in the copy: removed with it

    def run(args: list[str], ok: frozenset[int] = frozenset({0})) -> Any:
        return terraform.run(
            args,
            cwd=module_dir,
            env=run_env,
            ok_codes=ok,
            label=f"drift {name}",
            module=str(live_dir),
            quiet=quiet or args[0] == "show",
        )

    init = ["init", *init_args(live_dir, module_dir, workdir, backend_config)]
    how = "ran"
    if init_cache is None:
        run(init)
    else:
        call = InitCall(terraform, live_dir, workdir, module_dir, init, run_env)
        key, shared = init_cache.keys(call)
        how = init_cache.init(key, data_dir, module_dir, lambda: run(init), shared)
        if how != "ran" and not quiet:
            entry = init_cache.directory / (shared.key if shared and how == "shared" else key)
            log.info("[drift %s] init %s from %s", name, how, entry)
    # A local backend's default state sits beside the code and is not copied along with it.
    # Copied after init: the cache never holds a copy of a state.
    state = live_dir / DEFAULT_STATE
    if state.is_file():
        shutil.copy2(state, module_dir / DEFAULT_STATE)
    plan_args = ["plan", "-detailed-exitcode", "-lock=false", "-refresh=true"]
    # -json: its messages name what refresh found changed, which the exit code does not.
    plan_args.append("-json")
    if vars:
        var_file = workdir / "drift.tfvars.json"
        write_private(var_file, json.dumps(dict(vars), indent=2))
        plan_args.append(f"-var-file={var_file}")

    def plan(args: list[str]) -> Any:
        nonlocal how
        try:
            return _run_plan(run, args)
        except TerraformError as error:
            if how != "shared" or init_cache is None:
                raise
            # A shared init may lack what this directory's own would have made (a provider
            # only its state names, say): init, and plan again; its error is the one to say.
            if _REINIT in error.output:  # the engine checks more than the backend block
                log.info("[drift %s] %s: init runs, and no more are shared", name, _REINIT)
                init_cache.refuse_sharing()
            else:
                log.info("[drift %s] the plan failed after a shared init: init runs", name)
            shutil.rmtree(data_dir, ignore_errors=True)
            how = "ran"
            run(init)
            return _run_plan(run, args)

    if not full_plan:
        # Most directories are clean: a first plan writes no plan file (a copy of the state,
        # and ~10% of the plan's CPU); only one that changes something is planned again below.
        planned = plan(plan_args)
        if planned.returncode == 0:
            drift = _refresh_drift(planned.stdout)
            return Plan(changes=[], drift=drift, outputs={}, raw={}), "clean"
    plan_file = workdir / "drift.tfplan"
    planned = plan([*plan_args, f"-out={plan_file}"])
    status: Status = "drift" if planned.returncode == 2 else "clean"
    data = run(["show", "-json", str(plan_file)]).json()
    data = data if isinstance(data, dict) else {}
    remember_plan(data)
    if status == "drift" and not data.get("prior_state"):  # no resource in the state
        status = "never-applied"
    return Plan.from_json(data), status


def plan_environment(terraform: Terraform, env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of a check's terraform commands (beyond the engine's own): the same
    for every check, so that the embedded engine's workers (one environment each) serve
    them all.

    No TF_DATA_DIR: the engine drops one from the run's environment, so a check's is
    `.terraform` in its copy of the directory, where init records module paths relative to
    the directory, as they hold in any copy of the layout. GOGC=400: Go's collector runs a
    fourth as often in terraform and its providers, for ~25% less CPU a plan and a little
    more memory (benchmarks/README.md); a run whose environment sets GOGC keeps its own.
    """
    run_env = dict(env or {})
    if "GOGC" not in run_env and "GOGC" not in terraform.settings.env and "GOGC" not in os.environ:
        run_env["GOGC"] = _GOGC
    return run_env


def _run_plan(run: Callable[[list[str], frozenset[int]], Any], args: list[str]) -> Any:
    """`plan`, whose error (its output is JSON messages) reads as terraform prints it."""
    try:
        return run(args, frozenset({0, 2}))
    except TerraformError as error:
        raise TerraformError(
            error.command,
            error.cwd,
            error.returncode,
            redact(_readable(error.output)),
            module=error.module,
            hint=error.hint,
        ) from None


def _messages(output: str) -> Iterator[dict[str, Any]]:
    """The JSON messages of `terraform plan -json` (other lines, such as stderr's, skipped)."""
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                yield message


_GOGC = "400"  # see plan_environment()
# What a plan says when the backend set up in TF_DATA_DIR is not the one in the code.
_REINIT = "Backend initialization required"
# How `plan -json` messages name actions, as `show -json` lists them.
_MESSAGE_ACTIONS = {"update": ("update",), "delete": ("delete",)}  # what refresh can find


def _refresh_drift(output: str) -> list[Change]:
    """The objects refresh found changed outside Terraform, from `plan -json` messages:
    addresses and actions only (the messages hold no attribute values)."""
    found = []
    for message in _messages(output):
        change = message.get("change") if message.get("type") == "resource_drift" else None
        if not isinstance(change, dict):
            continue
        address = (change.get("resource") or {}).get("addr")
        action = change.get("action")
        if isinstance(address, str) and action in _MESSAGE_ACTIONS:
            actions = _MESSAGE_ACTIONS[action]
            found.append(Change(address, actions, None, None, attributes_read=False))
    return found


def _readable(output: str) -> str:
    """Diagnostics of `-json` output as terraform prints them; other lines as they are."""
    lines: list[str] = []
    for line in output.splitlines():
        message = next(_messages(line), None)
        if message is None:
            lines.append(line)
            continue
        diagnostic = message.get("diagnostic")
        if not isinstance(diagnostic, dict):
            continue
        lines.append("")
        lines.append(
            f"{str(diagnostic.get('severity', 'error')).capitalize()}: "
            f"{diagnostic.get('summary', '')}"
        )
        where = diagnostic.get("range") or {}
        snippet = diagnostic.get("snippet") or {}
        if where.get("filename"):
            start = (where.get("start") or {}).get("line")
            lines.append("")
            lines.append(f"  on {where['filename']} line {start}:")
            if snippet.get("code"):
                lines.append(f"  {snippet.get('start_line', start)}: {snippet['code']}")
        if diagnostic.get("detail"):
            lines.append("")
            lines.append(str(diagnostic["detail"]))
    return "\n".join(lines).strip("\n") + "\n"


# Many directories at once


@dataclass
class DriftRun:
    """Checks many live directories with one engine; keeps every result (for reports).

    `submit()` starts checks in a pool of `workers` threads (each waits on terraform
    processes) and `check()` takes a submitted directory's result, or checks it there and
    then. With `init_cache`, what init made is shared and reused (`InitCache`).

    A check's working directory is removed by a thread of its own: on some file systems
    each `rmdir` waits milliseconds for the disk (seen here: ~3 ms, eight directories a
    check), time the next check need not wait for. `close()` waits for the removals.
    """

    terraform: Terraform
    workdir: Path
    base: Path
    backend_config: Sequence[BackendConfig] = ()
    init_cache: InitCache | None = None
    workers: int = 1
    quiet_pool: bool = True  # terraform's output of pooled checks stays out of the log
    results: list[DriftResult] = field(default_factory=list)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _pending: dict[Path, Future[DriftResult]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _numbers: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)
    _remover: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def submit(self, live_dir: Path) -> None:
        """Start checking `live_dir` in the pool, unless it is already under way."""
        live_dir = live_dir.resolve()
        with self._lock:
            if live_dir in self._pending:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=max(1, self.workers), thread_name_prefix="pytest-iac-drift"
                )
            self._pending[live_dir] = self._pool.submit(
                self._check, live_dir, quiet=self.quiet_pool, full_plan=False
            )

    def check(self, live_dir: Path, *, pooled: bool = False, **options: Any) -> DriftResult:
        """The result for `live_dir`: the pool's (with `pooled`, if submitted), or a new one.

        A pooled result of a clean directory names its refresh drift without attribute
        values (see `check_drift`).
        """
        future = None
        if pooled:
            with self._lock:
                future = self._pending.pop(live_dir.resolve(), None)
        if future is not None:
            result = future.result()
        else:
            result = self._check(live_dir, **({"full_plan": False} if pooled else {}), **options)
        self.results.append(result)
        return result

    def close(self) -> None:
        """Drop the checks not started yet; wait for those under way (they write nothing)
        and for the removal of every working directory."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._pending.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            remover, self._remover = self._remover, None
        if remover is not None:
            remover.shutdown(wait=True)

    def _remove_later(self, directory: Path) -> None:
        with self._lock:
            if self._remover is None:
                self._remover = ThreadPoolExecutor(1, thread_name_prefix="pytest-iac-remove")
            self._remover.submit(_remove, directory)

    def _check(self, live_dir: Path, quiet: bool = False, **options: Any) -> DriftResult:
        name = relative_name(live_dir, self.base)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "root"
        with self._lock:
            number = next(self._numbers)  # a directory may be checked twice at once
        return check_drift(
            self.terraform,
            live_dir,
            self.workdir / f"{slug}-{number}",
            name=name,
            backend_config=[*self.backend_config, *options.pop("backend_config", ())],
            init_cache=self.init_cache,
            quiet=quiet,
            remove=self._remove_later,
            **options,
        )
