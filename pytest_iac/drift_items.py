"""pytest glue of drift checks: live root modules as items, the `drift` marker, the reports.

Loaded by plugin.py as a plugin of its own. Live root modules are collected only in a drift
run, one whose `-m` expression names `drift` (`pytest -m drift live/`), so a plain `pytest`
never plans live configuration. In a drift run the directories of ini `iac_live_dirs` are
added to the paths to collect unless paths are given on the command line. Each live root
module (the rule: `pytest_iac.live`) becomes one item, `<dir>::drift`, marked `drift`.

When the first drift item is set up, every selected drift item's check starts in the run's
pool of `iac_drift_workers` threads (each waits on terraform); each item's setup then waits
for its own result, so items run and report in their usual order. Under pytest-xdist a
worker knows only the item it runs and the next one, and plans both at once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_iac import report as reports
from pytest_iac import vcs
from pytest_iac.backend_config import BackendConfig, parse_backend_config
from pytest_iac.drift import DriftResult, DriftRun
from pytest_iac.errors import IacError, IacWarning
from pytest_iac.fixtures import CHANGES_KEY, RUN_KEY, selects
from pytest_iac.live import (
    find_live_roots,
    is_live_root,
    module_closure,
    referenced_modules,
    relative_name,
)
from pytest_iac.plan import Plan
from pytest_iac.promotion_items import PROMOTION_KEY
from pytest_iac.vcs import VcsInfo

_STATE_KEY = pytest.StashKey["_DriftState"]()
_RESULT_KEY = pytest.StashKey[DriftResult]()
_REPORT_ATTRIBUTE = "iac_drift"  # on test reports: the result as a dict (crosses xdist)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iac")
    group.addoption(
        "--iac-backend-config",
        action="append",
        default=[],
        metavar="KEY=VALUE|FILE",
        help="backend configuration for every live directory of a drift run, repeatable: "
        "KEY=VALUE or a file of settings; applied after each directory's *.tfbackend files "
        "(ini iac_backend_config)",
    )
    group.addoption(
        "--iac-report-json", metavar="PATH", help="write the drift results as JSON to PATH"
    )
    group.addoption(
        "--iac-report-md",
        metavar="PATH",
        help="write the drift results as Markdown to PATH (also appended to "
        "$GITHUB_STEP_SUMMARY when set)",
    )
    group.addoption(
        "--iac-require-trunk",
        metavar="BRANCH",
        help="refuse a drift run unless HEAD is on BRANCH with no uncommitted changes under "
        "the live directories (ini iac_require_trunk)",
    )
    group.addoption(
        "--iac-drift-workers",
        type=int,
        metavar="N",
        help="live directories planned at once by each pytest process (default: the number "
        "of CPUs plus one; the CPUs divided among pytest-xdist workers, at least 2 each; ini "
        "iac_drift_workers)",
    )
    parser.addini("iac_drift_workers", "live directories planned at once (default: CPUs + 1)")
    parser.addini("iac_live_dirs", "directories holding live root modules", type="paths")
    parser.addini(
        "iac_live_exclude",
        "globs (one a line) of directories, relative to the rootdir, that are not live roots",
        type="linelist",
    )
    parser.addini(
        "iac_backend_config",
        "backend configuration for live directories: KEY=VALUE or files (one a line)",
        type="linelist",
    )
    parser.addini("iac_require_trunk", "branch a drift run must be on")
    parser.addini(
        "iac_skip_not_deployed",
        "skip, rather than fail, root modules under the named live paths that have neither "
        "backend nor state (default false)",
        type="bool",
        default=False,
    )


@dataclass
class _DriftState:
    """One pytest run's drift settings and results."""

    enabled: bool
    trees: list[Path]  # where live roots are looked for
    named: list[Path]  # live paths named on the command line or in ini iac_live_dirs
    exclude: list[str]
    backend_config: list[BackendConfig]
    require_trunk: str | None
    report_json: Path | None
    report_md: Path | None
    results: list[dict[str, Any]]
    workers: int = 1
    vcs: vcs.VcsInfo | None = None
    vcs_later: Future[VcsInfo | None] | None = None  # for the reports, asked at the start
    pooled: bool = False  # the items of a run without xdist were all submitted
    found: int = 0  # live roots collected (before -k deselects any)
    collected_by_workers: int = 0  # items an xdist controller's workers collected
    _referenced: set[Path] | None = None
    _drift_run: DriftRun | None = None

    def referenced(self) -> set[Path]:
        if self._referenced is None:
            self._referenced = referenced_modules(self.trees)
        return self._referenced


