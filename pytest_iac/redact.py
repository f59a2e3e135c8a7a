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
from collections.abc import Iterable, Iterator, Mapping
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


def remember_variables(module_dir: Path, values: Mapping[str, Any]) -> None:
    """Remember the values given to the variables `module_dir` declares sensitive.

    Where a file of the module cannot be read, any of its variables may be sensitive: every
    value given is remembered then (the safe side), and a warning says why.
    """
    module = tfconfig.read_module(module_dir)
    names = module.sensitive_variables
    if not module.readable:
        names = frozenset(values)
        log.warning(
            "could not read %s: every variable value given to %s is masked as sensitive",
            "; ".join(str(u) for u in module.unreadable),
            module_dir,
        )
    SECRETS.add(s for name in names if name in values for s in _strings(values[name]))


def remember(value: Any) -> None:
    """Remember a sensitive value (a sensitive output's, say), whatever its shape."""
    SECRETS.add(_strings(value))


def _strings(value: Any) -> Iterator[str]:
    """Every form in which `value` may show up: as text, and escaped inside JSON strings."""
    if isinstance(value, bool) or value is None:
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
