"""Reusing what `terraform init` made, across the deployments and live directories of a run
and across runs.

`init` reads little of a module: the `terraform` block (backend, required providers and
version), the sources and versions of the modules it calls, which providers its resources
and provider blocks imply, the lock file and the backend settings. Modules that agree on all
of that get the same result from init. `InitCache` keys what init made on exactly those
inputs (read with `pytest_iac.hcl`), so one init serves every such deployment or live
directory in a run (a hundred live directories with local state and the same backend block
need one init, not a hundred), and later runs reuse the entries while nothing that init reads
changed. Whatever the reader cannot vouch for (a file it cannot parse, `.tf.json`, `.tofu`,
test or query files, a backend or module source that refers to variables) falls back to a
key of every file byte and the directory's own path, as if nothing were shared.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_iac import hcl, tfconfig
from pytest_iac.engine import Terraform
from pytest_iac.workspace import write_private

log = logging.getLogger("pytest_iac")

INIT_CACHE_MAX_AGE = 24 * 3600.0  # seconds: then init runs again (new module/provider releases)
_CACHE_FORMAT = 2  # part of every key: a new layout of entries never meets an old one
_LOCK_FILE = ".terraform.lock.hcl"
_TFDATA = "tfdata"
# Set per run by pytest-iac, or by Terraform itself: not inputs of init.
_NOT_INIT_INPUTS = {"TF_DATA_DIR", "TF_CLI_CONFIG_FILE", "TF_IN_AUTOMATION", "TF_INPUT"}
# Files init may read that this module does not: JSON configuration, OpenTofu's own files,
# test, mock and query files (init installs what they call), stacks.
_OPAQUE_SUFFIXES = (".tf.json", ".tofu", ".tofu.json", ".hcl")
# Blocks init never reads: what they say matters to plan, not to what init installs.
_PLAN_ONLY_BLOCKS = {"variable", "output", "locals"}
_RESOURCE_BLOCKS = {"resource", "data", "ephemeral"}
# OpenTofu evaluates variables and locals in backend blocks and module sources at init.
_EARLY_REFERENCE = ("var.", "local.")


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def engine_identity(terraform: Terraform) -> str:
    """What identifies an engine's build: how it runs, its file's size and mtime, its version."""
    engine = terraform.engine
    try:
        stat = engine.path.stat()
        build = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        build = "?"
    identity = [engine.name, list(engine.argv), str(engine.path), engine.embedded, build]
    return json.dumps([*identity, terraform.version])


def _dangling_links(directory: Path) -> bool:
    """Does a link under `directory` point nowhere (a provider removed from the plugin cache)?"""
    for current, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            path = Path(current, name)
            if path.is_symlink() and not path.exists():
                return True
    return False


_BACKEND_STATE = "terraform.tfstate"  # in TF_DATA_DIR: the backend init set up
# Backends whose init does nothing for a directory but keep its settings: each lists the
# `default` workspace, so init selects no other (TF_DATA_DIR/environment). Not `remote` or
# `cloud`, whose init may pick a workspace from what the organisation holds.
_SHAREABLE_BACKENDS = frozenset({"local", "s3", "gcs", "azurerm"})
_WORKSPACE_FILE = "environment"


@dataclass(frozen=True)
class InitCall:
    """An `init` to key: ARGS in `module_dir`, the copy of the module or live directory
    `original` under `workdir/src` (with the local modules it calls), with `env`."""

    terraform: Terraform
    original: Path
    workdir: Path
    module_dir: Path
    args: Sequence[str]
    env: Mapping[str, str]


@dataclass(frozen=True)
class SharedInit:
    """One init for directories whose backend settings differ only in plain strings.

    A hundred live directories alike but for the state key (or local state path) that each
    gives in its backend block or its `*.tfbackend` file differ, to init, only there (a
    check's init gets the block's plain strings as `-backend-config` too:
    `pytest_iac.backend_config`). Terraform keeps the
    settings it was given in TF_DATA_DIR's `terraform.tfstate` (`backend.config`) and checks
    before each plan that the backend block in the code is the one initialised (a hash of
    the block, which `-backend-config` does not enter). So after one directory's init,
    another's is its entry with those strings set to its own: what its own init would have
    written. Only plain strings are set (no escape, no `${`), each only where init was seen
    to keep the string as given; everything else must be equal (part of `key`). An engine
    that checks more refuses such a backend ("Backend initialization required"): the caller
    then runs init and calls `InitCache.refuse_sharing()`.
    """

    key: str
    # This directory's plain-string settings (credentials, maybe): never in a repr.
    strings: Mapping[str, str] = field(repr=False)


def _relative_backend_arg(arg: str, workdir: Path, module_dir: Path) -> str:
    name, _, value = arg.partition("=")
    if name != "-backend-config" or not Path(value).is_relative_to(workdir):
        return arg
    return f"{name}={os.path.relpath(value, module_dir)}"


def _digest(inputs: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def _backend_config(data_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """TF_DATA_DIR's backend file, and its `backend.config`, for a backend that may be
    shared (`_SHAREABLE_BACKENDS`, the default workspace); None otherwise."""
    if (data_dir / _WORKSPACE_FILE).exists():
        return None
    try:
        data = json.loads((data_dir / _BACKEND_STATE).read_text(encoding="utf-8"))
        backend, config = data["backend"]["type"], data["backend"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if backend not in _SHAREABLE_BACKENDS or not isinstance(config, dict):
        return None
    return data, config


def _backend_strings(data_dir: Path, strings: Mapping[str, str]) -> bool:
    """May what init left be shared: did it keep each of `strings` exactly as given?"""
    found = _backend_config(data_dir)
    return found is not None and all(found[1].get(n) == v for n, v in strings.items())


def _rewrite_backend_strings(data_dir: Path, strings: Mapping[str, str]) -> bool:
    """Set `strings` in TF_DATA_DIR's backend settings (a copy of an entry's)."""
    found = _backend_config(data_dir)
    if found is None or not all(isinstance(found[1].get(n), str) for n in strings):
        return False
    data, config = found
    config.update(strings)
    write_private(data_dir / _BACKEND_STATE, json.dumps(data, indent=2))
    return True


class InitCache:
    """What `init` made, reused while nothing that init reads changed.

    An entry holds TF_DATA_DIR after init (the backend's initialised settings, which may hold
    backend credentials: the file is 0600 in a 0700 directory; downloaded modules; provider
    links into the plugin cache) and the lock file init left. It never holds a plan, a
    variables file, a state or a copy of one: those are written after the entry is taken.

    The key (`key()`) is a hash of the engine (path, build, version), the CLI configuration
    (mirrors, plugin cache), the init arguments with the content of every backend
    configuration file they name, the `TF_*` environment variables, the data directory's
    place, and what init reads from the module and the local modules it calls
    (`init_inputs()`), or every byte of them and the module's path where that cannot be
    told. Any change is a new key, so an entry is never stale; entries older than `max_age`
    are not used (a version constraint may match a newer release), nor are entries whose
    provider links point nowhere (the plugin cache was cleared).

    Entries are written to a temporary directory and renamed into place, and are only read
    afterwards: each user copies its entry into a directory of its own, so concurrent runs
    and xdist workers never write to an entry another one reads.
    """

    def __init__(
        self, directory: Path, engine: str, *, max_age: float = INIT_CACHE_MAX_AGE
    ) -> None:
        self.directory = directory
        self.engine = engine
        self.max_age = max_age
        self._claims: dict[str, threading.Lock] = {}
        self._claims_lock = threading.Lock()
        self._pruned = False  # once a run: each prune looks at every entry
        self._sharing_refused = False
        self._unshareable: set[str] = set()  # shared keys whose first init kept no strings

    def key(self, call: InitCall) -> str:
        """The entry for `call`."""
        inputs, _ = self._inputs(call)
        return _digest(inputs)

    def keys(self, call: InitCall) -> tuple[str, SharedInit | None]:
        """`key(call)`, and the entry that directories whose backend settings differ only
        in plain strings may share (see `SharedInit`), or None when there is no such."""
        inputs, files = self._inputs(call)
        return _digest(inputs), self._shared(call, inputs, files)

    def _shared(
        self, call: InitCall, inputs: dict[str, Any], files: list[Path]
    ) -> SharedInit | None:
        if self._sharing_refused:
            return None
        if "read" not in inputs:  # the reader cannot vouch for what init reads
            return None
        backend = tfconfig.read_module(call.module_dir).backend
        if backend is None or backend.type not in _SHAREABLE_BACKENDS:
            return None
        settings: dict[str, str] = {}
        for file in files:  # in init's order: a later file's setting wins
            read = tfconfig.backend_settings(file)
            if read is None:
                return None
            settings.update(read)
        plain = {name: hcl.plain_string(expression) for name, expression in settings.items()}
        strings = {name: value for name, value in plain.items() if value is not None}
        if not strings:
            return None
        inputs = dict(inputs)  # the caller's stay as they are
        inputs["backend_config_files"] = {
            name: "<a plain string>" if name in strings else expression
            for name, expression in settings.items()
        }
        # Named as init is given them, from where it runs: the same in every such directory.
        inputs["args"] = [
            _relative_backend_arg(a, call.workdir, call.module_dir) for a in call.args
        ]
        given = {os.path.relpath(f, call.module_dir) for f in files}
        inputs["read"] = [
            [entry[0], "<settings>"] if entry[0] in given else entry for entry in inputs["read"]
        ]
        return SharedInit(_digest({"shared": inputs}), strings)

    def refuse_sharing(self) -> None:
        """Share no more inits this run: the engine refused a backend set up by rewriting."""
        self._sharing_refused = True

    def _inputs(self, call: InitCall) -> tuple[dict[str, Any], list[Path]]:
        """What init reads, for a key; and the `-backend-config` files, in order."""
        terraform, workdir, module_dir, env = (
            call.terraform,
            call.workdir,
            call.module_dir,
            call.env,
        )
        source = workdir / "src"
        config_files = []
        files = []
        args = []
        for arg in call.args:
            if arg.startswith("-backend-config="):
                value = Path(arg.partition("=")[2])
                if value.is_file():
                    files.append(value)
                    config_files.append(_file_digest(value))
                    value_text = str(value).replace(str(workdir), "<workdir>")
                    arg = f"-backend-config={value_text}"
            args.append(arg)
        environment = terraform.environment(env)
        inputs: dict[str, Any] = {
            "format": _CACHE_FORMAT,
            "engine": self.engine,
            "cli_config": terraform.cli_config.read_text(encoding="utf-8"),
            "args": args,
            "backend_config_files": config_files,
            "data_dir": env.get("TF_DATA_DIR"),
            "env": {
                k: v
                for k, v in sorted(environment.items())
                if k.startswith("TF_") and k not in _NOT_INIT_INPUTS
            },
        }
        read = init_inputs(source, module_dir)
        if read is not None:
            inputs["read"] = read
        else:
            inputs["original"] = str(call.original)
            inputs["files"] = [
                [p.relative_to(source).as_posix(), _file_digest(p) if p.is_file() else "link"]
                for p in sorted(source.rglob("*"))
                if p.is_file() or p.is_symlink()
            ]
        return inputs, files

    def _fresh(self, entry: Path) -> bool:
        try:
            return time.time() - entry.stat().st_mtime < self.max_age
        except OSError:
            return False

    def init(
        self,
        key: str,
        data_dir: Path,
        module_dir: Path,
        run_init: Callable[[], Any],
        shared: SharedInit | None = None,
    ) -> Literal["ran", "reused", "shared"]:
        """Put what init made for `key` in place, calling `run_init` (and keeping what it
        made) only when no entry has it: "reused" when the entry was there, "shared" when
        `shared`'s entry was, its backend settings rewritten (`SharedInit`), else "ran".

        `data_dir` is the TF_DATA_DIR and `module_dir` the directory init runs in. Callers
        with the same key (or shared key) wait for the one running init, then use its entry.
        """
        if shared is not None and shared.key in self._unshareable:
            shared = None
        if found := self._use(key, data_dir, module_dir, shared):
            return found
        while True:
            with self._claims_lock:
                claim = self._claims.setdefault(shared.key if shared else key, threading.Lock())
            with claim:
                if shared is not None and shared.key in self._unshareable:
                    # Decided while this one waited: it inits on its own key, at once with
                    # the others that waited (not in turn, holding the shared one).
                    shared = None
                    continue
                if found := self._use(key, data_dir, module_dir, shared):  # made meanwhile
                    return found
                run_init()
                self.store(key, data_dir, module_dir)
                if shared is not None:
                    if _backend_strings(data_dir, shared.strings):
                        self.store(shared.key, data_dir, module_dir)
                    else:
                        self._unshareable.add(shared.key)
                return "ran"

    def _use(
        self, key: str, data_dir: Path, module_dir: Path, shared: SharedInit | None
    ) -> Literal["reused", "shared"] | None:
        if self.restore(key, data_dir, module_dir):
            return "reused"
        if shared is None or not self.restore(shared.key, data_dir, module_dir):
            return None
        if _rewrite_backend_strings(data_dir, shared.strings):
            return "shared"
        shutil.rmtree(data_dir, ignore_errors=True)
        return None

    def restore(self, key: str, data_dir: Path, module_dir: Path) -> bool:
        """Put entry `key` in place, as init would have left it; False on a miss."""
        entry = self.directory / key
        if not self._fresh(entry) or _dangling_links(entry):
            return False
        try:
            if (entry / _TFDATA).is_dir():
                shutil.copytree(entry / _TFDATA, data_dir, symlinks=True)
            lock = entry / _LOCK_FILE
            if lock.is_file():
                shutil.copy2(lock, module_dir / _LOCK_FILE)
            else:
                (module_dir / _LOCK_FILE).unlink(missing_ok=True)
        except OSError:
            # Replaced under us by a concurrent run: init as if there were no entry.
            shutil.rmtree(data_dir, ignore_errors=True)
            return False
        return True

    def store(self, key: str, data_dir: Path, module_dir: Path) -> None:
        """Keep what init left as entry `key` (best effort: errors are logged)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.directory))  # 0700
        except OSError as error:
            log.warning("could not write the init cache in %s: %s", self.directory, error)
            return
        try:
            if data_dir.is_dir():
                shutil.copytree(data_dir, staging / _TFDATA, symlinks=True)
                for path in (staging / _TFDATA).rglob("*"):
                    # The backend's initialised settings hold what -backend-config gave.
                    if path.is_file() and not path.is_symlink():
                        path.chmod(0o600)
            if (module_dir / _LOCK_FILE).is_file():
                shutil.copy2(module_dir / _LOCK_FILE, staging / _LOCK_FILE)
            self._publish(staging, self.directory / key)
        except OSError as error:
            log.warning("could not write the init cache in %s: %s", self.directory, error)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with self._claims_lock:
            pruned, self._pruned = self._pruned, True
        if not pruned:
            self.prune()

    def _publish(self, staging: Path, entry: Path) -> None:
        try:
            staging.rename(entry)
            return
        except OSError:
            if self._fresh(entry):
                return  # a concurrent run stored the same key first: keep that one
        retired = entry.with_name(f".old-{entry.name}-{os.getpid()}-{threading.get_ident()}")
        entry.rename(retired)
        staging.rename(entry)
        shutil.rmtree(retired, ignore_errors=True)

    def prune(self) -> None:
        """Remove entries too old to be used, and what interrupted runs left half-written."""
        try:
            children = list(self.directory.iterdir())
        except OSError:
            return
        for child in children:
            try:
                age = time.time() - child.stat().st_mtime
            except OSError:
                continue
            temporary = child.name.startswith((".new-", ".old-"))
            if age > (3600.0 if temporary else self.max_age):
                shutil.rmtree(child, ignore_errors=True)


