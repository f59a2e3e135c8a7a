"""The reader of Terraform files: every question pytest-iac asks of a module directory.

`read_module(directory)` reads the `*.tf` files (through `pytest_iac.hcl`) and `*.tf.json`
files of one directory as Terraform does (override files merged over the others, in name
order) and says: the modules it calls and their sources and versions, its backend or
`cloud` block, the providers it requires and those its resources and provider blocks imply,
its variables (sensitive or not, type, default) and its outputs. `read_closure()` follows
the local module calls (`source = "../x"`); `read_var_file()` reads a `*.tfvars` or
`*.tfvars.json` file. No pytest import here.

Values are Python values where the expression is a literal, `UNKNOWN` where it is not.
A file the reader cannot read (a syntax it does not follow, bad UTF-8, OpenTofu's `.tofu`
files) says nothing and is listed in `Module.unreadable` with the reason: each caller takes
the side that is safe for its question, and says so.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_iac import hcl
from pytest_iac.hcl import UNKNOWN

__all__ = [
    "UNKNOWN",
    "Backend",
    "Module",
    "ModuleCall",
    "Output",
    "ProviderRequirement",
    "Resource",
    "Unreadable",
    "VarFile",
    "Variable",
    "auto_var_files",
    "is_module_dir",
    "is_module_file",
    "is_override",
    "locked_providers",
    "module_files",
    "module_from_files",
    "read_closure",
    "read_module",
    "read_var_file",
    "undeclared_variables",
]

_SUFFIXES = (".tf", ".tf.json")
_OPENTOFU_SUFFIXES = (".tofu", ".tofu.json")  # OpenTofu's own: read by OpenTofu only
_REGISTRY = "registry.terraform.io"
_BUILTIN = "terraform"  # terraform_data, terraform_remote_state: no plugin to install
_BUILTIN_ADDRESS = "terraform.io/builtin/terraform"
# Blocks whose labels name them, and how many labels they have (in .tf.json, the nesting).
_LABELS = {
    "terraform": 0,
    "variable": 1,
    "output": 1,
    "module": 1,
    "provider": 1,
    "resource": 2,
    "data": 2,
    "ephemeral": 2,
}
_TERRAFORM_BLOCKS = {"backend": 1, "cloud": 0, "required_providers": 0}


# What a module says


@dataclass(frozen=True)
class Unreadable:
    """A file the reader could not read, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class ModuleCall:
    """A `module` block: its name, `source` and `version` (None where not a literal string)."""

    name: str
    source: str | None
    version: str | None = None

    @property
    def is_local(self) -> bool:
        """A local path (`./x`, `../x`): Terraform uses the directory in place."""
        return self.source is not None and self.source.startswith(("./", "../"))


@dataclass(frozen=True)
class Backend:
    """A `backend "TYPE"` block, or a `cloud` block (type "cloud"), with its attributes as
    written: HCL expressions, or JSON in a `.tf.json` file."""

    type: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderRequirement:
    """An entry of `required_providers`: the local name, `source` and `version` as written."""

    name: str
    source: str | None = None
    version: str | None = None

    @property
    def address(self) -> str:
        """The provider's full address: `registry.terraform.io/hashicorp/aws`."""
        return provider_address(self.name, self.source)


@dataclass(frozen=True)
class Resource:
    """A `resource`, `data` or `ephemeral` block and the local name of its provider."""

    mode: Literal["resource", "data", "ephemeral"]
    type: str
    name: str
    provider: str  # the `provider` argument's name (aws.west: aws), else the type's prefix


@dataclass(frozen=True)
class Variable:
    """A `variable` block. `sensitive` is None where it is not a literal (the reader cannot
    tell); `type` is the type constraint as written; `default` is `UNKNOWN` where it is not a
    literal and None without one (`has_default` tells `default = null` apart)."""

    name: str
    sensitive: bool | None = False
    type: str | None = None
    default: Any = None
    has_default: bool = False


@dataclass(frozen=True)
class Output:
    """An `output` block; `sensitive` is None where it is not a literal."""

    name: str
    sensitive: bool | None = False


