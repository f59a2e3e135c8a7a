"""The exceptions pytest-iac raises: each says what was run, where, and what to do next."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

# How much of terraform's output an error message quotes: its diagnostics sit at the end.
_QUOTED_LINES = 30
_UNSET_VARIABLE = re.compile(r'input variable "([^"]+)" is not set')


class IacError(Exception):
    """Base class of every error pytest-iac raises on purpose."""


class IacWarning(UserWarning):
    """Something Terraform would pass over quietly: a value for a variable the module does
    not declare, say. `-W error::pytest_iac.IacWarning` makes these fatal."""


class EngineNotFoundError(IacError):
    """No Terraform engine could be found, or the one asked for is unusable."""


class TerraformError(IacError):
    """A terraform command failed (after any retries)."""

    def __init__(
        self,
        command: Sequence[str],
        cwd: Path,
        returncode: int,
        output: str,
        *,
        module: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.command = list(command)
        self.cwd = cwd
        self.returncode = returncode
        self.output = output
        self.module = module
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        lines = [f"terraform {self.command[0] if self.command else '?'} failed"]
        if self.module:
            lines[0] += f" for module {self.module}"
        lines.append(f"  command: terraform {' '.join(self.command)}  (exit {self.returncode})")
        lines.append(f"  in: {self.cwd}")
        diagnostic = _diagnostic(self.output)
        if diagnostic:
            lines.append("")
            lines.extend(diagnostic)
        advice = _pytest_iac_way(self.output)
        if advice:
            lines.extend(["", advice])
        if self.hint:
            lines.extend(["", self.hint])
        return "\n".join(lines)


class TerraformTimeoutError(TerraformError):
    """A terraform command ran longer than the configured timeout and was stopped."""


class ProviderUnavailableError(TerraformError):
    """`init` cannot install a provider: no mirror holds it and its registry does not answer."""


class DestroyError(TerraformError):
    """A destroy failed: the state and working directory are kept for a manual clean-up."""


class UnsavedStateError(IacError):
    """Terraform could not save a deployment's state (it wrote errored.tfstate): nothing is
    destroyed, the working directory and the ledger record are kept."""


def _pytest_iac_way(output: str) -> str | None:
    """Terraform advises `-var` / `-var-file`, which a test cannot pass: say what it can."""
    if "-var-file" not in output:
        return None
    names = sorted(set(_UNSET_VARIABLE.findall(output))) or ["name"]
    example = ", ".join(f'"{name}": ...' for name in names)
    return (
        f"pytest-iac: give variables as `vars={{{example}}}` (or `var_files=[...]`)\n"
        "to iac_deploy, iac_plan, pytest_iac.deployment() or @pytest.mark.drift."
    )


def _diagnostic(output: str) -> list[str]:
    """The part of terraform's output a user needs: from the first `Error:` on, else the tail."""
    lines = [line.rstrip() for line in output.strip().splitlines()]
    for i, line in enumerate(lines):
        if line.lstrip("│╷╵ ").startswith("Error:"):
            start = i - 1 if i > 0 and lines[i - 1].strip() == "╷" else i
            return lines[start : start + _QUOTED_LINES]
    return lines[-_QUOTED_LINES:]