def init_inputs(source: Path, module_dir: Path | None = None) -> list[Any] | None:
    """What `init` reads from the module tree at `source`, run in `module_dir` (default:
    `source`); None when that cannot be told.

    Paths are relative to `module_dir`, where init runs (`../network` for a local module
    beside it), so trees laid out alike and read alike give equal lists whatever their
    directories are called. Within a directory, which `.tf` file says what does not matter
    to init, except for override files, which are kept apart by name.
    """
    module_dir = module_dir or source
    read_in: dict[str, set[str]] = {}
    files: list[Any] = []
    for path in sorted(source.rglob("*")):
        name = path.name
        if path.is_dir():
            continue
        if name.endswith(_OPAQUE_SUFFIXES) and name != _LOCK_FILE:
            return None
        relative = Path(os.path.relpath(path, module_dir))
        if name.endswith(".tf"):
            read = _read_by_init(path.read_text(encoding="utf-8", errors="replace"))
            if read is None:
                return None
            override = tfconfig.is_override(name)
            where = relative.as_posix() if override else relative.parent.as_posix()
            read_in.setdefault(where, set()).update(read)
        elif name == _LOCK_FILE or name.endswith(".tfbackend"):
            files.append([relative.as_posix(), _file_digest(path)])
    return [*files, *([where, sorted(read)] for where, read in sorted(read_in.items()))]


