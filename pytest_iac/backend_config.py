"""The backend settings of a drift check: the `-backend-config` arguments its init gets. No
pytest here.

A check runs in a copy of its live directory (`pytest_iac.workspace`), and its init is
given, in Terraform's order (a later setting wins):

1. the plain strings of the copy's backend block (`bucket`, `key`, `path`...), which
   `move_block_strings()` takes out of the copy's code. Terraform merges `-backend-config`
   into the block, so the configuration is the same; but the copies' backend blocks now
   read alike where the directories differ only in those strings (their state's key, most
   often), and one init serves them all (`init_cache.SharedInit`);
2. the directory's own `*.tfbackend` files, by name;
3. the run's settings (`--iac-backend-config`, ini `iac_backend_config`, the marker's);
4. for a `local` backend whose state path is relative, that path made absolute: Terraform
   reads it from the directory it runs in, and the check runs in the copy, where the state
   is not.

Settings given as `KEY=VALUE` or as values go into private files, never onto a command
line: backend settings often hold credentials.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_iac import hcl, tfconfig
from pytest_iac.errors import IacError
from pytest_iac.redact import remember
from pytest_iac.workspace import write_private

# One backend configuration item: a file (Path), a `KEY=VALUE` string, or values (a mapping).
BackendConfig = Path | str | Mapping[str, Any]

_LOCAL_PATHS = ("path", "workspace_dir")  # a local backend's, relative to where it runs


def init_args(
    live_dir: Path, module_dir: Path, workdir: Path, backend_config: Sequence[BackendConfig]
) -> list[str]:
    """The `-backend-config` arguments of the init of `live_dir`'s copy at `module_dir`
    (see the module documentation); their files are written in `workdir`."""
    block = tfconfig.read_module(module_dir).backend
    # In init's order: files given as they are, and settings to write to a file of our own.
    sources: list[Path | dict[str, Any]] = []
    moved = move_block_strings(module_dir)
    if moved:
        sources.append(dict(moved))
    sources.extend(sorted(module_dir.glob("*.tfbackend")))
    run: dict[str, Any] | None = None  # the run's settings since its last file
    for item in backend_config:
        if isinstance(item, Path) or not (isinstance(item, Mapping) or "=" in item):
            sources.append(Path(item).resolve())
            run = None
            continue
        if run is None:
            run = {}
            sources.append(run)
        if isinstance(item, Mapping):
            run.update(item)
        else:
            key, _, value = item.partition("=")
            run[key.strip()] = value
    if block is not None and block.type == "local":
        _absolute_local_paths(live_dir, block, sources)
    args = []
    for number, source in enumerate(sources):
        if isinstance(source, dict):
            path = workdir / f"backend-{number}.tfbackend"
            write_private(path, "".join(f"{k} = {_hcl(v)}\n" for k, v in source.items()))
            source = path
        args.append(f"-backend-config={source}")
    return args


def _absolute_local_paths(
    live_dir: Path, block: tfconfig.Backend, sources: list[Path | dict[str, Any]]
) -> None:
    """A local backend's relative paths, as init will end up with them, made absolute
    against `live_dir`: in the settings that give them when those are ours, else in
    settings of their own, last."""
    found: dict[str, tuple[Any, dict[str, Any] | None]] = {
        name: (hcl.literal(block.attributes[name]), None)
        for name in _LOCAL_PATHS
        if name in block.attributes
    }
    for source in sources:
        if isinstance(source, dict):
            found.update({n: (source[n], source) for n in _LOCAL_PATHS if n in source})
            continue
        read = tfconfig.backend_settings(source)
        for name in _LOCAL_PATHS:
            if read is None:  # what it sets cannot be told: leave every path as given
                found[name] = (hcl.UNKNOWN, None)
            elif name in read:
                found[name] = (hcl.literal(read[name]), None)
    last: dict[str, Any] = {}
    for name, (value, settings) in found.items():
        if isinstance(value, str) and value and not Path(value).is_absolute():
            (settings if settings is not None else last)[name] = str(live_dir / value)
    if last:
        sources.append(last)


def move_block_strings(module_dir: Path) -> dict[str, str]:
    """Take the plain-string settings out of the backend block of the copy at `module_dir`
    and return them (to be given to init as `-backend-config`, the same configuration).

    Each setting's text is cut from its line, so every line keeps its number and terraform's
    messages point at the user's lines; the rest of the file stays byte for byte (CRLF line
    endings too, which a heredoc keeps in its value). Nothing is taken where the block is
    not plainly one, in one `.tf` file: none, a `cloud` block, a `terraform` block in a JSON
    file or a backend in an override file (which could replace it), a block with a nested
    block or a setting given twice, or one Terraform would not read (`{ a = "x"` with a
    second line): Terraform then says what it says of the code as written. Nor is a setting
    taken that is not a plain string (`hcl.plain_string`): it stays as written.
    """
    found: list[tuple[Path, str, hcl.Block, int]] = []  # file, text, block, body's offset
    for path in tfconfig.module_files(module_dir):
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return {}
        if path.name.endswith(".json"):
            try:
                data = json.loads(text)
            except ValueError:
                return {}
            if not isinstance(data, dict) or "terraform" in data:
                return {}
            continue
        if "backend" not in text and "cloud" not in text:
            continue
        try:
            blocks = [
                (outer, inner)
                for outer in hcl.blocks(text)
                if outer.kind == "terraform"
                for inner in hcl.items(outer.body)
                if isinstance(inner, hcl.Block) and inner.kind in ("backend", "cloud")
            ]
        except hcl.HclError:
            return {}
        for outer, inner in blocks:
            if inner.kind == "cloud" or tfconfig.is_override(path.name):
                return {}
            found.append((path, text, inner, outer.body_start + inner.body_start))
    if len(found) != 1:
        return {}
    path, text, block, start = found[0]
    try:
        items = list(hcl.items(block.body))
    except hcl.HclError:
        return {}
    attributes = [item for item in items if isinstance(item, hcl.Attribute)]
    names = {attribute.name for attribute in attributes}
    if len(attributes) != len(items) or len(names) != len(attributes):
        return {}
    if len(items) > 1 and "\n" not in block.body[: attributes[0].span[0]]:
        return {}
    moved: dict[str, str] = {}
    for attribute in reversed(attributes):  # from the end: earlier offsets stay right
        value = hcl.plain_string(attribute.expression)
        if value is None:
            continue
        moved[attribute.name] = value
        begin, end = (start + offset for offset in attribute.span)
        text = text[:begin] + text[end:]
    if moved:
        path.write_bytes(text.encode("utf-8"))
    return dict(reversed(moved.items()))


def remember_settings(backend_config: Sequence[BackendConfig]) -> None:
    """The run's backend settings often hold credentials, and terraform's errors quote the
    file they are written to: their values are masked wherever they show up. Words such as
    `true` and numbers are left alone (they would mask everything)."""
    values: list[Any] = []
    for item in backend_config:
        if isinstance(item, Mapping):
            values.extend(item.values())
        elif isinstance(item, str) and "=" in item:
            values.append(item.partition("=")[2])
        else:
            settings = tfconfig.read_var_file(Path(item))  # what a tfvars file looks like
            values.extend(settings.values.values())
    remember([v for v in values if not _plain_word(v)])


def _plain_word(value: Any) -> bool:
    if isinstance(value, bool | int | float) or value is None:
        return True
    text = str(value).strip().lower()
    return text in ("true", "false", "null") or text.replace(".", "", 1).isdigit()


def _hcl(value: Any) -> str:
    """A value as HCL: JSON literals are valid HCL for what backends take.

    A `KEY=VALUE` string whose value is a JSON object or list (`endpoints={"s3": "..."}`)
    keeps its structure; any other string stays a string (Terraform converts "true", "3").
    """
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    # `${` and `%{` in a quoted string would be a template: escaped, they are themselves.
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def parse_backend_config(values: Sequence[str], base: Path, origin: str) -> list[BackendConfig]:
    """Backend configuration given as `KEY=VALUE` or a file path (relative to `base`).

    Raises `IacError` naming `origin` for a file that does not exist or an empty key.
    """
    items: list[BackendConfig] = []
    for value in values:
        if "=" in value and not (base / value).is_file():
            key = value.partition("=")[0].strip()
            if not key:
                raise IacError(f"{origin}: {value!r} has no key; expected KEY=VALUE or a file")
            items.append(value)
            continue
        path = (base / value).expanduser()
        if not path.is_file():
            raise IacError(
                f"{origin}: backend configuration file {value} not found (looked in {base}); "
                "give KEY=VALUE or the path of a file of backend settings"
            )
        items.append(path.resolve())
    return items
