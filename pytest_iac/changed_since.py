"""pytest glue of `--iac-changed-since REF`: run only the sandbox tests and live directories
a change touches. Loaded by plugin.py as a plugin of its own.

The changed files (`vcs.changed_since`) are found when pytest starts, so a wrong REF stops the
run before anything is collected or deployed. After collection (and after `-k`/`-m`), each
sandbox test and drift item gets a `Watch` of what its result depends on; `affected.select`
decides, and what it leaves out goes through pytest's own deselection.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from pytest_iac import tfconfig, vcs
from pytest_iac.affected import LIVE_DIR, SANDBOX_TEST, Layout, Watch, select, summary
from pytest_iac.deploy_paths import Deploy, deploy_calls
from pytest_iac.drift_items import DriftItem, backend_files
from pytest_iac.errors import IacError
from pytest_iac.fixtures import CHANGES_KEY, DEPLOYMENT, DEPLOYS, deploys

# What the summary says: its line, then each kept item's node id and why. Plain data: under
# pytest-xdist the workers select, and the controller prints what the first one sends.
_SUMMARY_KEY = pytest.StashKey[dict[str, Any]]()
_WORKER_OUTPUT = "iac_changed_since"
_ENV = "PYTEST_IAC_CHANGED_SINCE"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("iac").addoption(
        "--iac-changed-since",
        metavar="REF",
        help="run only the sandbox tests and live directories that files changed since the "
        "merge base of REF and HEAD (and uncommitted ones) can affect "
        f"(ini iac_changed_since; env {_ENV})",
    )
    parser.addini("iac_changed_since", "git ref: run only what changed since it affects")


def pytest_configure(config: pytest.Config) -> None:
    ref = (
        config.getoption("iac_changed_since")
        or config.getini("iac_changed_since")
        or os.environ.get(_ENV)
    )
    if not ref or config.option.iac_cleanup or config.option.iac_cleanup_dry_run:
        return
    try:
        config.stash[CHANGES_KEY] = vcs.changed_since(str(ref), config.rootpath)
    except IacError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.hookimpl(trylast=True)  # after -k and -m: the summary counts what they left
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    changes = config.stash.get(CHANGES_KEY, None)
    if changes is None:
        return
    layout = Layout(
        rootdir=config.rootpath.resolve(),
        top=changes.root,
        pytest_files=tuple(config.getini("python_files")),
        inifile=config.inipath.resolve() if config.inipath else None,
        imported=_imported() if any(f.suffix == ".py" for f in changes.files) else (),
    )
    watch = _Watches(config, layout.rootdir)
    watches = {item: watch(item) for item in items}
    selection = select(watches, changes.files, layout)
    since = f"{changes.ref} (merge base {changes.merge_base[:7]})"
    config.stash[_SUMMARY_KEY] = {
        "line": summary(selection, len(changes.files), since),
        "kept": [[item.nodeid, why] for item, why in selection.kept.items()],
    }
    if selection.deselected:
        dropped = set(selection.deselected)
        config.hook.pytest_deselected(items=selection.deselected)
        items[:] = [item for item in items if item not in dropped]


def _imported() -> set[Path]:
    """Files of the Python modules loaded so far: the code the collected tests import."""
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    return {Path(f).resolve() for f in files if f}


class _Watches:
    """Makes each item's `Watch`; a module closure several items share is read once."""

    def __init__(self, config: pytest.Config, rootdir: Path) -> None:
        self.rootdir = rootdir
        self.backend_files = frozenset(f.resolve() for f in backend_files(config))
        self._modules: dict[Path, tuple[frozenset[Path], str | None]] = {}

    def __call__(self, item: pytest.Item) -> Watch | None:
        """What `item`'s result depends on; None for an item this option never deselects."""
        if isinstance(item, DriftItem):
            files = self.conftests(item.live_dir) | self.backend_files
            return self.watch(LIVE_DIR, {item.live_dir}, files)
        if not deploys(item):
            return None
        deployed = _deployed(item, self.rootdir)
        if deployed is None:
            always = "it deploys a path only known at run time"
            return Watch(SANDBOX_TEST, frozenset(), always=always)
        roots, var_files = deployed
        files = self.conftests(item.path.parent) | var_files | {item.path.resolve()}
        return self.watch(SANDBOX_TEST, roots, files)

    def watch(self, kind: str, roots: Iterable[Path], files: frozenset[Path]) -> Watch:
        trees: set[Path] = set()
        unknown = None
        for root in roots:
            modules, why = self.modules(root)
            trees |= modules
            unknown = unknown or why
        return Watch(kind, frozenset(trees), files, always=unknown)

    def conftests(self, directory: Path) -> frozenset[Path]:
        """The conftest.py files pytest loads for `directory`: there and up to the rootdir."""
        found = set()
        for current in (directory.resolve(), *directory.resolve().parents):
            found.add(current / "conftest.py")
            if current == self.rootdir:
                break
        return frozenset(found)

    def modules(self, directory: Path) -> tuple[frozenset[Path], str | None]:
        """`directory`, the local modules it calls (transitively) and calls to missing ones;
        and why these may not be all, when a file or a module source cannot be read."""
        directory = directory.resolve()
        if directory not in self._modules:
            closure = tfconfig.read_closure(directory)
            found, why = {directory, *closure}, None
            for module in closure.values():
                found |= module.local_module_dirs
                if why is None and module.unreadable:
                    bad = module.unreadable[0]
                    why = f"its module calls are unknown: {self.shown(bad.path)}: {bad.reason}"
                elif why is None and any(c.source is None for c in module.module_calls.values()):
                    where = self.shown(module.directory)
                    why = f"its module calls are unknown: a source in {where} is not a literal"
            self._modules[directory] = (frozenset(found), why)
        return self._modules[directory]

    def shown(self, path: Path) -> str:
        return (
            path.relative_to(self.rootdir).as_posix()
            if path.is_relative_to(self.rootdir)
            else str(path)
        )


