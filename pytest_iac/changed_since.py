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
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_iac import vcs
from pytest_iac.affected import LIVE_DIR, SANDBOX_TEST, Layout, Selection, Watch, select, summary
from pytest_iac.deploy_paths import deploy_paths
from pytest_iac.drift_items import DriftItem, backend_files
from pytest_iac.errors import IacError
from pytest_iac.fixtures import CHANGES_KEY, DEPLOYMENT, DEPLOYS, deploys
from pytest_iac.live import local_sources, module_closure

_SELECTION_KEY = pytest.StashKey[Selection[pytest.Item]]()
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
    watches = {item: _watch(item, layout.rootdir) for item in items}
    selection = select(watches, changes.files, layout)
    config.stash[_SELECTION_KEY] = selection
    if selection.deselected:
        dropped = set(selection.deselected)
        config.hook.pytest_deselected(items=selection.deselected)
        items[:] = [item for item in items if item not in dropped]


def _imported() -> set[Path]:
    """Files of the Python modules loaded so far: the code the collected tests import."""
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    return {Path(f).resolve() for f in files if f}


def _watch(item: pytest.Item, rootdir: Path) -> Watch | None:
    """What `item`'s result depends on; None for an item this option never deselects."""
    conftests = frozenset(_conftests(item.path, rootdir))
    if isinstance(item, DriftItem):
        files = conftests | {f.resolve() for f in backend_files(item.config)}
        return Watch(LIVE_DIR, _modules(item.live_dir), files)
    if not deploys(item):
        return None
    roots = _deployed(item, rootdir)
    if roots is None:
        return Watch(SANDBOX_TEST, frozenset(), always="it deploys a path only known at run time")
    trees = frozenset().union(*(_modules(root) for root in roots))
    return Watch(SANDBOX_TEST, trees, conftests | {item.path.resolve()})


def _conftests(path: Path, rootdir: Path) -> Iterator[Path]:
    """The conftest.py files pytest loads for `path`: in its directory and up to the rootdir."""
    for directory in (path.parent, *path.parent.parents):
        yield directory.resolve() / "conftest.py"
        if directory.resolve() == rootdir:
            return


def _modules(directory: Path) -> frozenset[Path]:
    """`directory`, the local modules it calls (transitively), and calls to missing ones."""
    closure = module_closure(directory)
    called = {source for module in closure for source in local_sources(module)}
    return frozenset({directory.resolve(), *closure, *called})


def _deployed(item: pytest.Item, rootdir: Path) -> set[Path] | None:
    """The directories a deploying test deploys (None when a path cannot be read).

    The test file's directory (a test beside its module), what `deployment()` fixtures name,
    and the paths the test and its fixtures pass to the deploy fixtures (`iac_deploy`, ...).
    """
    test_dir = item.path.parent.resolve()
    roots = {test_dir}
    closure = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
    factories: dict[str, str] = {}  # deploy fixtures that take a path: name -> scope
    for name, defs in closure.items():
        func = defs[-1].func
        if hasattr(func, DEPLOYMENT):
            path, scope = getattr(func, DEPLOYMENT)
            roots.add(((rootdir if scope in ("session", "package") else test_dir) / path).resolve())
        elif getattr(func, DEPLOYS, False):
            factories[name] = defs[-1].scope
    users = [(item.obj, set(item._fixtureinfo.argnames))]  # type: ignore[attr-defined]
    users += [(defs[-1].func, set(defs[-1].argnames)) for defs in closure.values()]
    for function, arguments in users:
        for factory in arguments & factories.keys():
            paths = deploy_paths(function, factory)
            if paths is None:
                return None
            base = rootdir if factories[factory] in ("session", "package") else test_dir
            roots.update((base / path).resolve() for path in paths)
    return roots


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    selection = config.stash.get(_SELECTION_KEY, None)
    if selection is None:
        return
    changes = config.stash[CHANGES_KEY]
    since = f"{changes.ref} (merge base {changes.merge_base[:7]})"
    terminalreporter.line(f"iac-changed-since: {summary(selection, len(changes.files), since)}")
    if config.option.verbose > 0:
        for item, why in selection.kept.items():
            terminalreporter.line(f"  {item.nodeid}: {why}")
