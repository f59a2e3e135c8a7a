"""Which paths a test or fixture passes to a deploy fixture, read from its code, never run.

`iac_deploy("../network", var_files=["prod.tfvars"])` inside `def test_x(iac_deploy)` names
the module `../network` and the var file `prod.tfvars`; a call with no path deploys ".". A
path is read when it is a string literal, a module-level constant, or built from
`Path(__file__)`, `.parent` and `/ "literal"`. Anything else (a computed path, the fixture
handed to a helper or stored under another name) cannot be read: `None`, and the caller
keeps the test.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Deploy:
    """One deploy call's paths, as written (relative ones start where the fixture says)."""

    path: Path
    var_files: tuple[Path, ...] = ()


def deploy_calls(function: Callable[..., Any], factory: str) -> list[Deploy] | None:
    """What `function` deploys through its argument `factory`, or None if unreadable."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
        filename = Path(inspect.getfile(function)).resolve()
    except (OSError, TypeError, SyntaxError):
        return None
    assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and _stored(n)}
    assigned |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in _args(n)}
    reader = _PathReader(filename, getattr(function, "__globals__", {}), assigned)
    calls = {
        id(n.func): n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == factory
    }
    deploys: list[Deploy] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == factory):
            continue
        call = calls.get(id(node))
        if call is None:
            return None  # passed on, stored under another name or rebound: calls elsewhere
        deploy = reader.call(call)
        if deploy is None:
            return None
        deploys.append(deploy)
    return deploys


def _stored(node: ast.Name) -> bool:
    return isinstance(node.ctx, ast.Store | ast.Del)


def _args(arguments: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
    return [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs, *extra]


class _PathReader:
    def __init__(self, filename: Path, module_globals: dict[str, Any], local: set[str]) -> None:
        self.filename = filename
        self.globals = module_globals
        self.local = local

    def call(self, call: ast.Call) -> Deploy | None:
        """A deploy call's `path` (positional or keyword; "." when absent) and `var_files`."""
        if any(k.arg is None for k in call.keywords) or any(
            isinstance(a, ast.Starred) for a in call.args
        ):
            return None  # *args or **options: may hold the paths
        keywords = {k.arg: k.value for k in call.keywords}
        node = call.args[0] if call.args else keywords.get("path")
        path = Path() if node is None else self.value(node)
        var_files: list[Path | None] = []
        if "var_files" in keywords:
            node = keywords["var_files"]
            if not isinstance(node, ast.List | ast.Tuple):
                return None
            var_files = [self.value(element) for element in node.elts]
        if path is None or None in var_files:
            return None
        return Deploy(path, tuple(f for f in var_files if f is not None))

    def value(self, node: ast.expr) -> Path | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return Path(node.value)
        if isinstance(node, ast.Name):
            if node.id == "__file__":
                return self.filename
            if node.id in self.local:
                return None
            constant = self.globals.get(node.id)
            return Path(constant) if isinstance(constant, str | Path) else None
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            inner = self.value(node.value)
            return inner.parent if inner is not None else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left, right = self.value(node.left), self.value(node.right)
            return left / right if left is not None and right is not None else None
        if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
            name = node.func.attr if isinstance(node.func, ast.Attribute) else None
            name = node.func.id if isinstance(node.func, ast.Name) else name
            if name in ("Path", "str"):  # Path(__file__), str(path)
                return self.value(node.args[0])
        return None