def pytest_configure(config: pytest.Config) -> None:
    live_dirs: list[Path] = list(config.getini("iac_live_dirs"))
    enabled = selects(config, "drift")
    if enabled and live_dirs and config.args_source != pytest.Config.ArgsSource.ARGS:
        # `pytest -m drift` with the roots named in the ini file.
        config.args.extend(str(d) for d in live_dirs if str(d) not in config.args)
    invocation = config.invocation_params.dir
    try:
        backend = [
            *parse_backend_config(config.getini("iac_backend_config"), config.rootpath, "ini"),
            *parse_backend_config(
                config.getoption("iac_backend_config"), invocation, "--iac-backend-config"
            ),
        ]
    except IacError as error:
        raise pytest.UsageError(str(error)) from None
    trees = [config.rootpath, *live_dirs]
    trees += [p for p in (invocation / a.split("::")[0] for a in config.args) if p.is_dir()]
    # Where a root module without backend or state is a new environment, not a reusable
    # module: live paths the user named (the rootdir, named or not, holds both kinds).
    named = [*live_dirs]
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        named += [invocation / a.split("::")[0] for a in config.args]
    root = config.rootpath.resolve()
    named = [p.resolve() for p in named if p.is_dir() and p.resolve() not in (root, *root.parents)]

    def path_option(name: str) -> Path | None:
        value = config.getoption(name)
        return invocation / value if value else None

    state = config.stash[_STATE_KEY] = _DriftState(
        enabled=enabled,
        trees=_outermost(trees),
        named=named,
        exclude=list(config.getini("iac_live_exclude")),
        backend_config=backend,
        require_trunk=config.getoption("iac_require_trunk") or config.getini("iac_require_trunk"),
        report_json=path_option("iac_report_json"),
        report_md=path_option("iac_report_md"),
        results=[],
        workers=_workers(config),
    )
    config.pluginmanager.register(_Results(state), "iac-drift-results")


class _Results:
    """Gathers drift results from reports: the controller's, or those xdist workers send."""

    def __init__(self, state: _DriftState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, _REPORT_ATTRIBUTE, None)
        if isinstance(data, dict):
            self.state.results.append(data)


