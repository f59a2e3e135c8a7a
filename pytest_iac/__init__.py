"""pytest-iac: test Terraform/OpenTofu modules in a sandbox and live configuration for drift."""

from pytest_iac.engine import Engine, Settings, Terraform, find_engine
from pytest_iac.errors import DestroyError, EngineNotFoundError, IacError, TerraformError
from pytest_iac.fixtures import deployment
from pytest_iac.plan import Change, OutputChange, Plan
from pytest_iac.sandbox import Outputs, Sandbox, Stack

__all__ = [
    "Change",
    "DestroyError",
    "Engine",
    "EngineNotFoundError",
    "IacError",
    "OutputChange",
    "Outputs",
    "Plan",
    "Sandbox",
    "Settings",
    "Stack",
    "Terraform",
    "TerraformError",
    "deployment",
    "find_engine",
]
