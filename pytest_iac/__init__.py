"""pytest-iac: test Terraform/OpenTofu modules in a sandbox and live configuration for drift."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_iac.engine import Engine, Settings, Terraform, find_engine
    from pytest_iac.errors import (
        DestroyError,
        EngineNotFoundError,
        IacError,
        IacWarning,
        TerraformError,
    )
    from pytest_iac.fixtures import deployment
    from pytest_iac.plan import Change, OutputChange, Plan
    from pytest_iac.retry import eventually
    from pytest_iac.sandbox import Outputs, Sandbox, Stack
    from pytest_iac.upgrade import UpgradeStack

# The public names are imported on first use: `python -m pytest_iac.embedded`, a process per
# command of the embedded engine, would otherwise import pytest and the rest (~0.17 s) each time.
_MODULES = {
    "pytest_iac.engine": ("Engine", "Settings", "Terraform", "find_engine"),
    "pytest_iac.errors": (
        "DestroyError",
        "EngineNotFoundError",
        "IacError",
        "IacWarning",
        "TerraformError",
    ),
    "pytest_iac.fixtures": ("deployment",),
    "pytest_iac.plan": ("Change", "OutputChange", "Plan"),
    "pytest_iac.retry": ("eventually",),
    "pytest_iac.sandbox": ("Outputs", "Sandbox", "Stack"),
    "pytest_iac.upgrade": ("UpgradeStack",),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "Change",
    "DestroyError",
    "Engine",
    "EngineNotFoundError",
    "IacError",
    "IacWarning",
    "OutputChange",
    "Outputs",
    "Plan",
    "Sandbox",
    "Settings",
    "Stack",
    "Terraform",
    "TerraformError",
    "UpgradeStack",
    "deployment",
    "eventually",
    "find_engine",
]
