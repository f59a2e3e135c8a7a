"""Keep the values of sensitive variables and outputs out of everything pytest-iac shows.

Terraform masks sensitive values in its plans, but a diagnostic can quote the line of a var
file that holds one, and a test's failure shows terraform's output (logs, error messages,
JUnit XML). Every value of a variable a module declares `sensitive = true`, and of every
sensitive output, is remembered for the process's lifetime and replaced by `<sensitive>` in
the output pytest-iac logs and in the errors it raises. No pytest import here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_iac import tfconfig

log = logging.getLogger("pytest_iac")

MASK = "<sensitive>"
_MIN_LENGTH = 3  # shorter values would mask ordinary words and numbers


class Redactor:
    """Known secret strings, and `redact(text)` that masks them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if len(v) >= _MIN_LENGTH} - self._values
        if new:
            with self._lock:
                self._values |= new
                # Longest first, so a secret containing another is masked whole.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __call__(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None or not text else pattern.sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None


SECRETS = Redactor()


def redact(text: str) -> str:
    return SECRETS(text)


def remember_variables(
    module_dir: Path,
    values: Mapping[str, Any],
    var_files: Sequence[Path] = (),
    *,
    module: tfconfig.Module | None = None,
) -> None:
    """Remember the values of the variables `module_dir` declares sensitive: their defaults,
    and what `var_files` (the module's own `terraform.tfvars` and `*.auto.tfvars` included)
    and `values` give them. Masked wherever they show up, not only where Terraform shows the
    variable (a diagnostic can quote a var file's line; code can pass the value on).

    Where a file of the module cannot be read, any of its variables may be sensitive: every
    value given is remembered then (the safe side), and a warning says why; a var file that
    cannot be read gets a warning too. `module`: `module_dir`'s, if read already.
    """
    module = module or tfconfig.read_module(module_dir)
    given: dict[str, list[Any]] = {}
    for path in [*tfconfig.auto_var_files(module_dir), *var_files]:
        var_file = tfconfig.read_var_file(path)
        if var_file.unreadable:
            log.warning(
                "could not read %s (%s): its values are not masked", path, var_file.unreadable
            )
        for name, value in var_file.values.items():
            given.setdefault(name, []).append(value)
    for name, value in values.items():
        given.setdefault(name, []).append(value)
    names = module.sensitive_variables
    if not module.readable:
        names = frozenset(given) | frozenset(module.variables)
        log.warning(
            "could not read %s: every variable value given to %s is masked as sensitive",
            "; ".join(str(u) for u in module.unreadable),
            module_dir,
        )
    for name in names:
        variable = module.variables.get(name)
        if variable is not None and variable.has_default:
            remember(variable.default)
        remember(given.get(name, []))


def remember(value: Any) -> None:
    """Remember a sensitive value (a sensitive output's, say), whatever its shape."""
    SECRETS.add(_strings(value))


def _strings(value: Any) -> Iterator[str]:
    """Every form in which `value` may show up: as text, and escaped inside JSON strings."""
    if isinstance(value, bool) or value is None or value is tfconfig.UNKNOWN:
        return
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)
    else:
        text = str(value)
        yield text
        yield json.dumps(text)[1:-1]
        for line in text.splitlines():  # a multi-line secret quoted line by line
            if line.strip():
                yield line


def redact_value(value: Any) -> Any:
    """`value` (JSON-like) with every remembered secret masked: inside strings, and numbers
    that are one; for reports built from values rather than text."""
    if isinstance(value, str):
        return SECRETS(value)
    if isinstance(value, Mapping):
        return {SECRETS(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return MASK if SECRETS(str(value)) != str(value) else value
    return value


def remember_plan(plan: Mapping[str, Any]) -> None:
    """Remember what a plan (`terraform show -json`) says is sensitive, to mask it wherever
    else it shows up: the values of the variables the configuration declares sensitive
    (defaults, var files and `-var` alike) and every value Terraform marks sensitive."""
    root = (plan.get("configuration") or {}).get("root_module") or {}
    declared = root.get("variables") or {}
    for name, variable in (plan.get("variables") or {}).items():
        if (declared.get(name) or {}).get("sensitive") and isinstance(variable, Mapping):
            remember(variable.get("value"))
    for key in ("resource_changes", "resource_drift"):
        for resource in plan.get(key) or []:
            change = resource.get("change") or {}
            for when in ("before", "after"):
                remember(list(_marked(change.get(when), change.get(f"{when}_sensitive"))))
    for output in (plan.get("output_changes") or {}).values():
        for when in ("before", "after"):
            if output.get(f"{when}_sensitive"):
                remember(output.get(when))
    prior = (plan.get("prior_state") or {}).get("values") or {}
    for values in (prior, plan.get("planned_values") or {}):
        for output in (values.get("outputs") or {}).values():
            if output.get("sensitive"):
                remember(output.get("value"))
        for resource in _state_resources(values.get("root_module") or {}):
            remember(list(_marked(resource.get("values"), resource.get("sensitive_values"))))


def _marked(value: Any, marks: Any) -> Iterator[Any]:
    """The parts of `value` that `marks` (Terraform's `*_sensitive` shape) marks true."""
    if marks is True:
        yield value
    elif isinstance(marks, Mapping) and isinstance(value, Mapping):
        for key, mark in marks.items():
            yield from _marked(value.get(key), mark)
    elif isinstance(marks, list) and isinstance(value, list):
        for item, mark in zip(value, marks, strict=False):
            yield from _marked(item, mark)


def _state_resources(module: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from module.get("resources") or []
    for child in module.get("child_modules") or []:
        yield from _state_resources(child)
