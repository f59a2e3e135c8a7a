"""pytest glue: options, ini values, markers, hooks and the fixtures' registration. Thin."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from pytest_iac import redact, signals
from pytest_iac.advice import repeated_failure, scope_advice
from pytest_iac.cleanup import cleanup
from pytest_iac.engine import (
    DEFAULT_RETRYABLE_ERRORS,
    DEFAULT_TIMEOUT,
    Settings,
    known_version,
    provider_mirrors_from_env,
)
from pytest_iac.errors import IacError
from pytest_iac.fixtures import (
    REPORTS_KEY,
    RUN_KEY,
    deploys,
    iac_deploy,
    iac_module_deploy,
    iac_name,
    iac_plan,
    iac_session_deploy,
)
from pytest_iac.ledger import Tally
from pytest_iac.plan import explain
from pytest_iac.run import (
    TEARDOWN_POLICIES,
    HomeError,
    IacRun,
    find_project,
    leftovers_line,
    new_run_id,
    plugin_cache,
)
from pytest_iac.sandbox import SensitiveStr

_LIVE_OUTPUT_KEY = pytest.StashKey[logging.Handler]()
_SIGNALS_KEY = pytest.StashKey[Callable[[], None]]()
_TALLY_KEY = pytest.StashKey[Tally]()  # what xdist workers reported

__all__ = ["iac_deploy", "iac_module_deploy", "iac_name", "iac_plan", "iac_session_deploy"]

# Drift checks (live root modules as items, the drift marker's fixture, reports), promotion
# items, the AWS sandbox, --iac-changed-since, and the progress display of long commands.
pytest_plugins = [
    "pytest_iac.promotion_items",  # before drift_items, which imports it: rewritten first
    "pytest_iac.drift_items",
    "pytest_iac.aws_plugin",
    "pytest_iac.changed_since",
    "pytest_iac.progress_plugin",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iac", "pytest-iac: Terraform sandbox deployments and drift checks")
    group.addoption(
        "--iac-binary",
        help="Terraform engine: a path or name of terraform/tofu, or 'embedded' "
        "(default: terraform, then tofu on PATH, then the embedded engine; "
        "env PYTEST_IAC_BINARY; ini iac_binary)",
    )
    group.addoption(
        "--iac-timeout",
        type=float,
        help=f"seconds one terraform command may run (default {DEFAULT_TIMEOUT:g}; "
        "ini iac_timeout)",
    )
    group.addoption(
        "--iac-retries",
        type=int,
        help="retries of a command that failed with a transient error (default 3; ini iac_retries)",
    )
    group.addoption(
        "--iac-retry-wait",
        type=float,
        help="seconds before the first retry, doubling up to 30 (default 2; ini iac_retry_wait)",
    )
    group.addoption(
        "--iac-provider-mirror",
        action="append",
        default=[],
        metavar="DIR",
        help="a filesystem mirror of providers, repeatable (ini iac_provider_mirrors; "
        "env PYTEST_IAC_PROVIDER_MIRROR, separated like PATH)",
    )
    group.addoption(
        "--iac-teardown",
        choices=TEARDOWN_POLICIES,
        help="when to destroy sandbox deployments: always (default), on-success (keep a "
        "failed test's deployment for debugging) or never (ini iac_teardown)",
    )
    group.addoption(
        "--iac-cleanup",
        action="store_true",
        help="run no tests: destroy every deployment in this project's ledger (what "
        "interrupted or failed runs left), and exit non-zero if any is left",
    )
    group.addoption(
        "--iac-cleanup-dry-run",
        action="store_true",
        help="run no tests: list what --iac-cleanup would destroy",
    )
    group.addoption(
        "--iac-cleanup-force",
        action="store_true",
        help="with --iac-cleanup: destroy deployments of pytest processes that still run too",
    )
    parser.addini("iac_binary", "Terraform engine: path, name or 'embedded'")
    parser.addini("iac_timeout", "seconds one terraform command may run")
    parser.addini("iac_retries", "retries of a command that failed with a transient error")
    parser.addini("iac_retry_wait", "seconds before the first retry; doubles up to 30 s")
    parser.addini(
        "iac_retryable_errors",
        "regular expressions (one a line) of retryable output",
        type="linelist",
    )
    parser.addini("iac_provider_mirrors", "filesystem mirrors of providers", type="paths")
    parser.addini("iac_teardown", "always, on-success or never")
    parser.addini(
        "iac_reuse_init",
        "reuse what terraform init made where init reads the same (default true)",
        type="bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox: deploys into the sandbox (added automatically to tests using a deploying "
        "fixture: iac_deploy, iac_module_deploy, iac_session_deploy, pytest_iac.deployment)",
    )
    config.addinivalue_line(
        "markers",
        "drift(path=None, *, backend_config=None, vars=None): plan-only check of a live root "
        "module; gives the test an `iac_drift` fixture with its Plan",
    )
    config.stash[RUN_KEY] = _iac_run(config)
    config.stash[RUN_KEY].notify = functools.partial(signals.tell, config)
    config.stash[_TALLY_KEY] = Tally()
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "iac-xdist")
    if config.getoption("capture") == "no" and not _log_cli(config):
        config.stash[_LIVE_OUTPUT_KEY] = _show_terraform_output()


def _iac_run(config: pytest.Config) -> IacRun:
    """The run's settings from options, then ini, then environment; bad values are usage errors."""

    def setting(option: str, ini: str, env: str | None = None) -> str | None:
        value = config.getoption(option)
        if value is None or value == "":
            value = config.getini(ini) or None
        if value is None and env:
            value = os.environ.get(env) or None
        return str(value) if value is not None else None

    def number(option: str, ini: str, kind: type[float] | type[int], default: float) -> float:
        raw = setting(option, ini)
        try:
            value = kind(raw) if raw is not None else default
        except ValueError:
            raise pytest.UsageError(f"{ini} must be a number, not {raw!r}") from None
        if value < 0:
            raise pytest.UsageError(f"{ini} must not be negative, not {raw!r}")
        return value

    try:
        reuse_init = bool(config.getini("iac_reuse_init"))
    except pytest.UsageError as error:  # pytest's own says only "invalid truth value 'x'"
        raise pytest.UsageError(f"iac_reuse_init must be true or false: {error}") from None
    teardown = setting("iac_teardown", "iac_teardown") or "always"
    if teardown not in TEARDOWN_POLICIES:
        raise pytest.UsageError(
            f"iac_teardown must be one of {', '.join(TEARDOWN_POLICIES)}, not {teardown!r}"
        )
    mirrors = [
        *((Path(m), "--iac-provider-mirror") for m in config.getoption("iac_provider_mirror")),
        *((m, "ini iac_provider_mirrors") for m in config.getini("iac_provider_mirrors")),
        *(
            (m, "PYTEST_IAC_PROVIDER_MIRROR")
            for m in provider_mirrors_from_env(os.environ.get("PYTEST_IAC_PROVIDER_MIRROR"))
        ),
    ]
    missing = [f"{origin} {path}" for path, origin in mirrors if not path.is_dir()]
    if missing:
        raise pytest.UsageError(
            f"provider mirror not found: {'; '.join(missing)}. A mirror is a directory made "
            "by `terraform providers mirror DIR`."
        )
    settings = Settings(
        timeout=number("iac_timeout", "iac_timeout", float, DEFAULT_TIMEOUT),
        retries=int(number("iac_retries", "iac_retries", int, 3)),
        retry_wait=number("iac_retry_wait", "iac_retry_wait", float, 2.0),
        retryable_errors=(*DEFAULT_RETRYABLE_ERRORS, *config.getini("iac_retryable_errors")),
        provider_mirrors=tuple(dict.fromkeys(path for path, _ in mirrors)),
        plugin_cache_dir=plugin_cache(),
    )
    worker = getattr(config, "workerinput", None)
    run = IacRun(
        project=find_project(_inifile(config), config.invocation_params.dir),
        run_id=worker["iac_run_id"] if worker else new_run_id(),
        settings=settings,
        engine_spec=setting("iac_binary", "iac_binary", "PYTEST_IAC_BINARY"),
        teardown=teardown,
        worker=worker["workerid"] if worker else "main",
        reuse_init=reuse_init,
    )
    if run.engine_spec:  # asked for by name: a wrong one is a usage error, found now
        try:
            run.engine  # noqa: B018
        except IacError as error:
            raise pytest.UsageError(str(error)) from None
    return run


