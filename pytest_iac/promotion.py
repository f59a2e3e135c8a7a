"""The promotion view of live configuration: which version of each module every environment
runs, and whether anything is unpinned or promoted out of order. No pytest import here.

`read_promotion()` finds the live root modules under the trees given (the drift discovery
rule, `pytest_iac.live`), reads every module call of each one and of the local modules it
calls (`pytest_iac.tfconfig`: static, no init, no network) and gives each call's source and
pin (`pytest_iac.versions`) the environment of the live directory it belongs to:

- with `environments` (ini `iac_environments = dev staging prod`), the first component of
  the directory's path (under its tree) that is one of those names; their order is the
  promotion order;
- otherwise the first component of the path under the tree that is a usual environment
  name (`dev`, `test`, `qa`, `uat`, `staging`, `preprod`, `prod`, and their long forms:
  `live/aws/prod/app` is in `prod`), else its first component (`live/blue/app`: `blue`). The
  order is then the usual one when every environment has a usual name; else there is none,
  and the order rule is not applied (the report says so).

Each module (one address, at any version) is then checked against two rules:

- *pinned*: every remote call of it names an immutable version (`versions.Pin`); local
  paths are the live tree's own code and are only listed;
- *in order*: no environment runs a newer version than an environment before it in the
  promotion order. Versions that cannot be ordered (commit SHAs, tags of different series)
  are noted as such, never guessed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_iac import tfconfig
from pytest_iac.live import find_live_roots
from pytest_iac.versions import ModuleSource, Pin, parse_source

# The usual environment names, by rank in the usual promotion order.
USUAL_ORDER = {
    **dict.fromkeys(("dev", "develop", "development"), 0),
    **dict.fromkeys(("test", "testing", "qa", "int", "integration"), 1),
    **dict.fromkeys(("uat", "stage", "stg", "staging"), 2),
    **dict.fromkeys(("preprod", "pre-prod", "preproduction"), 3),
    **dict.fromkeys(("prod", "prd", "production"), 4),
}
PINNED_RULE = (
    "remote modules are pinned to an immutable version "
    "(a release tag, a commit SHA, an exact registry version)"
)
ORDER_RULE = (
    "no environment runs a newer version than an environment before it in the promotion order"
)


@dataclass(frozen=True)
class Use:
    """One module call in a live root module (or in a local module it calls)."""

    live_dir: str  # the live root module, relative to the run's base
    environment: str | None
    call: str  # the module block's name; `a/b` when `a` is a local module calling `b`
    source: ModuleSource | None  # None: what is called cannot be read (see `problem`)
    problem: str = ""

    @property
    def label(self) -> str:
        return self.source.pin.label if self.source else "(not literal)"

    def where(self) -> str:
        env = self.environment or "no environment"
        if not self.call:
            return f"{self.live_dir} ({env})"
        return f"{self.live_dir} ({env}, module.{self.call.replace('/', '.module.')})"

    def to_dict(self) -> dict[str, Any]:
        source = self.source
        return {
            "live_dir": self.live_dir,
            "environment": self.environment,
            "call": self.call,
            "source": source.shown if source else None,
            "version": self.label,
            "pinned": source.pin.status if source else "unknown",
        }


@dataclass
class ModuleReport:
    """Every use of one module in the live tree, and what the rules found."""

    address: str  # its identity: the source without its version
    name: str  # how items and reports call it
    kind: str
    uses: list[Use]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # the environments, in promotion order

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def local(self) -> bool:
        return self.kind == "local"

    def versions(self) -> dict[str, list[str]]:
        """environment -> the versions it runs, in promotion order (`?`: in no environment)."""
        found: dict[str, set[str]] = {}
        for use in self.uses:
            found.setdefault(use.environment or "?", set()).add(use.label)
        rank = {env: i for i, env in enumerate(self.order)}
        ordered = sorted(found, key=lambda e: (e == "?", rank.get(e, len(rank)), e))
        return {env: sorted(found[env]) for env in ordered}

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.name,
            "address": self.address,
            "kind": self.kind,
            "ok": self.ok,
            "versions": self.versions(),
            "failures": list(self.failures),
            "notes": list(self.notes),
            "uses": [u.to_dict() for u in self.uses],
        }


@dataclass
class Promotion:
    """The promotion view of a live tree: environments in order, and every module's report."""

    environments: list[str]  # in promotion order (or sorted, when there is no order)
    ordered: bool  # is `environments` a promotion order?
    order_from: str  # where the order came from, in words
    modules: list[ModuleReport]
    unplaced: list[str] = field(default_factory=list)  # live dirs in no named environment

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.modules)

    def to_dict(self) -> dict[str, Any]:
        return {
            "environments": list(self.environments),
            "ordered": self.ordered,
            "order_from": self.order_from,
            "ok": self.ok,
            "unplaced": list(self.unplaced),
            "modules": [m.to_dict() for m in self.modules],
        }


