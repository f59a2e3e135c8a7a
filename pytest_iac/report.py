"""Drift reports: a result's table and dictionary, the summary lines, JSON and Markdown.

`table()`, `change_dict()` and `output_dict()` render a `DriftResult`; every other function
takes the results as dictionaries (`DriftResult.to_dict()`), the form in which they travel
from pytest-xdist workers to the controller. No pytest import here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iac.plan import (
    SENSITIVE,
    Change,
    OutputChange,
    Plan,
    attribute_changes,
    output_after,
    short,
)

if TYPE_CHECKING:
    from pytest_iac.drift import DriftResult

SCHEMA_VERSION = 1
STATUSES = ("clean", "drift", "never-applied", "not-deployed", "error")  # drift.Status
_ICONS = {"clean": "✅", "drift": "❌", "never-applied": "❌", "not-deployed": "❔", "error": "⚠️"}
# What a directory that is neither clean nor drifted gets above its details.
_EXPLAINED = {
    "never-applied": "Never applied: its state holds no resource, so the plan creates "
    "everything. Apply it, or check that its backend settings point at its state.",
    "not-deployed": "Not deployed: no backend and no state, so there is nothing to compare "
    "the code with. Deploy it, or exclude it (ini `iac_live_exclude`).",
}
_CLEAN_WITH_DRIFT = (
    "Clean: the plan changes nothing, but refresh found objects changed outside Terraform "
    "in what the code does not manage (ignored attributes, say)."
)


# Said in place of the attributes of refresh drift named without them (`attributes_read`).
NOT_READ = "attributes not read: the plan is clean; `terraform plan -refresh-only` shows them"


def change_dict(change: Change) -> dict[str, Any]:
    return {
        "address": change.address,
        "action": change.action,
        "reason": change.action_reason,
        "attributes": [a.to_dict() for a in attribute_changes(change)]
        if change.action in ("update", "replace")
        else [],
        "attributes_read": change.attributes_read,
    }


def output_dict(output: OutputChange, plan: Plan | None) -> dict[str, Any]:
    if output.sensitive:
        return {"name": output.name, "action": output.action, "sensitive": True}
    return {
        "name": output.name,
        "action": output.action,
        "before": output.before,
        "after": output_after(output, plan),
    }


SECTIONS = (
    ("configuration_drift", "configuration drift (the code differs from the state)"),
    ("state_drift", "state drift (objects changed outside Terraform, found by refresh)"),
    ("output_changes", "output changes"),
)


def table(result: DriftResult) -> str:
    """The changes as text: one section per kind of drift, one line per change."""
    return "\n".join(_table_lines(result))


def _table_lines(result: DriftResult) -> Iterator[str]:
    for key, title in SECTIONS:
        if key == "output_changes":
            outputs = result.output_changes
            if outputs:
                yield f"{title}: {len(outputs)}"
                width = max(len(o.name) for o in outputs)
                for o in outputs:
                    if o.sensitive:
                        value = SENSITIVE
                    else:
                        after = output_after(o, result.plan)
                        value = f"{short(o.before, 80)} -> {short(after, 80)}"
                    yield f"  {o.name:<{width}}  {o.action:<7}  {value}"
            continue
        changes: list[Change] = getattr(result, key)
        if not changes:
            continue
        yield f"{title}: {len(changes)}"
        width = max(len(c.address) for c in changes)
        yield f"  {'ADDRESS':<{width}}  {'ACTION':<7}  CHANGED"
        for change in changes:
            attributes = attribute_changes(change) if change.action in ("update", "replace") else []
            names = ", ".join(a.path for a in attributes) if change.attributes_read else NOT_READ
            yield f"  {change.address:<{width}}  {change.action:<7}  {names}".rstrip()
            for attribute in attributes:
                yield f"  {'':<{width}}  {'':<7}    {attribute.describe(100)}"


def summary_line(result: Mapping[str, Any]) -> str:
    """`live/prod/app  drift  configuration 1, state 0, outputs 1` (or the error's first line)."""
    if result["status"] in ("error", "not-deployed"):
        lines = (result.get("error") or "").strip().splitlines()
        return f"{result['status']:<5}  {result['name']}  ({lines[0] if lines else '?'})"
    counts = result["counts"]
    return (
        f"{result['status']:<5}  {result['name']}  (configuration {counts['configuration_drift']}"
        f", state {counts['state_drift']}, outputs {counts['output_changes']})"
    )


def document(
    results: Sequence[Mapping[str, Any]],
    *,
    engine: str | None,
    vcs: Mapping[str, Any] | None,
    changes: Mapping[str, Any] | None = None,
    promotion: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report: the run, then one entry per live directory (sorted by name).

    `changes` (`vcs.Changes.to_dict()`): with --iac-changed-since, the REF, the merge base and
    the changed files that chose which directories were checked. `promotion`
    (`Promotion.to_dict()`): the promotion view, when that was checked too.
    """
    ordered = sorted(results, key=lambda r: r["name"])
    totals = {s: sum(1 for r in ordered if r["status"] == s) for s in STATUSES}
    report = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": engine,
        "vcs": dict(vcs) if vcs else None,
        "changes": dict(changes) if changes else None,
        "ok": bool(ordered) and totals["clean"] == len(ordered),
        "totals": totals,
        "directories": ordered,
    }
    if promotion is not None:
        report["promotion"] = dict(promotion)
        drift_ok = totals["clean"] == len(ordered)  # a promotion-only run checks no directory
        report["ok"] = drift_ok and bool(promotion["ok"])
    return report


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown, fit for a pull-request comment or a GitHub job summary."""
    promotion = report.get("promotion")
    if promotion is None:
        return _drift_md(report)
    drift = _drift_md(report) + "\n" if report["directories"] else ""
    return drift + _promotion_md(promotion)


def _drift_md(report: Mapping[str, Any]) -> str:
    totals = report["totals"]
    lines = ["## Drift check", ""]
    vcs = report.get("vcs")
    facts = []
    if vcs:
        commit = (vcs.get("commit") or "no commit")[:12]
        branch = vcs.get("branch") or "detached HEAD"
        facts.append(f"commit `{commit}` on `{branch}`" + (" (dirty tree)" if vcs["dirty"] else ""))
    if report.get("engine"):
        facts.append(f"engine {report['engine']}")
    if facts:
        lines += ["Checked " + ", ".join(facts) + ".", ""]
    changes = report.get("changes")
    if changes:
        files = changes["files"]
        lines += [
            f"Only the directories that {len(files)} file{'' if len(files) == 1 else 's'} "
            f"changed since `{changes['since']}` (merge base `{changes['merge_base'][:7]}`) "
            "can affect were checked.",
            "",
            "<details><summary>Changed files</summary>",
            "",
            *(f"- `{name}`" for name in files),
            "",
            "</details>",
            "",
        ]
    also = [f"{totals[s]} {s.replace('-', ' ')}" for s in _EXPLAINED if totals.get(s)]
    lines += [
        f"**{totals['clean']} clean, {totals['drift']} drifted, "
        + "".join(f"{text}, " for text in also)
        + f"{totals['error']} could not be checked.**",
        "",
        "| Directory | Status | Configuration drift | State drift | Output changes |",
        "|---|---|---:|---:|---:|",
    ]
    for r in report["directories"]:
        c = r["counts"]
        icon = _ICONS.get(r["status"], "")
        if r["status"] in ("error", "not-deployed"):
            lines.append(f"| `{r['name']}` | {icon} {r['status']} | n/a | n/a | n/a |")
        else:
            lines.append(
                f"| `{r['name']}` | {icon} {r['status']} | {c['configuration_drift']} | "
                f"{c['state_drift']} | {c['output_changes']} |"
            )
    for r in report["directories"]:
        if r["status"] == "clean" and not r["state_drift"]:
            continue
        lines += ["", f"### `{r['name']}`: {r['status']}", ""]
        if r["status"] == "clean":
            lines += [_CLEAN_WITH_DRIFT, ""]
        if r["status"] in _EXPLAINED:
            lines.append(_EXPLAINED[r["status"]])
            if r["status"] == "not-deployed":
                continue
            lines.append("")
        if r["status"] == "error":
            lines += ["```", (r.get("error") or "").strip(), "```"]
            continue
        lines += _changes_md(r)
    return "\n".join(lines) + "\n"


def _promotion_md(promotion: Mapping[str, Any]) -> str:
    environments = list(promotion["environments"])
    modules = promotion["modules"]
    if any("?" in m["versions"] for m in modules):
        environments.append("?")
    failed = sum(1 for m in modules if not m["ok"])
    order = " → ".join(environments) if promotion["ordered"] else "unknown"
    lines = [
        "## Promotion",
        "",
        f"Promotion order: {order} (from {promotion['order_from']}).",
        "",
        f"**{len(modules)} modules, {failed} breaking a promotion rule.**",
        "",
        "| Module | " + " | ".join(environments) + " | |",
        "|---|" + "---|" * len(environments) + "---|",
    ]
    for m in modules:
        cells = [
            "<br>".join(f"`{v}`" for v in m["versions"].get(e, [])) or "-" for e in environments
        ]
        status = "local path" if m["kind"] == "local" else _ICONS["clean" if m["ok"] else "drift"]
        lines.append(f"| `{m['module']}` | " + " | ".join(cells) + f" | {status} |")
    for m in modules:
        if m["failures"] or m["notes"]:
            lines += ["", f"### `{m['module']}`", ""]
            lines += [f"- ❌ {_escape(f)}" for f in m["failures"]]
            lines += [f"- Note: {_escape(n)}" for n in m["notes"]]
    if promotion["unplaced"]:
        unplaced = ", ".join(f"`{d}`" for d in promotion["unplaced"])
        lines += ["", f"Live directories in no environment: {unplaced}."]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")


_TITLES = {
    "configuration_drift": "Configuration drift (the code differs from the state)",
    "state_drift": "State drift (objects changed outside Terraform)",
}


def _changes_md(result: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, title in _TITLES.items():
        changes = result[key]
        if not changes:
            continue
        lines += [f"**{title}**", "", "| Address | Action | Changed |", "|---|---|---|"]
        for change in changes:
            attributes = "<br>".join(_attribute_md(a) for a in change["attributes"])
            if not change.get("attributes_read", True):
                attributes = _escape(NOT_READ)
            lines.append(f"| `{change['address']}` | {change['action']} | {attributes} |")
        lines.append("")
    outputs = result["output_changes"]
    if outputs:
        lines += ["**Output changes**", "", "| Output | Action | Value |", "|---|---|---|"]
        for o in outputs:
            value = (
                "(sensitive)"
                if o.get("sensitive")
                else f"{_code(o.get('before'))} → {_code(o.get('after'))}"
            )
            lines.append(f"| `{o['name']}` | {o['action']} | {value} |")
        lines.append("")
    return lines


def _attribute_md(attribute: Mapping[str, Any]) -> str:
    if attribute.get("sensitive"):
        return f"`{attribute['path']}` (sensitive)"
    return f"`{attribute['path']}`: {_code(attribute['before'])} → {_code(attribute['after'])}"


def _code(value: Any, width: int = 60) -> str:
    return "`" + short(value, width).replace("|", "\\|").replace("`", "'") + "`"


def write_markdown(path: Path, report: Mapping[str, Any]) -> list[Path]:
    """Write the Markdown to `path`, and append it to $GITHUB_STEP_SUMMARY when that is set."""
    text = markdown(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    written = [path]
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as f:
            f.write(text)
        written.append(Path(summary))
    return written