@dataclass(frozen=True)
class Module:
    """What the Terraform files of one directory say (see the module documentation)."""

    directory: Path
    files: tuple[Path, ...] = ()
    unreadable: tuple[Unreadable, ...] = ()
    module_calls: Mapping[str, ModuleCall] = field(default_factory=dict)
    backend: Backend | None = None
    required_providers: Mapping[str, ProviderRequirement] = field(default_factory=dict)
    provider_blocks: frozenset[str] = frozenset()
    resources: tuple[Resource, ...] = ()
    variables: Mapping[str, Variable] = field(default_factory=dict)
    outputs: Mapping[str, Output] = field(default_factory=dict)

    @property
    def readable(self) -> bool:
        """Was every file read? If not, the answers miss what the others say."""
        return not self.unreadable

    @property
    def providers(self) -> dict[str, str]:
        """Every provider the module uses, by local name, with its full address: those it
        requires, configures (`provider` blocks) and whose resources it declares."""
        names = {*self.required_providers, *self.provider_blocks}
        names.update(r.provider for r in self.resources)
        return {name: self.provider_address(name) for name in sorted(names)}

    def provider_address(self, name: str) -> str:
        requirement = self.required_providers.get(name)
        return provider_address(name, requirement.source if requirement else None)

    @property
    def sensitive_variables(self) -> frozenset[str]:
        """Variables declared sensitive, and those the reader cannot tell (safe side)."""
        return frozenset(n for n, v in self.variables.items() if v.sensitive is not False)

    @property
    def local_module_dirs(self) -> set[Path]:
        """The directories it calls as local modules, resolved."""
        return {
            (self.directory / call.source).resolve()
            for call in self.module_calls.values()
            if call.is_local and call.source is not None
        }


def provider_address(name: str, source: str | None) -> str:
    """The full address Terraform gives a provider of local `name` required from `source`."""
    if source is None and name == _BUILTIN:
        return _BUILTIN_ADDRESS
    parts = (source or name).lower().split("/")
    if len(parts) == 1:
        parts = ["hashicorp", *parts]
    if len(parts) == 2:
        parts = [_REGISTRY, *parts]
    return "/".join(parts)


# Reading


def is_module_file(name: str) -> bool:
    """Is a file of this name one Terraform reads as configuration (`.tf`, `.tf.json`)?"""
    return name.endswith(_SUFFIXES)


def module_files(directory: Path) -> list[Path]:
    """The Terraform files of `directory` (OpenTofu's too) in the order Terraform merges
    them: the others by name, then the override files (`override.tf`, `*_override.tf`)."""
    try:
        found = [
            p
            for p in directory.iterdir()
            if p.name.endswith(_SUFFIXES + _OPENTOFU_SUFFIXES) and p.is_file()
        ]
    except OSError:
        return []
    return sorted(found, key=lambda p: _merge_order(p.name))


def is_module_dir(directory: Path) -> bool:
    """Does `directory` hold Terraform files?"""
    return any(is_module_file(p.name) for p in module_files(directory))


def is_override(name: str) -> bool:
    """Is a file of this name an override file (`override.tf`, `*_override.tf.json`...)?"""
    stem = name.removesuffix(".json").rpartition(".")[0]
    return stem == "override" or stem.endswith("_override")


def _merge_order(name: str) -> tuple[bool, str]:
    return is_override(name), name


def read_module(directory: Path) -> Module:
    """What the Terraform files of `directory` say; unreadable files listed, not guessed."""
    directory = Path(directory)
    contents: dict[str, bytes | OSError] = {}
    for path in module_files(directory):
        try:
            contents[path.name] = path.read_bytes()
        except OSError as error:
            contents[path.name] = error
    return module_from_files(directory, contents)