def read_promotion(
    trees: Sequence[Path],
    *,
    base: Path,
    environments: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Promotion:
    """The promotion view of the live root modules under `trees` (see the module docs)."""
    uses: list[Use] = []
    unplaced: list[str] = []
    for tree in trees:
        for live_dir in find_live_roots([tree], base=base, exclude=exclude):
            name = _relative(live_dir, base)
            environment = environment_of(live_dir, tree, environments)
            if environment is None:
                unplaced.append(name)
            uses.extend(_uses(live_dir, name, environment, base))
    named = environments or sorted({u.environment for u in uses if u.environment})
    if environments:
        ordered, order_from = True, "ini iac_environments"
    elif named and all(e in USUAL_ORDER for e in named):
        named = sorted(named, key=lambda e: (USUAL_ORDER[e], e))
        ordered, order_from = True, "the usual order of these names (set ini iac_environments)"
    else:
        ordered = False
        order_from = "none: set ini iac_environments to the environments in promotion order"
    modules = _by_module(uses)
    for module in modules:
        module.order = list(named)
        check(module, list(named) if ordered else None)
    return Promotion(list(named), ordered, order_from, modules, sorted(set(unplaced)))


def environment_of(live_dir: Path, tree: Path, environments: Sequence[str]) -> str | None:
    """The environment of `live_dir` (under `tree`): the first component of its path that is
    one of `environments`; without those, the first that is a usual name, else the first."""
    try:
        parts = live_dir.resolve().relative_to(tree.resolve()).parts
    except ValueError:
        parts = live_dir.resolve().parts
    if environments:
        return next((p for p in parts if p in environments), None)
    if not parts:
        return tree.resolve().name
    return next((p for p in parts if p in USUAL_ORDER), parts[0])


def _uses(live_dir: Path, name: str, environment: str | None, base: Path) -> list[Use]:
    """Every module call of `live_dir` and, through local calls, of the modules it uses."""
    found: list[Use] = []
    pending: list[tuple[Path, str]] = [(live_dir.resolve(), "")]
    seen: set[Path] = set()
    while pending:
        directory, prefix = pending.pop()
        if directory in seen:
            continue
        seen.add(directory)
        module = tfconfig.read_module(directory)
        for unreadable in module.unreadable:
            problem = f"{unreadable}: the module calls in that file are unknown"
            found.append(Use(name, environment, prefix.rstrip("/"), None, problem))
        for call in module.module_calls.values():
            path = f"{prefix}{call.name}"
            if call.source is None:
                problem = "its source is not a literal string: no version to read without Terraform"
                found.append(Use(name, environment, path, None, problem))
                continue
            source = parse_source(call.source, call.version)
            if source.kind == "local":
                target = (directory / call.source).resolve()
                source = ModuleSource(call.source, "local", _relative(target, base), pin=source.pin)
                pending.append((target, f"{path}/"))
            found.append(Use(name, environment, path, source))
    return found


def _by_module(uses: Iterable[Use]) -> list[ModuleReport]:
    groups: dict[tuple[str, str], list[Use]] = {}
    for use in uses:
        if use.source is None:  # no identity: a module of its own, which fails
            key = ("unknown", f"{use.live_dir}: {use.call or 'files'}")
        else:
            key = (use.source.kind, use.source.address)
        groups.setdefault(key, []).append(use)
    names = _names(list(groups))
    reports = [
        ModuleReport(address, names[address], kind, sorted(found, key=_use_order))
        for (kind, address), found in groups.items()
    ]
    return sorted(reports, key=lambda m: (m.local, m.name))


def _use_order(use: Use) -> tuple[str, str]:
    return (use.live_dir, use.call)


def _names(modules: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A readable name per address: `repository//sub` for a repository or archive, unless
    two modules would share it (then the whole address); registry and local addresses as
    they are."""
    short = {}
    for kind, address in modules:
        repository, _, subdir = address.partition("//")
        if kind in ("registry", "local", "unknown") or "/" not in repository:
            short[address] = address
        else:
            last = repository.rstrip("/").rsplit("/", 1)[-1]
            short[address] = f"{last}//{subdir}" if subdir else last
    taken = list(short.values())
    return {a: n if taken.count(n) == 1 else a for a, n in short.items()}


def check(module: ModuleReport, order: list[str] | None) -> ModuleReport:
    """Apply the pinned and in-order rules to `module`; `order`: the promotion order, if any."""
    if module.kind == "unknown":
        module.failures += [f"unreadable: {use.where()}: {use.problem}" for use in module.uses]
        return module
    if module.local:
        return module
    for use in module.uses:
        assert use.source is not None
        pin = use.source.pin
        if pin.status == "mutable":
            module.failures.append(
                f"not pinned: {use.where()} uses {use.source.shown!r}"
                + (f" (version {use.source.ref!r})" if use.source.kind == "registry" else "")
                + f": {pin.reason}. Rule: {PINNED_RULE}."
            )
    if order is None:
        module.notes.append("promotion order unknown: set ini iac_environments to check it")
        return module
    rank = {env: i for i, env in enumerate(order)}
    placed = [u for u in module.uses if u.environment in rank and u.source is not None]
    placed = [u for u in placed if u.source is not None and u.source.pin.status == "pinned"]
    for earlier, later in itertools.product(placed, placed):
        if rank[earlier.environment or ""] >= rank[later.environment or ""]:
            continue
        a, b = _pin(earlier), _pin(later)
        compared = b.compare(a)
        if compared == 1:
            module.failures.append(
                f"out of order: {later.live_dir} ({later.environment}) runs {b.label}, newer than "
                f"{a.label} in {earlier.live_dir} ({earlier.environment}); order "
                f"{' < '.join(order)}. Rule: {ORDER_RULE}."
            )
        elif compared is None:
            module.notes.append(
                f"cannot be ordered: {later.live_dir} ({later.environment}) runs {b.label} and "
                f"{earlier.live_dir} ({earlier.environment}) runs {a.label}: "
                f"{b.why_unorderable(a)}"
            )
    return module


def _pin(use: Use) -> Pin:
    assert use.source is not None
    return use.source.pin


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix() or "."
    except ValueError:
        return path.resolve().as_posix()


def matrix_lines(promotion: Promotion | Mapping[str, Any]) -> list[str]:
    """The matrix module x environment -> version as aligned text lines, one per module."""
    data = promotion.to_dict() if isinstance(promotion, Promotion) else promotion
    environments = list(data["environments"])
    if any("?" in m["versions"] for m in data["modules"]):
        environments.append("?")
    header = ["module", *environments, "result"]
    rows = [header]
    for module in data["modules"]:
        versions = module["versions"]
        result = "ok" if module["ok"] else "FAILED"
        if module["kind"] == "local":
            result = "local path"
        rows.append(
            [module["module"], *(", ".join(versions.get(e, ["-"])) for e in environments), result]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
