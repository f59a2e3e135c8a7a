"""`Plan` and `Change`: what `terraform show -json PLANFILE` says a plan would do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["create", "update", "delete", "replace", "read", "no-op"]

_SENSITIVE = "(sensitive)"


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
            return f"{attribute}: {_SENSITIVE}"
        before = self.before.get(attribute) if isinstance(self.before, Mapping) else None
        after = self.after.get(attribute) if isinstance(self.after, Mapping) else None
        unknown = isinstance(self.after_unknown, Mapping) and self.after_unknown.get(attribute)
        return f"{attribute}: {before!r} -> {'(known after apply)' if unknown else repr(after)}"


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
    """A plan, parsed. Built from the JSON of `terraform show -json PLANFILE`."""

    changes: list[Change]  # configuration vs state, no-ops left out
    drift: list[Change]  # objects changed outside Terraform, found by refresh
    outputs: dict[str, OutputChange]  # every output, no-ops included
    raw: dict[str, Any] = field(repr=False)

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

    def _with(self, action: Action) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    @property
    def creates(self) -> list[Change]:
        return self._with("create")

    @property
    def updates(self) -> list[Change]:
        return self._with("update")

    @property
    def deletes(self) -> list[Change]:
        return self._with("delete")

    @property
    def replaces(self) -> list[Change]:
        return self._with("replace")

    @property
    def reads(self) -> list[Change]:
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

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(self._with(a))} to {a}" for a in ("create", "update", "delete"))
        return f"<Plan {counts}, {len(self.replaces)} to replace, {len(self.drift)} drifted>"


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
