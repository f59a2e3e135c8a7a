"""`Plan` and `Change`: what `terraform show -json PLANFILE` says a plan would do.

Also the attribute-level diff of a change (`attribute_changes()`), sensitive values hidden
and values known only after apply said so.

Plans and changes explain themselves: `repr()` and `str()` list addresses with their actions,
marked as `terraform plan` marks them (`+` create, `~` update, `-/+` replace, `-` delete, `<=`
read), so a failed assertion on a plan shows what the plan does (`explain()`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_iac.redact import redact

Action = Literal["create", "update", "delete", "replace", "read", "no-op"]

SENSITIVE = "(sensitive)"
KNOWN_AFTER_APPLY = "(known after apply)"
SYMBOLS: dict[str, str] = {
    "create": "+",
    "update": "~",
    "replace": "-/+",
    "delete": "-",
    "read": "<=",
    "no-op": " ",
}
_REPR_CHANGES = 5  # addresses in a repr: a where-line of an assertion stays one short line
_LISTED_CHANGES = 30  # changes in str(): a plan of hundreds is summarised, not dumped
_VALUE_WIDTH = 60


@dataclass(frozen=True)
class Change:
    """One resource's planned change (or, in `Plan.drift`, a change found by refresh)."""

    address: str
    actions: tuple[str, ...]
    before: Any = field(repr=False)
    after: Any = field(repr=False)
    after_unknown: Any = field(default=None, repr=False)
    before_sensitive: Any = field(default=None, repr=False)
    after_sensitive: Any = field(default=None, repr=False)
    action_reason: str | None = None
    # False when only the address and action are known (a clean plan's refresh drift, named
    # from `plan -json` messages): before and after were not read.
    attributes_read: bool = True

    @property
    def action(self) -> Action:
        actions = set(self.actions)
        if {"create", "delete"} <= actions:
            return "replace"
        for name in ("create", "delete", "update", "read"):
            if name in actions:
                return name
        return "no-op"

    @property
    def changed_attributes(self) -> list[str]:
        """Top-level attribute names whose values differ (or become known only on apply)."""
        before = self.before if isinstance(self.before, Mapping) else {}
        after = self.after if isinstance(self.after, Mapping) else {}
        unknown = self.after_unknown if isinstance(self.after_unknown, Mapping) else {}
        names = set(before) | set(after) | {k for k, v in unknown.items() if v}
        return sorted(n for n in names if before.get(n) != after.get(n) or unknown.get(n))

    def is_sensitive(self, attribute: str) -> bool:
        for marks in (self.before_sensitive, self.after_sensitive):
            if marks is True or (isinstance(marks, Mapping) and marks.get(attribute)):
                return True
        return False

    def describe(self, attribute: str) -> str:
        """`attribute: before -> after`, with sensitive values hidden."""
        if self.is_sensitive(attribute):
            return f"{attribute}: {SENSITIVE}"
        before = self.before.get(attribute) if isinstance(self.before, Mapping) else None
        after = self.after.get(attribute) if isinstance(self.after, Mapping) else None
        unknown = isinstance(self.after_unknown, Mapping) and self.after_unknown.get(attribute)
        return f"{attribute}: {before!r} -> {KNOWN_AFTER_APPLY if unknown else repr(after)}"

    def __repr__(self) -> str:
        return f"<Change {self.line()}>"

    def line(self) -> str:
        """`~ terraform_data.app (update)`, as `terraform plan` marks it."""
        return f"{SYMBOLS[self.action]} {self.address} ({self.action})"

    def __str__(self) -> str:
        """The line, then each changed attribute; sensitive values masked."""
        changed = [f"    {a.describe(_VALUE_WIDTH)}" for a in attribute_changes(self)]
        return redact("\n".join([self.line(), *changed]))


