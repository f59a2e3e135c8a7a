"""Drift reports: the terminal summary lines, JSON and Markdown. No pytest import here.

Every function takes the results as dictionaries (`DriftResult.to_dict()`), the form in
which they travel from pytest-xdist workers to the controller.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_ICONS = {"clean": "✅", "drift": "❌", "error": "⚠️"}


def summary_line(result: Mapping[str, Any]) -> str:
    """`live/prod/app  drift  configuration 1, state 0, outputs 1` (or the error's first line)."""
    if result["status"] == "error":
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
) -> dict[str, Any]:
    """The JSON report: the run, then one entry per live directory (sorted by name)."""
    ordered = sorted(results, key=lambda r: r["name"])
    totals = {s: sum(1 for r in ordered if r["status"] == s) for s in ("clean", "drift", "error")}
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": engine,
        "vcs": dict(vcs) if vcs else None,
        "ok": bool(ordered) and totals["clean"] == len(ordered),
        "totals": totals,
        "directories": ordered,
    }


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")


def markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown, fit for a pull-request comment or a GitHub job summary."""
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
    lines += [
        f"**{totals['clean']} clean, {totals['drift']} drifted, {totals['error']} could not be "
        "checked.**",
        "",
        "| Directory | Status | Configuration drift | State drift | Output changes |",
        "|---|---|---:|---:|---:|",
    ]
    for r in report["directories"]:
        c = r["counts"]
        icon = _ICONS.get(r["status"], "")
        if r["status"] == "error":
            lines.append(f"| `{r['name']}` | {icon} error | n/a | n/a | n/a |")
        else:
            lines.append(
                f"| `{r['name']}` | {icon} {r['status']} | {c['configuration_drift']} | "
                f"{c['state_drift']} | {c['output_changes']} |"
            )
    for r in report["directories"]:
        if r["status"] == "clean":
            continue
        lines += ["", f"### `{r['name']}`: {r['status']}", ""]
        if r["status"] == "error":
            lines += ["```", (r.get("error") or "").strip(), "```"]
            continue
        lines += _changes_md(r)
    return "\n".join(lines) + "\n"


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
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text) > width:
        text = text[: width - 3] + "..."
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


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
