"""pytest glue of the promotion view: one item per module used in the live tree, the matrix.

Loaded by plugin.py as a plugin of its own. Like drift checks, promotion items are collected
only when `-m` names `promotion` (`pytest -m promotion live/`, or `-m "drift or promotion"`
for both). Each directory given on the command line (else each of ini `iac_live_dirs`, else
the rootdir) is a live tree: its live root modules (the drift discovery rule) are read
statically by `pytest_iac.promotion`, and the tree gets one item per module they use,
`live::promotion[repo//vpc]`, marked `promotion`, failing on the rules of that module.
The matrix module x environment -> version goes to the terminal summary and, beside the
drift results, to `--iac-report-json` / `--iac-report-md`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_iac.fixtures import selects
from pytest_iac.promotion import ModuleReport, Promotion, matrix_lines, read_promotion

PROMOTION_KEY = pytest.StashKey[dict[str, Any]]()  # the view as a dict, for the reports
_STATE_KEY = pytest.StashKey["_PromotionState"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "iac_environments",
        "environments in promotion order (e.g. dev staging prod): each live directory belongs "
        "to the one its path names (default: a usual name in its path, else its first "
        "component under the live tree)",
        type="args",
    )


@dataclass
class _PromotionState:
    enabled: bool
    trees: list[Path]
    environments: list[str]
    exclude: list[str]
    views: dict[Path, Promotion] = field(default_factory=dict)

    def view(self, tree: Path, base: Path) -> Promotion:
        if tree not in self.views:
            self.views[tree] = read_promotion(
                [tree], base=base, environments=self.environments, exclude=self.exclude
            )
        return self.views[tree]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "promotion: the promotion check of a module used in the live tree (pinned, and "
        "promoted in order); collected with `-m promotion`",
    )
    enabled = selects(config, "promotion")
    live_dirs: list[Path] = list(config.getini("iac_live_dirs"))
    invocation = config.invocation_params.dir
    trees = [invocation / a.split("::")[0] for a in config.args]
    if live_dirs and config.args_source != pytest.Config.ArgsSource.ARGS:
        trees = live_dirs  # `pytest -m promotion` with the live trees named in the ini file
        if enabled:
            config.args.extend(str(d) for d in live_dirs if str(d) not in config.args)
    config.stash[_STATE_KEY] = _PromotionState(
        enabled=enabled,
        trees=sorted({t.resolve() for t in trees if t.is_dir()}),
        environments=list(config.getini("iac_environments")),
        exclude=list(config.getini("iac_live_exclude")),
    )


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A live tree's directory collects its promotion items first, then what it holds."""
    report = yield
    state = collector.config.stash[_STATE_KEY]
    if (
        state.enabled
        and isinstance(collector, pytest.Directory)
        and collector.path.resolve() in state.trees
        and report.passed
    ):
        view = state.view(collector.path.resolve(), collector.config.rootpath)
        report.result[:0] = [
            PromotionItem.from_parent(collector, name=f"promotion[{m.name}]", module=m)
            for m in view.modules
            if not m.local  # a local path is the tree's own code: listed, not checked
        ]
    return report


class PromotionFailed(Exception):
    """A module broke a promotion rule."""


class PromotionItem(pytest.Item):
    """One module of the live tree: fails when a rule of `pytest_iac.promotion` is broken."""

    def __init__(self, *, module: ModuleReport, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.module = module
        self.add_marker(pytest.mark.promotion)

    def runtest(self) -> None:
        if self.module.failures:
            raise PromotionFailed(self.module)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, PromotionFailed):
            module = self.module
            versions = "; ".join(f"{e}: {', '.join(v)}" for e, v in module.versions().items())
            return "\n".join(
                [
                    f"module {module.address}: {len(module.failures)} problem(s)",
                    *(f"- {failure}" for failure in module.failures),
                    f"versions: {versions}",
                ]
            )
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"promotion check of {self.module.name}"


def _views(config: pytest.Config) -> list[tuple[Path, Promotion]]:
    """Each live tree and its view (computed here: an xdist controller collects nothing)."""
    state = config.stash[_STATE_KEY]
    if not state.enabled:
        return []
    return [(tree, state.view(tree, config.rootpath)) for tree in state.trees]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for tree, view in _views(terminalreporter.config):
        terminalreporter.section("pytest-iac: promotion")
        if not view.modules:
            terminalreporter.line(
                f"-m promotion found no module calls in live root modules under {tree}: "
                "name the live tree (`pytest -m promotion live/`) or list it in ini "
                "iac_live_dirs (live roots are found by the drift discovery rule)",
                yellow=True,
            )
            continue
        order = " < ".join(view.environments) if view.ordered else "unknown"
        terminalreporter.line(f"environments: {order} (order from {view.order_from})")
        for line in matrix_lines(view):
            terminalreporter.line(line)
        for module in view.modules:
            for note in module.notes:
                terminalreporter.line(f"note: {module.name}: {note}", yellow=True)
        if view.unplaced:
            terminalreporter.line(
                "note: live directories in none of the environments of ini iac_environments: "
                + ", ".join(view.unplaced),
                yellow=True,
            )


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Leave the view where the report writer (drift_items) finds it."""
    views = [view for _tree, view in _views(session.config)]
    if views:
        merged = views[0].to_dict()
        for view in views[1:]:
            merged["modules"] += view.to_dict()["modules"]
            merged["unplaced"] += view.unplaced
            merged["ok"] = merged["ok"] and view.ok
        session.config.stash[PROMOTION_KEY] = merged