@functools.lru_cache(maxsize=512)
def _read_by_init(text: str) -> frozenset[str] | None:
    """The parts of a `.tf` file that decide what init does; None if it cannot be read.

    Cached on the text: a module that a hundred live directories call is read once a run."""
    try:
        # `provider::aws::arn_parse(...)`: init installs the provider of a function.
        functions = (n.split("::")[1] for n in hcl.names(text) if n.startswith("provider::"))
        read: list[Any] = [["function", name] for name in sorted(set(functions))]
        for block in hcl.blocks(text):
            early: list[str] = []  # what OpenTofu evaluates at init
            if block.kind in _PLAN_ONLY_BLOCKS:
                continue
            if block.kind == "terraform":
                early = [block.body]
                read.append(["terraform", block.body])
            elif block.kind == "module":
                attributes = _attributes(block.body)
                early = [attributes.get("source", ""), attributes.get("version", "")]
                read.append(["module", block.labels, *early, attributes.get("providers")])
            elif block.kind == "provider" and block.labels:
                read.append(["provider", block.labels[0]])
            elif block.kind in _RESOURCE_BLOCKS and block.labels:
                # A resource needs the provider its type implies (the first word of
                # aws_s3_bucket), or the one its `provider` argument names: to init, the
                # same as a provider block of that name.
                read.append(["provider", block.labels[0].split("_")[0]])
                if provider := _attributes(block.body).get("provider"):
                    read.append(["provider argument", provider])
            else:  # check, import, removed, moved, and blocks of later versions: all of it
                read.append([block.kind, block.labels, block.body])
            if any(n.startswith(_EARLY_REFERENCE) for part in early for n in hcl.names(part)):
                return None
    except hcl.HclError:
        return None
    # How many resources imply a provider, and in which order, does not matter to init.
    return frozenset(json.dumps(entry) for entry in read)


def _attributes(body: str) -> dict[str, str]:
    return {i.name: i.expression for i in hcl.items(body) if isinstance(i, hcl.Attribute)}