class Changes(list[Change]):
    """The changes of a plan with one action (`plan.replaces`...): a list that knows its plan.

    It equals a list of addresses too: `plan.replaces == ["terraform_data.app"]`.
    """

    def __init__(self, changes: Iterable[Change] = (), plan: Plan | None = None) -> None:
        super().__init__(changes)
        self.plan = plan

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list | tuple) and other and all(isinstance(o, str) for o in other):
            return [c.address for c in self] == list(other)
        return super().__eq__(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # a list: unhashable

    @property
    def addresses(self) -> list[str]:
        return [c.address for c in self]


@dataclass(frozen=True)
class OutputChange:
    name: str
    actions: tuple[str, ...]
    before: Any = field(repr=False)
    after: Any = field(repr=False)
    sensitive: bool = False

    @property
    def action(self) -> Action:
        return Change(self.name, self.actions, None, None).action


@dataclass(frozen=True)
class Plan:
    """A plan, parsed. Built from the JSON of `terraform show -json PLANFILE`.

    `raw` is that JSON, whole, for what the parsed fields leave out: `raw["configuration"]`,
    `raw["prior_state"]`, `raw["planned_values"]`, `raw["variables"]` (Terraform's
    documented JSON output format). Sensitive values there are not masked.
    """

    changes: list[Change]  # configuration vs state, no-ops left out
    drift: list[Change]  # objects changed outside Terraform, found by refresh
    outputs: dict[str, OutputChange]  # every output, no-ops included
    raw: dict[str, Any] = field(repr=False)

    def __post_init__(self) -> None:
        # Lists that know their plan: an assertion on one can show the whole plan.
        object.__setattr__(self, "changes", Changes(self.changes, self))
        object.__setattr__(self, "drift", Changes(self.drift, self))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        changes = [_change(rc) for rc in data.get("resource_changes") or ()]
        drift = [_change(rc) for rc in data.get("resource_drift") or ()]
        outputs = {
            name: OutputChange(
                name,
                tuple(oc.get("actions", ())),
                oc.get("before"),
                oc.get("after"),
                bool(oc.get("before_sensitive") or oc.get("after_sensitive")),
            )
            for name, oc in (data.get("output_changes") or {}).items()
        }
        return cls(
            changes=[c for c in changes if c.action != "no-op"],
            drift=[c for c in drift if c.action != "no-op"],
            outputs=outputs,
            raw=dict(data),
        )

    def _with(self, action: Action) -> Changes:
        return Changes((c for c in self.changes if c.action == action), self)

    @property
    def creates(self) -> Changes:
        return self._with("create")

    @property
    def updates(self) -> Changes:
        return self._with("update")

    @property
    def deletes(self) -> Changes:
        return self._with("delete")

    @property
    def replaces(self) -> Changes:
        return self._with("replace")

    @property
    def reads(self) -> Changes:
        return self._with("read")

    @property
    def output_changes(self) -> list[OutputChange]:
        return [o for o in self.outputs.values() if o.action != "no-op"]

    @property
    def is_empty(self) -> bool:
        """True when applying this plan would change nothing: no resources, no outputs."""
        return not self.changes and not self.output_changes

    def __getitem__(self, address: str) -> Change:
        for change in self.changes:
            if change.address == address:
                return change
        raise KeyError(f"{address!r} is not changed by this plan")

    def counts(self) -> str:
        """`1 to create, 1 to update, 0 to delete, 1 to replace, 0 drifted`."""
        actions: tuple[Action, ...] = ("create", "update", "delete", "replace")
        counts = ", ".join(f"{len(self._with(a))} to {a}" for a in actions)
        return f"{counts}, {len(self.drift)} drifted"

    def __repr__(self) -> str:
        """`<Plan 0 to create, 1 to update, ...: ~ terraform_data.app>`: at most 5 addresses."""
        shown = [f"{SYMBOLS[c.action]} {c.address}" for c in self.changes[:_REPR_CHANGES]]
        if len(self.changes) > _REPR_CHANGES:
            shown.append(f"... {len(self.changes) - _REPR_CHANGES} more")
        return f"<Plan {self.counts()}" + (f": {', '.join(shown)}>" if shown else ">")

    def __str__(self) -> str:
        """The plan as lines: its counts, then each change with its changed attributes."""
        return "\n".join(self.lines())

    def lines(self, limit: int = _LISTED_CHANGES) -> list[str]:
        lines = [f"Plan: {self.counts()}"]
        for title, changes in (("", self.changes), ("drift (found by refresh):", self.drift)):
            if changes and title:
                lines.append(title)
            for change in changes[:limit]:
                lines.extend(f"  {line}" for line in str(change).splitlines())
            if len(changes) > limit:
                lines.append(f"  ... and {len(changes) - limit} more")
        changed_outputs = self.output_changes
        if changed_outputs:
            names = ", ".join(f"{SYMBOLS[o.action]} {o.name}" for o in changed_outputs[:limit])
            lines.append(f"outputs: {names}")
        return lines


def explain(op: str, left: object, right: object) -> list[str] | None:
    """What a failed comparison involving a plan, a change or a list of them should show.

    The plan's changes (those of the list when it has no plan), values shortened and
    sensitive ones masked; None when neither side is one of ours.
    """
    shown: list[str] = []
    for side in (left, right):
        if isinstance(side, Plan) or (isinstance(side, Changes) and side.plan is not None):
            plan = side if isinstance(side, Plan) else side.plan
            assert plan is not None
            shown = plan.lines()
            break
        if isinstance(side, Change):
            shown = str(side).splitlines()
            break
        if isinstance(side, list) and side and all(isinstance(c, Change) for c in side):
            shown = [line for change in side[:_LISTED_CHANGES] for line in str(change).splitlines()]
            break
    if not shown:
        return None
    return [f"{_brief(left)} {op} {_brief(right)}", *shown]


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


def _change(rc: Mapping[str, Any]) -> Change:
    change = rc.get("change") or {}
    return Change(
        address=rc["address"],
        actions=tuple(change.get("actions", ())),
        before=change.get("before"),
        after=change.get("after"),
        after_unknown=change.get("after_unknown"),
        before_sensitive=change.get("before_sensitive"),
        after_sensitive=change.get("after_sensitive"),
        action_reason=rc.get("action_reason"),
    )


# The attribute-level diff


@dataclass(frozen=True)
class AttributeChange:
    """One changed attribute (a dotted path into nested objects), values hidden if sensitive."""

    path: str
    before: Any
    after: Any
    sensitive: bool = False
    known_after_apply: bool = False

    def describe(self, width: int = 120) -> str:
        if self.sensitive:
            return f"{self.path}: {SENSITIVE}"
        after = KNOWN_AFTER_APPLY if self.known_after_apply else short(self.after, width)
        return f"{self.path}: {short(self.before, width)} -> {after}"

    def to_dict(self) -> dict[str, Any]:
        if self.sensitive:
            return {"path": self.path, "sensitive": True}
        data: dict[str, Any] = {"path": self.path, "before": self.before, "after": self.after}
        if self.known_after_apply:
            data["after"] = KNOWN_AFTER_APPLY
        return data


def attribute_changes(change: Change, depth: int = 3) -> list[AttributeChange]:
    """What differs between before and after, down to `depth` levels of nested objects."""
    return list(
        _differences(
            change.before,
            change.after,
            change.after_unknown,
            _either(change.before_sensitive, change.after_sensitive),
            "",
            depth,
        )
    )


def _either(first: Any, second: Any) -> Any:
    """Sensitivity marks of before and after merged: sensitive where either says so."""
    if first is True or second is True:
        return True
    if isinstance(first, Mapping) or isinstance(second, Mapping):
        a = first if isinstance(first, Mapping) else {}
        b = second if isinstance(second, Mapping) else {}
        return {k: _either(a.get(k), b.get(k)) for k in set(a) | set(b)}
    if isinstance(first, list) or isinstance(second, list):
        a_list = first if isinstance(first, list) else []
        b_list = second if isinstance(second, list) else []
        return [_either(x, y) for x, y in itertools.zip_longest(a_list, b_list)]
    return False


def _any_true(marks: Any) -> bool:
    """Is any leaf of a marks structure (after_unknown, *_sensitive) true?"""
    if isinstance(marks, Mapping):
        return any(_any_true(v) for v in marks.values())
    if isinstance(marks, list):
        return any(_any_true(v) for v in marks)
    return marks is True


def with_unknowns(value: Any, unknown: Any) -> Any:
    """`value` with the parts `unknown` marks replaced by "(known after apply)"."""
    if unknown is True:
        return KNOWN_AFTER_APPLY
    if isinstance(unknown, Mapping) and isinstance(value, Mapping | None):
        base = dict(value or {})
        return {k: with_unknowns(base.get(k), unknown.get(k)) for k in set(base) | set(unknown)}
    if isinstance(unknown, list) and isinstance(value, list | None):
        items = list(value or [])
        return [with_unknowns(v, u) for v, u in itertools.zip_longest(items, unknown)]
    return value


def _differences(
    before: Any, after: Any, unknown: Any, sensitive: Any, prefix: str, depth: int
) -> Iterator[AttributeChange]:
    if isinstance(before, Mapping) and isinstance(after, Mapping) and depth > 0:
        marks = sensitive if isinstance(sensitive, Mapping) else {}
        unknowns = unknown if isinstance(unknown, Mapping) else {}
        for key in sorted(set(before) | set(after) | {k for k, v in unknowns.items() if v}):
            yield from _differences(
                before.get(key),
                after.get(key),
                unknowns.get(key),
                True if sensitive is True else marks.get(key),
                f"{prefix}.{key}" if prefix else str(key),
                depth - 1,
            )
        return
    is_unknown = _any_true(unknown)
    if before != after or is_unknown:
        yield AttributeChange(
            prefix or "(value)",
            before,
            after if unknown is True else with_unknowns(after, unknown),
            sensitive=_any_true(sensitive),
            known_after_apply=unknown is True,
        )


def short(value: Any, width: int) -> str:
    """`value` as one line of JSON, cut to `width` characters."""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def output_after(output: OutputChange, plan: Plan | None) -> Any:
    """An output's planned value, "(known after apply)" where it is not known yet."""
    raw = ((plan.raw if plan else {}).get("output_changes") or {}).get(output.name) or {}
    return with_unknowns(output.after, raw.get("after_unknown"))