def _deployed(item: pytest.Item, rootdir: Path) -> tuple[set[Path], set[Path]] | None:
    """The directories a deploying test deploys and the var files it passes (None when a
    path cannot be read).

    The test file's directory (a test beside its module), what `deployment()` fixtures name,
    and the paths the test and its fixtures pass to the deploy fixtures (`iac_deploy`, ...).
    """
    test_dir = item.path.parent.resolve()
    roots: set[Path] = {test_dir}
    var_files: set[Path] = set()

    def add(scope: str, deploy: Deploy) -> None:
        base = rootdir if scope in ("session", "package") else test_dir
        roots.add((base / deploy.path).resolve())
        var_files.update((base / f).resolve() for f in deploy.var_files)

    closure = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
    factories: dict[str, str] = {}  # deploy fixtures that take a path: name -> scope
    for name, defs in closure.items():
        func = defs[-1].func
        if hasattr(func, DEPLOYMENT):
            scope, path, files = getattr(func, DEPLOYMENT)
            add(scope, Deploy(path, files))
        elif getattr(func, DEPLOYS, False):
            factories[name] = defs[-1].scope
    users = [(item.obj, set(item._fixtureinfo.argnames))]  # type: ignore[attr-defined]
    # Every definition: an override that requests its own name runs the one it overrides.
    users += [(d.func, set(d.argnames)) for defs in closure.values() for d in defs]
    for function, arguments in users:
        for factory in arguments & factories.keys():
            deploys = deploy_calls(function, factory)
            if deploys is None:
                return None
            for deploy in deploys:
                add(factories[factory], deploy)
    return roots, var_files


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: unknown without it
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: keep what the first worker that selected reports."""
    output = getattr(node, "workeroutput", None) or {}
    if _WORKER_OUTPUT in output:
        node.config.stash.setdefault(_SUMMARY_KEY, output[_WORKER_OUTPUT])


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and _SUMMARY_KEY in session.config.stash:
        workeroutput[_WORKER_OUTPUT] = session.config.stash[_SUMMARY_KEY]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    report = config.stash.get(_SUMMARY_KEY, None)
    if report is None:
        return
    terminalreporter.line(f"iac-changed-since: {report['line']}")
    if config.option.verbose > 0:
        for nodeid, why in report["kept"]:
            terminalreporter.line(f"  {nodeid}: {why}")