def _inifile(config: pytest.Config) -> Path | None:
    """pytest's ini file; else the one pytest finds from the invocation directory when given
    no paths. A plugin option's value in the space form (`--iac-provider-mirror /opt/m`) is
    taken for a path when pytest looks for its ini file, and the search starts there."""
    if config.inipath is not None:
        return config.inipath
    try:  # pytest's own search (private; its signature has changed between releases)
        from _pytest.config.findpaths import locate_config

        here = config.invocation_params.dir
        found = locate_config(here, [here])[1]
    except Exception:  # without it, the git top level still finds the project
        return None
    return found if isinstance(found, Path) else None


class _XdistHooks:
    """Registered only when pytest-xdist is installed: workers share the controller's run id."""

    @staticmethod
    def pytest_configure_node(node: object) -> None:
        config: pytest.Config = node.config  # type: ignore[attr-defined]
        node.workerinput["iac_run_id"] = config.stash[RUN_KEY].run_id  # type: ignore[attr-defined]

    @staticmethod
    def pytest_testnodedown(node: object, error: object) -> None:
        config: pytest.Config = node.config  # type: ignore[attr-defined]
        output = getattr(node, "workeroutput", None) or {}
        if "iac_tally" in output:
            config.stash[_TALLY_KEY].add(Tally.from_json(output["iac_tally"]))


