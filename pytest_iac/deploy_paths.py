"""Which paths a test or fixture passes to a deploy fixture, read from its code, never run.

`iac_deploy("../network")` inside `def test_x(iac_deploy)` names `../network`; a call with no
path deploys ".". A path is read when it is a string literal, a module-level constant, or
built from `Path(__file__)`, `.parent` and `/ "literal"`. Anything else (a computed path,
the fixture handed to a helper or stored under another name) cannot be read: `None`, and
the caller keeps the test.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any


def deploy_paths(function: Callable[..., Any], factory: str) -> list[Path] | None:
    """The paths `function` deploys through its argument `factory`, or None if unreadable."""
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
    paths: list[Path] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and node.id == factory):
            continue
        call = calls.get(id(node))
        if call is None:
            return None  # passed on, stored under another name or rebound: calls elsewhere
        path = reader.path(call)
        if path is None:
            return None
        paths.append(path)
    return paths


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

    def path(self, call: ast.Call) -> Path | None:
        """The `path` argument of a deploy call (positional or keyword; "." when absent)."""
        if call.args:
            if isinstance(call.args[0], ast.Starred):
                return None
            return self.value(call.args[0])
        for keyword in call.keywords:
            if keyword.arg is None:  # **options: may hold the path
                return None
            if keyword.arg == "path":
                return self.value(keyword.value)
        return Path()

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