def _workers(config: pytest.Config) -> int:
    """--iac-drift-workers, else ini iac_drift_workers, else one more than the CPUs (without
    xdist; with it, the CPUs shared by its workers, two at least each)."""
    value = config.getoption("iac_drift_workers")
    origin = "--iac-drift-workers"
    if value is None and config.getini("iac_drift_workers"):
        origin, raw = "ini iac_drift_workers", config.getini("iac_drift_workers")
        try:
            value = int(raw)
        except ValueError:
            raise pytest.UsageError(
                f"{origin} must be a whole number of live directories planned at once, not {raw!r}"
            ) from None
    if value is None:
        processes = max(1, int(getattr(config, "workerinput", {}).get("workercount", 1)))
        if processes == 1:
            # Between its commands a check runs Python (copying, keying, restoring) while
            # the others' terraform keeps the cores busy: measured ~8% faster than the CPUs.
            return (os.cpu_count() or 1) + 1
        # Two at least: a worker plans the item it runs and the next one, so that one
        # check's own work overlaps the other's terraform. With one (2 CPUs, -n 2), a core
        # sat idle while a check ran its Python: traced, 2 commands at once only 72% of the time.
        return max(2, (os.cpu_count() or 1) // processes)
    if value < 1:
        raise pytest.UsageError(f"{origin} must be at least 1, not {value}")
    return int(value)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    resolved = sorted({p.resolve() for p in paths if p.is_dir()})
    return [p for p in resolved if not any(q in p.parents for q in resolved)]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    state = session.config.stash[_STATE_KEY]
    if _is_worker(session.config):
        return
    start = session.config.rootpath
    if not (state.enabled and state.require_trunk):
        if state.report_json or state.report_md:
            # The commit the reports name: asked now (what is checked out when the run
            # starts), in a thread, off the path to the first plan.
            state.vcs_later = vcs.describe_later(start)
        return
    # The live roots about to be planned, and every local module they use.
    live = [d for d in _live_trees(session.config) if d.is_dir()]
    watched: set[Path] = set()
    for root in find_live_roots(live, base=start, exclude=state.exclude):
        watched |= module_closure(root)
    try:
        state.vcs = vcs.require_trunk(state.require_trunk, sorted(watched), start)
    except IacError as error:
        raise pytest.UsageError(str(error)) from None


def backend_files(config: pytest.Config) -> list[Path]:
    """The backend configuration files every drift check of the run reads (ini, options)."""
    return [item for item in config.stash[_STATE_KEY].backend_config if isinstance(item, Path)]


def _live_trees(config: pytest.Config) -> list[Path]:
    invocation = config.invocation_params.dir
    return [invocation / a.split("::")[0] for a in config.args]


# Collection


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    state = parent.config.stash[_STATE_KEY]
    if not state.enabled:
        return None
    if not is_live_root(
        path,
        state.referenced(),
        base=parent.config.rootpath,
        exclude=state.exclude,
        named=state.named,
    ):
        return None
    state.found += 1
    return LiveDir.from_parent(parent, path=path)


class LiveDir(pytest.Directory):
    """A live root module's directory: its drift item, then whatever else pytest finds there."""

    def collect(self) -> Iterator[pytest.Item | pytest.Collector]:
        yield DriftItem.from_parent(self, name="drift")
        ihook = self.ihook
        for entry in sorted(self.path.iterdir()):
            if entry.is_dir():
                if not self.session.isinitpath(
                    entry, with_parents=True
                ) and ihook.pytest_ignore_collect(collection_path=entry, config=self.config):
                    continue
                collector = ihook.pytest_collect_directory(path=entry, parent=self)
                if collector is not None:
                    yield collector
            elif entry.is_file():
                if not self.session.isinitpath(entry) and ihook.pytest_ignore_collect(
                    collection_path=entry, config=self.config
                ):
                    continue
                yield from ihook.pytest_collect_file(file_path=entry, parent=self)


class DriftFound(Exception):
    """A live directory's plan is not empty."""


class DriftItem(pytest.Item):
    """Plan one live root module: pass when clean, fail on changes, error when unplannable."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_marker(pytest.mark.drift)
        self.live_dir = self.path

    def setup(self) -> None:
        # Planning happens in setup: a plan that cannot be made is an error, not a failure.
        run = _drift_run(self.config)
        _submit_pending(self, run)
        result = run.check(self.live_dir, pooled=True)
        self.stash[_RESULT_KEY] = result
        _warn_undeclared(result)
        # As record_property does: junitxml shows them as <property> of the test case.
        for key, value in (("status", result.status), *result.counts.items()):
            self.user_properties.append((f"iac_drift_{key}", value))
        if result.status == "error":
            pytest.fail(f"could not check {result.name} for drift:\n{result.error}", pytrace=False)
        if result.status == "not-deployed" and self.config.getini("iac_skip_not_deployed"):
            # Located at the item (its directory), not at this line, in -rs.
            raise pytest.skip.Exception(
                f"not deployed: {result.error} (ini iac_skip_not_deployed)",
                _use_item_location=True,
            )

    def runtest(self) -> None:
        result = self.stash[_RESULT_KEY]
        if result.status != "clean":
            raise DriftFound(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if not isinstance(excinfo.value, DriftFound):
            return super().repr_failure(excinfo)
        result: DriftResult = excinfo.value.args[0]
        if result.status == "not-deployed":
            return (
                f"not deployed: {result.error} in {result.name}, a root module under a live "
                "path named for this run, so there is nothing to check it against. Deploy it "
                "(a backend, then apply), exclude it (ini iac_live_exclude), or set ini "
                "iac_skip_not_deployed = true to skip such directories."
            )
        if result.status == "never-applied":
            return (
                f"never applied: the state of {result.name} holds no resource, so its plan "
                f"creates everything ({_counts_text(result)}). Apply it, or check that its "
                f"backend settings point at its state.\n{result.table()}"
            )
        return (
            f"drift in {result.name}: the plan is not empty "
            f"({_counts_text(result)})\n{result.table()}"
        )

    def reportinfo(self) -> tuple[Path, int | None, str]:
        # Line 0: skips are reported at the item, and need a line.
        return self.path, 0, f"drift check of {relative_name(self.path, self.config.rootpath)}"


def _counts_text(result: DriftResult) -> str:
    c = result.counts
    return (
        f"configuration drift {c['configuration_drift']}, state drift {c['state_drift']}, "
        f"output changes {c['output_changes']}"
    )


def _drift_run(config: pytest.Config) -> DriftRun:
    state = config.stash[_STATE_KEY]
    if state._drift_run is None:
        run = config.stash[RUN_KEY]
        try:
            terraform, init_cache = run.terraform, run.init_cache  # the latter asks the version
        except IacError as error:
            pytest.fail(str(error), pytrace=False)
        state._drift_run = DriftRun(
            terraform,
            run.workdir / "drift",
            config.rootpath,
            state.backend_config,
            init_cache=init_cache,
            workers=state.workers,
            # Output of many directories at once would land in whichever item's captured
            # log is open: shown only when it is shown live (-s, log_cli).
            quiet_pool=not _live_output(config),
        )
    return state._drift_run


def _live_output(config: pytest.Config) -> bool:
    if config.getoption("capture") == "no":
        return True
    try:
        return bool(config.getini("log_cli"))
    except ValueError:  # -p no:logging
        return False


def _submit_pending(item: DriftItem, run: DriftRun) -> None:
    """Start the checks of this item and of the drift items that will run after it here."""
    state = item.config.stash[_STATE_KEY]
    run.submit(item.live_dir)
    if not _is_worker(item.config) and not state.pooled:
        # Every item, once: pytest has deselected what -k/-m leave out.
        state.pooled = True
        for other in item.session.items:
            if isinstance(other, DriftItem):
                run.submit(other.live_dir)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Under pytest-xdist a worker knows only the item it runs and the next one: start both.

    Both run at once in the worker's pool (two threads at least), and the one after the
    next is queued as soon as this item has reported.
    """
    if _is_worker(item.config) and isinstance(item, DriftItem):
        run = _drift_run(item.config)
        run.submit(item.live_dir)
        if isinstance(nextitem, DriftItem):
            run.submit(nextitem.live_dir)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not isinstance(item, DriftItem):
        return report
    result = item.stash.get(_RESULT_KEY, None)
    final = (report.when == "call") or (report.when == "setup" and report.outcome != "passed")
    if result is not None and final:
        setattr(report, _REPORT_ATTRIBUTE, result.to_dict())
    return report


# The marker and its fixture


@dataclass(frozen=True, kw_only=True)
class DriftOptions:
    """The keyword arguments of `@pytest.mark.drift(path, *, backend_config=..., vars=...)`."""

    backend_config: Mapping[str, Any] | None = None
    vars: Mapping[str, Any] | None = None


def _marker_target(request: pytest.FixtureRequest) -> tuple[Path, DriftOptions]:
    marker = request.node.get_closest_marker("drift")
    if marker is None:
        raise pytest.UsageError(
            f"{request.node.nodeid}: the iac_drift fixture needs @pytest.mark.drift(path) to "
            "name the live directory to plan"
        )
    if len(marker.args) > 1:
        raise pytest.UsageError(
            f"{request.node.nodeid}: @pytest.mark.drift takes one path, got {marker.args!r}"
        )
    try:
        options = DriftOptions(**marker.kwargs)
    except TypeError as error:
        valid = ", ".join(DriftOptions.__dataclass_fields__)
        raise pytest.UsageError(
            f"{request.node.nodeid}: @pytest.mark.drift: {error}; its keyword arguments are {valid}"
        ) from None
    path = Path(request.path).parent / (marker.args[0] if marker.args else ".")
    if not path.is_dir():
        raise pytest.UsageError(
            f"{request.node.nodeid}: @pytest.mark.drift({marker.args[0]!r}): {path} is not a "
            "directory (relative paths start at the test file's directory)"
        )
    return path, options


@pytest.fixture
def iac_drift(request: pytest.FixtureRequest) -> Plan:
    """The `Plan` of the live directory named by `@pytest.mark.drift(path)`: plan-only.

    For policies of your own: `assert not iac_drift.deletes`. Errors when the plan fails.
    """
    path, options = _marker_target(request)
    result = _drift_run(request.config).check(
        path,
        backend_config=[options.backend_config] if options.backend_config else [],
        vars=options.vars,
    )
    _warn_undeclared(result)
    if result.status == "error" or result.plan is None:
        pytest.fail(f"could not check {result.name} for drift:\n{result.error}", pytrace=False)
    return result.plan


def _warn_undeclared(result: DriftResult) -> None:
    """Values for variables the directory does not declare: Terraform ignores them quietly."""
    if result.undeclared:
        warnings.warn(
            IacWarning(
                f"{result.name} declares no variable {', '.join(result.undeclared)}: the value "
                "given (terraform.tfvars, *.auto.tfvars or the drift marker's vars) is ignored "
                "(a typo, or a variable the directory no longer has?)"
            ),
            stacklevel=2,
        )


# Reports


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    state = config.stash[_STATE_KEY]
    # An xdist controller collects nothing itself: it only knows how many items its workers did.
    if state.enabled and not state.found and not state.collected_by_workers:
        terminalreporter.line(_nothing_found(config), yellow=True)
    if state.results:
        terminalreporter.section("pytest-iac: drift")
    for result in sorted(state.results, key=lambda r: r["name"]):
        markup = {"clean": {"green": True}, "drift": {"red": True}}.get(
            result["status"], {"yellow": True}
        )
        terminalreporter.line(reports.summary_line(result), **markup)
    for path in _written(config):
        terminalreporter.line(f"report: {path}")


def _nothing_found(config: pytest.Config) -> str:
    looked = ", ".join(relative_name(p, config.rootpath) for p in _live_trees(config))
    return (
        f"pytest-iac: -m drift found no live root module (looked under: {looked}). A live root "
        "is a directory of .tf (or .tf.json) files, not hidden, that no module calls as a local "
        "source and that matches no iac_live_exclude glob, with a backend (or cloud) block or "
        "a local terraform.tfstate (under a live path named on the command line or in ini "
        "iac_live_dirs, one with neither is reported as not deployed). Name the live "
        "directories (`pytest -m drift live/`) or list them in ini iac_live_dirs."
    )


_WRITTEN_KEY = pytest.StashKey[list[Path]]()


def _written(config: pytest.Config) -> list[Path]:
    return config.stash.get(_WRITTEN_KEY, [])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    state = config.stash[_STATE_KEY]
    if config.pluginmanager.has_plugin("dsession"):
        state.collected_by_workers = session.testscollected
    if state._drift_run is not None:
        state._drift_run.close()  # after -x or Ctrl-C: checks not started yet are dropped
    if _is_worker(config) or not (state.report_json or state.report_md):
        return
    run = config.stash[RUN_KEY]
    try:
        engine = run.terraform.describe() if state.results else None
    except IacError:
        engine = None
    changes = config.stash.get(CHANGES_KEY, None)
    promotion = config.stash.get(PROMOTION_KEY, None)  # beside the drift results
    if state.vcs is None and state.vcs_later is not None:
        state.vcs = state.vcs_later.result()
    document = reports.document(
        state.results,
        engine=engine,
        vcs=state.vcs.to_dict() if state.vcs else None,
        changes=changes.to_dict() if changes else None,
        promotion=promotion,
    )
    written: list[Path] = []
    if state.report_json:
        reports.write_json(state.report_json, document)
        written.append(state.report_json)
    if state.report_md:
        written += reports.write_markdown(state.report_md, document)
    config.stash[_WRITTEN_KEY] = written