def _log_cli(config: pytest.Config) -> bool:
    """Whether pytest's live logging is on (never, with `-p no:logging`)."""
    try:
        return bool(config.getini("log_cli"))
    except ValueError:
        return False


def _show_terraform_output() -> logging.Handler:
    """With -s, show terraform's output live, as a user running it by hand would see it."""
    logger = logging.getLogger("pytest_iac")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def pytest_report_header(config: pytest.Config) -> str:
    """The engine the run will use: no process, nothing written (the version where known)."""
    run = config.stash[RUN_KEY]
    try:
        engine = run.engine
    except IacError as error:
        return f"iac: no engine ({str(error).splitlines()[0]})"
    return f"iac: {engine.describe(known_version(engine, run.settings.plugin_cache_dir))}"


def _handle_sigterm(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP take Ctrl-C's graceful path from now on (a run that plans or
    deploys)."""
    if _SIGNALS_KEY not in config.stash:
        config.stash[_SIGNALS_KEY] = signals.install()


def pytest_sessionstart(session: pytest.Session) -> None:
    # An xdist controller runs no test itself and cannot tell what its workers will run.
    if session.config.pluginmanager.has_plugin("dsession"):
        _handle_sigterm(session.config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first test that may deploy or plan: a run without one installs nothing."""
    if _uses_iac(item):
        _handle_sigterm(item.config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a deploying fixture `sandbox`, so -m selects it."""
    for item in items:
        if deploys(item):
            item.add_marker(pytest.mark.sandbox)


def pytest_collection_finish(session: pytest.Session) -> None:
    """An unwritable home stops the run here, once, if a selected test needs it. (Not in an
    xdist worker, where a usage error crashes the run: each test that needs it errors.)"""
    if hasattr(session.config, "workerinput"):
        return
    if any(_uses_iac(item) for item in session.items):
        run = session.config.stash[RUN_KEY]
        try:
            run.prepare_home()
        except HomeError as error:
            raise pytest.UsageError(str(error)) from None
        _say_removed_leftovers(session.config, run)


def _say_removed_leftovers(config: pytest.Config, run: IacRun) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if run.removed_leftovers and reporter is not None:
        reporter.write_line(leftovers_line(run.workdir.parent, run.removed_leftovers))


def _uses_iac(item: pytest.Item) -> bool:
    """Whether a test may deploy or plan: it needs the home and the graceful signals."""
    plans = item.get_closest_marker("drift") or "iac_plan" in getattr(item, "fixturenames", ())
    return bool(plans or deploys(item))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Kept per phase so teardown can tell a failed test from a passed one (on-success).
    report = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    if report.when == "setup" and report.failed and call.excinfo is not None:
        # A shared deployment's failure is shown once; a scope mismatch names our fixture.
        error = call.excinfo.value
        repeated = repeated_failure(error)
        advice = scope_advice(str(error)) if isinstance(error, pytest.fail.Exception) else None
        if repeated is not None:
            report.longrepr = repeated
        elif advice is not None:
            report.longrepr = f"{error}\n\n{advice}"
    return report


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """Show the plan behind a failed comparison of plans or changes; never a sensitive output."""
    if isinstance(left, SensitiveStr) or isinstance(right, SensitiveStr):
        return [
            f"<sensitive> {op} <sensitive>",
            "(a sensitive output: values hidden by pytest-iac)",
        ]
    return explain(op, left, right)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """--iac-cleanup and --iac-cleanup-dry-run run instead of the tests, like --fixtures."""
    if not (config.option.iac_cleanup or config.option.iac_cleanup_dry_run):
        return None
    from _pytest.main import wrap_session  # what --fixtures and --markers run through

    return int(wrap_session(config, _cleanup_main))


def _cleanup_main(config: pytest.Config, session: pytest.Session) -> int:
    _handle_sigterm(config)
    run = config.stash[RUN_KEY]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    dry_run = config.option.iac_cleanup_dry_run
    if not dry_run:
        try:
            run.prepare_home()
        except HomeError as error:
            raise pytest.UsageError(str(error)) from None
        _say_removed_leftovers(config, run)
    outcome = cleanup(
        run.ledger,
        settings=run.settings,
        config_dir=run.workdir,
        engine=lambda: run.engine,
        override=run.engine_spec is not None,
        dry_run=dry_run,
        force=config.option.iac_cleanup_force,
        guards=run.guards,
        write=reporter.write_line if reporter is not None else print,
    )
    # A dry run fails only on what needs a hand: records that are refused or damaged.
    return 1 if (outcome.refused if dry_run else outcome.left) else 0


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash[RUN_KEY]
    run.finishing = True  # teardowns from here on must not raise
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        run.interrupts = max(run.interrupts, 1)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["iac_tally"] = dataclasses.asdict(run.tally())
    else:
        _destroy_shared(session.config, run)


def _destroy_shared(config: pytest.Config, run: IacRun) -> None:
    """The xdist controller, every worker done: destroy the session deployments they shared."""
    shared = run.shared_deployments()
    made = len(shared.records())
    if not made:
        return
    said: list[str] = []
    outcome = shared.destroy(
        run.ledger,
        settings=run.settings,
        config_dir=run.workdir,
        engine=lambda: run.engine,
        guards=run.guards,
        write=said.append,
    )
    run.ledger.made += made
    run.ledger.destroyed += len(outcome.destroyed)
    if outcome.failed:  # the summary counts them as left in the ledger
        signals.tell(config, "\n".join(said))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    if config.option.iac_cleanup or config.option.iac_cleanup_dry_run:
        return
    run = config.stash[RUN_KEY]
    tally = run.tally()
    tally.add(config.stash[_TALLY_KEY])
    left = sum(1 for e in run.ledger.entries() if e.record.run_id == run.run_id)
    summary = tally.summary(
        left,
        run.ledger.directory,
        detailed=config.get_verbosity() > 0,
        rootdir=config.rootpath,
    )
    if summary is not None:
        terminalreporter.section(summary.title, red=summary.trouble, yellow=summary.warning)
        for line in summary.lines:
            terminalreporter.line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is not None:
        run.close()
    undo = config.stash.get(_SIGNALS_KEY, None)
    if undo is not None:
        undo()
    handler = config.stash.get(_LIVE_OUTPUT_KEY, None)
    if handler is not None:
        logging.getLogger("pytest_iac").removeHandler(handler)
    redact.SECRETS.clear()  # a run's secrets are its own (pytester runs many in one process)