def module_from_files(directory: Path, contents: Mapping[str, bytes | OSError]) -> Module:
    """What files of these names and contents say, as the files of `directory` (for files
    read elsewhere: from a git tree at a ref, say). Other names are left out."""
    merged = _Merged()
    unreadable: list[Unreadable] = []
    names = sorted(
        (n for n in contents if n.endswith(_SUFFIXES + _OPENTOFU_SUFFIXES)), key=_merge_order
    )
    for name in names:
        content = contents[name]
        if name.endswith(_OPENTOFU_SUFFIXES):
            unreadable.append(Unreadable(directory / name, "OpenTofu's own files are not read"))
            continue
        try:
            if isinstance(content, OSError):
                raise content
            blocks = _parse(content.decode("utf-8"), name.endswith(".json"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # HclError
            unreadable.append(Unreadable(directory / name, str(error) or type(error).__name__))
            continue
        merged.add(blocks, override=is_override(name))
    files = tuple(directory / name for name in names)
    return merged.module(directory, files, tuple(unreadable))


def read_closure(directory: Path) -> dict[Path, Module]:
    """`directory` (resolved) and every local module it calls, directly or not, read.

    A local source that is not a directory is left out: Terraform's init says so.
    """
    found: dict[Path, Module] = {}
    pending = [Path(directory).resolve()]
    while pending:
        current = pending.pop()
        if current in found or not current.is_dir():
            continue
        found[current] = module = read_module(current)
        pending.extend(module.local_module_dirs)
    return found


LOCK_FILE = ".terraform.lock.hcl"


def locked_providers(directory: Path) -> dict[str, str] | None:
    """The provider versions `directory`'s dependency lock file pins, by full address
    (`registry.terraform.io/hashicorp/aws`: `5.100.0`); {} without a lock file, None when
    it cannot be read."""
    try:
        text = (directory / LOCK_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError):
        return None
    locked: dict[str, str] = {}
    try:
        for block in hcl.blocks(text):
            if block.kind != "provider" or len(block.labels) != 1:
                return None
            version = next(
                (
                    hcl.literal(i.expression)
                    for i in hcl.items(block.body)
                    if isinstance(i, hcl.Attribute) and i.name == "version"
                ),
                None,
            )
            if not isinstance(version, str):
                return None
            locked[block.labels[0]] = version
    except hcl.HclError:
        return None
    return locked


@dataclass(frozen=True)
class VarFile:
    """The values of a `*.tfvars` or `*.tfvars.json` file (`UNKNOWN` where not literal);
    `unreadable` says why a file could not be read (its values are then empty)."""

    path: Path
    values: Mapping[str, Any] = field(default_factory=dict)
    unreadable: str | None = None


def undeclared_variables(
    directory: Path,
    values: Iterable[str] = (),
    var_files: Sequence[Path] = (),
    *,
    module: Module | None = None,
) -> list[str]:
    """The names given values (`values`, `var_files` and the directory's own auto-loaded var
    files) that the module in `directory` (`module`, if read already) declares no variable
    for; Terraform ignores them. None where a file cannot be read: any name may be declared
    there."""
    module = module or read_module(directory)
    given = {*values}
    for path in [*auto_var_files(directory), *var_files]:
        given.update(read_var_file(path).values)
    return sorted(given - set(module.variables)) if module.readable else []


def auto_var_files(directory: Path) -> list[Path]:
    """The var files Terraform loads from `directory` by itself, in its order:
    `terraform.tfvars(.json)`, then `*.auto.tfvars(.json)` by name."""
    first = [directory / n for n in ("terraform.tfvars", "terraform.tfvars.json")]
    auto = sorted(p for p in directory.glob("*.auto.tfvars*") if p.name.endswith(_VAR_SUFFIXES))
    return [p for p in first if p.is_file()] + [p for p in auto if p.is_file()]


_VAR_SUFFIXES = (".tfvars", ".tfvars.json")


def read_var_file(path: Path) -> VarFile:
    try:
        text = path.read_text(encoding="utf-8")
        if path.name.endswith(".json"):
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("a JSON variables file holds an object")
            return VarFile(path, {k: _json_value(v) for k, v in data.items()})
        settings = _assignments(text, "a variables file")
        return VarFile(path, {name: hcl.literal(e) for name, e in settings.items()})
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # HclError
        return VarFile(path, unreadable=str(error) or type(error).__name__)


def backend_settings(path: Path) -> dict[str, str] | None:
    """The settings of a `*.tfbackend` file (`-backend-config`) as written: each name with
    its expression's text, in the file's order; None when it cannot be read."""
    try:
        # A byte order mark is Terraform's to skip too (what some editors write first).
        settings = _assignments(path.read_text(encoding="utf-8-sig"), "a backend settings file")
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # HclError
        return None
    return {name: e.strip() for name, e in settings.items()}


def _assignments(text: str, what: str) -> dict[str, str]:
    """The `name = expression` lines of a file of settings (`*.tfvars`, `*.tfbackend`),
    each expression as written; `HclError` for a block, which such files cannot hold."""
    found: dict[str, str] = {}
    for item in hcl.items(text):
        if isinstance(item, hcl.Block):
            raise hcl.HclError(f"block {item.kind!r} in {what}")
        found[item.name] = item.expression
    return found


# One file, HCL or JSON, as blocks with attributes


@dataclass(frozen=True)
class _Value:
    """An attribute's expression as written: HCL, or JSON in a `.tf.json` file."""

    text: str
    is_json: bool = False

    @property
    def value(self) -> Any:
        return _json_value(json.loads(self.text)) if self.is_json else hcl.literal(self.text)

    def string(self) -> str | None:
        """The value if it is a literal string, else None."""
        value = self.value
        return value if isinstance(value, str) else None

    def flag(self) -> bool | None:
        """The value if it is a literal bool, else None (the reader cannot tell)."""
        value = self.value
        return value if isinstance(value, bool) else None

    def type_text(self) -> str:
        """A type constraint as written (in JSON, a string holding the HCL)."""
        value = self.value if self.is_json else None
        return value if isinstance(value, str) else self.text


def _json_value(value: Any) -> Any:
    """A JSON value as Terraform reads it: strings are templates, so one with `${` or `%{`
    is not a literal."""
    if isinstance(value, str):
        unescaped = value.replace("$${", "").replace("%%{", "")
        if "${" in unescaped or "%{" in unescaped:
            return UNKNOWN
        return value.replace("$${", "${").replace("%%{", "%{")
    if isinstance(value, list):
        items = [_json_value(v) for v in value]
        return UNKNOWN if any(v is UNKNOWN for v in items) else items
    if isinstance(value, dict):
        entries = {k: _json_value(v) for k, v in value.items()}
        return UNKNOWN if any(v is UNKNOWN for v in entries.values()) else entries
    return value


@dataclass(frozen=True)
class _Block:
    kind: str
    labels: tuple[str, ...]
    attributes: Mapping[str, _Value]
    blocks: tuple[_Block, ...] = ()  # nested: only those of `terraform` are read


@functools.lru_cache(maxsize=256)
def _parse(text: str, is_json: bool) -> tuple[_Block, ...]:
    """The blocks of one file that say what the reader is asked (cached on the text)."""
    if is_json:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a .tf.json file holds a JSON object")
        return tuple(_json_blocks(data))
    return tuple(_hcl_block(b, _LABELS) for b in hcl.blocks(text) if b.kind in _LABELS)


def _hcl_block(block: hcl.Block, labels: Mapping[str, int], nested: bool = True) -> _Block:
    if len(block.labels) != labels[block.kind]:
        raise hcl.HclError(f"{block.kind} block with {len(block.labels)} labels")
    attributes: dict[str, _Value] = {}
    blocks: list[_Block] = []
    for item in hcl.items(block.body):
        if isinstance(item, hcl.Attribute):
            attributes[item.name] = _Value(item.expression)
        elif nested and block.kind == "terraform" and item.kind in _TERRAFORM_BLOCKS:
            blocks.append(_hcl_block(item, _TERRAFORM_BLOCKS, nested=False))
    return _Block(block.kind, block.labels, attributes, tuple(blocks))


def _json_blocks(data: Mapping[str, Any]) -> Iterator[_Block]:
    for kind, content in data.items():
        if kind in _LABELS:
            yield from _json_labelled(kind, content, _LABELS[kind], ())


def _json_labelled(
    kind: str, content: Any, depth: int, labels: tuple[str, ...]
) -> Iterator[_Block]:
    """In `.tf.json`, a block's labels are nested object keys, and any level may be a list."""
    for body in content if isinstance(content, list) else [content]:
        if not isinstance(body, dict):
            raise ValueError(f"{kind} {' '.join(labels)}: a JSON object was expected")
        if depth:
            for label, inner in body.items():
                if label != "//":  # a comment
                    yield from _json_labelled(kind, inner, depth - 1, (*labels, label))
            continue
        attributes: dict[str, _Value] = {}
        blocks: list[_Block] = []
        for name, value in body.items():
            if kind == "terraform" and name in _TERRAFORM_BLOCKS:
                blocks.extend(_json_labelled(name, value, _TERRAFORM_BLOCKS[name], ()))
            elif name != "//":
                attributes[name] = _Value(json.dumps(value), is_json=True)
        yield _Block(kind, labels, attributes, tuple(blocks))


# Files merged into a module


class _Merged:
    """The blocks of a directory's files, merged as Terraform merges them: an override
    file's block replaces the attributes it sets in the block of the same name, and its
    backend or `cloud` block replaces the module's."""

    def __init__(self) -> None:
        self.named: dict[tuple[str, tuple[str, ...]], dict[str, _Value]] = {}
        self.backend: _Block | None = None
        self.required: dict[str, _Value] = {}

    def add(self, blocks: tuple[_Block, ...], *, override: bool) -> None:
        for block in blocks:
            if block.kind == "terraform":
                for inner in block.blocks:
                    if inner.kind == "required_providers":
                        self.required.update(inner.attributes)
                    elif override or self.backend is None:
                        self.backend = inner
                continue
            key = (block.kind, block.labels)
            if override and key in self.named:
                self.named[key].update(block.attributes)
            elif key not in self.named:
                self.named[key] = dict(block.attributes)

    def module(
        self, directory: Path, files: tuple[Path, ...], unreadable: tuple[Unreadable, ...]
    ) -> Module:
        def named(kind: str) -> Iterator[tuple[tuple[str, ...], dict[str, _Value]]]:
            return ((labels, a) for (k, labels), a in self.named.items() if k == kind)

        backend = None
        if self.backend is not None:
            attributes = {name: value.text for name, value in self.backend.attributes.items()}
            kind = self.backend.labels[0] if self.backend.labels else self.backend.kind
            backend = Backend(kind, attributes)
        return Module(
            directory=directory,
            files=files,
            unreadable=unreadable,
            module_calls={
                name: ModuleCall(name, _string(a, "source"), _string(a, "version"))
                for (name,), a in named("module")
            },
            backend=backend,
            required_providers={
                name: _requirement(name, value) for name, value in self.required.items()
            },
            provider_blocks=frozenset(name for (name,), _ in named("provider")),
            resources=tuple(
                _resource(mode, labels, a)
                for mode in ("resource", "data", "ephemeral")
                for labels, a in named(mode)
            ),
            variables={name: _variable(name, a) for (name,), a in named("variable")},
            outputs={
                name: Output(name, a["sensitive"].flag() if "sensitive" in a else False)
                for (name,), a in named("output")
            },
        )


def _string(attributes: Mapping[str, _Value], name: str) -> str | None:
    value = attributes.get(name)
    return value.string() if value is not None else None


def _requirement(name: str, value: _Value) -> ProviderRequirement:
    literal = value.value
    if isinstance(literal, str):  # the form before Terraform 0.13: a version constraint
        return ProviderRequirement(name, version=literal)
    if isinstance(literal, Mapping):
        source, version = literal.get("source"), literal.get("version")
        return ProviderRequirement(
            name,
            source if isinstance(source, str) else None,
            version if isinstance(version, str) else None,
        )
    return ProviderRequirement(name)


def _resource(mode: Any, labels: tuple[str, ...], attributes: Mapping[str, _Value]) -> Resource:
    type_, name = labels
    provider = type_.split("_")[0]
    if "provider" in attributes:  # `provider = aws.west`: a reference, not a string
        provider = attributes["provider"].text.strip().strip('"').split(".")[0] or provider
    return Resource(mode, type_, name, provider)


def _variable(name: str, attributes: Mapping[str, _Value]) -> Variable:
    sensitive = attributes["sensitive"].flag() if "sensitive" in attributes else False
    default = attributes.get("default")
    return Variable(
        name,
        sensitive=sensitive,
        type=attributes["type"].type_text() if "type" in attributes else None,
        default=default.value if default is not None else None,
        has_default=default is not None,
    )
