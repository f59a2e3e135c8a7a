"""Sandbox deployments: copy a module, init, apply, read outputs, destroy. No pytest here.

A `Sandbox` owns a directory where every deployment gets a working directory of its own:
a copy of the module (and of the local modules it calls, at the same relative places, so
`source = "../network"` keeps working), its variables as a JSON var file, its `.terraform`
(Terraform's default data directory, private because it sits inside the copy: no
per-deployment TF_DATA_DIR, so every deployment's commands share one environment) and its
state. The module under test is only ever read.

A deployment has a state of its own, always: whatever backend or `cloud` block the module
declares, an override file in the copy replaces it by local state in the copy. Only a test
that passes `backend_config=` deploys into the module's own backend, and then only into a
state that holds no resources yet: a sandbox never adopts, nor destroys, what it did not make.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shlex
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pytest_iac import redact
from pytest_iac.engine import Result, Terraform
from pytest_iac.errors import (
    DestroyError,
    IacError,
    TerraformError,
    TerraformTimeoutError,
    UnsavedStateError,
)
from pytest_iac.init_cache import InitCache, InitCall
from pytest_iac.plan import Plan
from pytest_iac.tfconfig import is_module_dir, read_module
from pytest_iac.workspace import copy_module, write_private

log = logging.getLogger("pytest_iac")

_VAR_FILE = "pytest-iac.tfvars.json"
_PLAN_VAR_FILE = "pytest-iac-plan.tfvars.json"  # a plan's variables: `plan(vars=...)`

# What a sandbox tells its hooks: before a plan, before the first apply (and every re-apply),
# when a first apply failed having deployed nothing, before a destroy, and after a successful
# destroy.
# A hook that raises stops the action.
Event = Literal["before-plan", "before-apply", "not-applied", "before-destroy", "destroyed"]
Hook = Callable[[Event, "Stack"], None]
_BACKEND_FILE = "pytest-iac.tfbackend"
# Where Terraform writes a state it could not save (its backend refused it, its file could
# not be written): the directory it runs in, the module's copy. It holds resources that exist.
ERRORED_STATE = "errored.tfstate"

# The deployment's own state. Terraform merges override files over the configuration in
# the order of their names, and a backend block in one replaces any backend or `cloud` block
# before it: `~` sorts after every ASCII letter, digit and sign a module's own file name
# could start with. `_check_own_state()` proves after init that it won.
OWN_STATE_FILE = "~pytest-iac_override.tf"
_OWN_STATE = 'terraform {\n  backend "local" {}\n}\n'
# What names a backend's state in a message: never a credential.
_BACKEND_IDENTITY = (
    *("path", "workspace_dir", "organization", "hostname", "bucket", "storage_account_name"),
    *("container_name", "prefix", "key", "workspace_key_prefix", "region", "schema_name"),
    *("namespace", "secret_suffix"),
)


class SensitiveStr(str):
    """A string from a sensitive output: usable like any string, shown as `<sensitive>`."""

    def __repr__(self) -> str:
        return "'<sensitive>'"


def _mark_sensitive(value: Any) -> Any:
    if isinstance(value, str):
        return SensitiveStr(value)
    if isinstance(value, list):
        return [_mark_sensitive(v) for v in value]
    if isinstance(value, dict):
        return {k: _mark_sensitive(v) for k, v in value.items()}
    return value


class Outputs(Mapping[str, Any]):
    """A deployment's outputs as plain Python values; sensitive ones never shown in reprs."""

    def __init__(self, raw: Mapping[str, Mapping[str, Any]]) -> None:
        self.sensitive = frozenset(name for name, o in raw.items() if o.get("sensitive"))
        self._values = {
            name: _mark_sensitive(o.get("value")) if name in self.sensitive else o.get("value")
            for name, o in raw.items()
        }

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"no output {name!r}; the module has {sorted(self._values)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = {k: "<sensitive>" if k in self.sensitive else v for k, v in self._values.items()}
        return f"Outputs({shown!r})"


class Stack:
    """One deployment of a module in the sandbox.

    Made by `Sandbox.stack()`; `apply()` deploys it and `destroy()` removes it. Register the
    destroy before the first apply: an apply that fails half-way leaves real resources.
    """

    def __init__(
        self,
        terraform: Terraform,
        source: Path,
        workdir: Path,
        *,
        vars: Mapping[str, Any] | None = None,
        var_files: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        backend_config: Mapping[str, Any] | None = None,
        hooks: Sequence[Hook] = (),
        test_id: str = "",
        init_cache: InitCache | None = None,
        init_upgrade: bool = False,
        parallelism: int | None = None,
    ) -> None:
        if parallelism is not None and (
            isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1
        ):
            raise IacError(f"parallelism must be a whole number of 1 or more, not {parallelism!r}")
        self.init_upgrade = bool(init_upgrade)  # init -upgrade: the newest providers allowed
        self.parallelism = parallelism  # apply and destroy -parallelism=N
        self.terraform = terraform
        self.init_cache = init_cache
        self.hooks = list(hooks)
        self.test_id = test_id  # the test (or module, when shared) that deployed it
        self.source = source
        self.workdir = workdir
        self.vars: dict[str, Any] = dict(vars or {})
        self.var_files = [Path(f) for f in var_files]
        self.env = dict(env or {})
        self.backend_config = dict(backend_config or {})
        self.notes: dict[str, str] = {}  # what hooks tell the ledger record, e.g. aws: moto
        self.module_dir = self._place(source, workdir / "src")
        self._initialised = False
        self._applied = False  # an apply was started: there may be something to destroy
        self._outputs: Outputs | None = None
        self.destroyed = False

    def __repr__(self) -> str:
        return f"<Stack {self.source} in {self.workdir}>"

    def _place(self, source: Path, destination: Path) -> Path:
        """Put the code to deploy under `destination`; return the module's directory there."""
        return copy_module(source, destination)

    @property
    def data_dir(self) -> Path:
        """Terraform's data directory (providers, backend settings): `.terraform` in the copy."""
        return self.module_dir / self.env.get("TF_DATA_DIR", ".terraform")

    # What was deployed

    @property
    def outputs(self) -> Outputs:
        if self._outputs is None:
            raw = self._local_state_outputs()
            if raw is None:
                printed = self._run(["output", "-json"], quiet=True).json()
                raw = printed if isinstance(printed, dict) else {}
            # Terraform leaves an output whose value is null out of the state: it is None here.
            nulls = {name: {"value": None} for name in read_module(self.module_dir).outputs}
            self._outputs = Outputs({**nulls, **raw})
            redact.remember([self._outputs[name] for name in self._outputs.sensitive])
        return self._outputs

    def _local_state_outputs(self) -> dict[str, Any] | None:
        """The outputs in a local state file, read without a terraform process; else None.

        `terraform output -json` prints this very section of a version 4 state. With
        `backend_config`, the state is in the module's backend: terraform must read it.
        """
        if self.backend_config:
            return None
        try:
            state = json.loads((self.module_dir / "terraform.tfstate").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        outputs = state.get("outputs") if state.get("version") == 4 else None
        return outputs if isinstance(outputs, dict) else None

    @property
    def resources(self) -> list[str]:
        """Addresses of the managed resources in the state, child modules included."""
        return self._addresses("managed")

    @property
    def data_sources(self) -> list[str]:
        """Addresses of the data sources in the state (`data.aws_caller_identity.this`...)."""
        return self._addresses("data")

    def _addresses(self, mode: str) -> list[str]:
        values = self.state().get("values") or {}
        return sorted(
            r["address"] for r in _resources(values.get("root_module") or {}) if r["mode"] == mode
        )

    def state(self) -> dict[str, Any]:
        """The state as `terraform show -json` gives it."""
        data = self._run(["show", "-json"], quiet=True).json()
        return data if isinstance(data, dict) else {}

    # Lifecycle

    def apply(self, vars: Mapping[str, Any] | None = None) -> Stack:
        """Deploy (or re-deploy with changed variables, for upgrade tests)."""
        var_file_text({**self.vars, **(vars or {})})  # refused before anything starts
        self.vars.update(vars or {})
        self._init()
        if not self._applied:
            self._refuse_a_state_in_use()
        self._notify("before-apply")  # a hook may add to the variables (the AWS tags)
        first, self._applied = not self._applied, True
        try:
            self._run(["apply", "-auto-approve", *self._walk_args(), *self._var_args()])
        except TerraformTimeoutError:
            raise  # stopped from outside: what it made may not be in the state yet
        except TerraformError:
            if first and self._state_is_empty():
                # Terraform stopped before it made anything (a missing variable, say).
                self._applied = False
                self._notify("not-applied")
            raise
        self._outputs = None
        return self

    def plan(self, vars: Mapping[str, Any] | None = None) -> Plan:
        """What an apply would change now, e.g. `assert stack.plan().is_empty` (idempotency)."""
        self._init()
        self._notify("before-plan")
        plan_file = self.workdir / "plan.tfplan"
        # A var file of its own: the deployment's stays what the ledger's destroy needs.
        values, var_file = {**self.vars, **(vars or {})}, self.workdir / _PLAN_VAR_FILE
        self._run(["plan", f"-out={plan_file}", *self._var_args(values, var_file)])
        data = self._run(["show", "-json", str(plan_file)], quiet=True).json()
        plan_file.unlink()
        return Plan.from_json(data if isinstance(data, dict) else {})

    def destroy(self) -> None:
        """Destroy what was deployed and remove the working directory.

        On failure the state and working directory stay, and the error says how to finish.
        """
        if self._applied:
            self._refuse_unsaved_state()
            self._notify("before-destroy")
            try:
                self._init()  # after a failed upgrade, the code put back is not initialised
                self._run(["destroy", "-auto-approve", *self._walk_args(), *self._var_args()])
            except TerraformError as error:
                if self._state_is_empty():
                    # e.g. the apply stopped at a bad variable, which the destroy meets too
                    self.destroyed = True
                    self._notify("destroyed")
                    shutil.rmtree(self.workdir, ignore_errors=True)
                    return
                unsaved = unsaved_state(self.module_dir)
                raise DestroyError(
                    error.command,
                    error.cwd,
                    error.returncode,
                    error.output,
                    module=str(self.source),
                    hint=self._finish_unsaved(unsaved)
                    if unsaved
                    else "The state and working directory are kept. To finish the clean-up, "
                    "run `pytest --iac-cleanup` in the project (it destroys what its ledger "
                    f"lists), or by hand:\n  {self.destroy_command()}",
                ) from None
        self.destroyed = True
        self._notify("destroyed")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _state_is_empty(self) -> bool:
        """True only when terraform itself says the state holds no resources, and no state
        Terraform could not save (errored.tfstate) holds any."""
        if unsaved_state(self.module_dir):
            return False
        try:
            return not self.resources
        except TerraformError:
            return False

    def _refuse_unsaved_state(self) -> None:
        """A destroy would miss what Terraform made but could not save: keep everything."""
        unsaved = unsaved_state(self.module_dir)
        if unsaved:
            raise UnsavedStateError(
                f"Terraform could not save the state of {self.source}: {unsaved}. Nothing was "
                f"destroyed. {self._finish_unsaved(unsaved)}"
            )

    def _finish_unsaved(self, unsaved: str) -> str:
        env = {"TF_DATA_DIR": str(self.data_dir)} if "TF_DATA_DIR" in self.env else {}
        return (
            "The working directory and the ledger record are kept. Once the state's backend "
            "takes writes again, put what Terraform made back into the state:\n  "
            f"{finish_unsaved(self.module_dir, self.terraform.engine.argv, env)}\n"
            f"then run `pytest --iac-cleanup` in the project (it destroys what its ledger lists)"
        )

    def destroy_command(self) -> str:
        """A shell command that destroys this deployment by hand."""
        env = {"TF_CLI_CONFIG_FILE": str(self.terraform.cli_config)}
        if "TF_DATA_DIR" in self.env:
            env["TF_DATA_DIR"] = str(self.data_dir)
        var_args = [f"-var-file={f}" for f in self.var_file_paths]
        argv = [*self.terraform.engine.argv, "destroy", "-auto-approve", *var_args]
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        return f"cd {shlex.quote(str(self.module_dir))} && {assignments} {shlex.join(argv)}"

    @property
    def needs_destroy(self) -> bool:
        return self._applied and not self.destroyed

    # Running terraform

    def _notify(self, event: Event) -> None:
        for hook in self.hooks:
            hook(event, self)

    def _init(self) -> None:
        if self._initialised:
            return
        args = ["init", *(["-upgrade"] if self.init_upgrade else [])]
        if self.backend_config:
            backend_file = self.workdir / _BACKEND_FILE
            write_private(backend_file, _hcl_assignments(self.backend_config))
            args.append(f"-backend-config={backend_file}")
        else:  # before every init: an upgrade test puts other code in place
            (self.module_dir / OWN_STATE_FILE).write_text(_OWN_STATE, encoding="utf-8")
        if self.init_cache is None:
            self._run(args)
        else:
            cache = self.init_cache
            key = cache.key(
                InitCall(self.terraform, self.source, self.workdir, self.module_dir, args, self.env)
            )
            if cache.init(key, self.data_dir, self.module_dir, lambda: self._run(args)) != "ran":
                log.info("[%s] init reused from %s", self.workdir.name, cache.directory / key)
        if not self.backend_config:
            self._check_own_state()
        self._initialised = True

    def _backend(self) -> dict[str, Any]:
        """The backend init configured (`type`, `config`); {} for the default local state."""
        try:
            data = json.loads((self.data_dir / "terraform.tfstate").read_text("utf-8"))
        except FileNotFoundError:
            return {}
        backend = data.get("backend") if isinstance(data, dict) else None
        return backend if isinstance(backend, dict) else {}

    def _check_own_state(self) -> None:
        """Prove that init gave the copy the local state of `OWN_STATE_FILE`."""
        backend = self._backend()
        config = backend.get("config") or {}
        if backend and (backend.get("type") != "local" or any(config.values())):
            raise IacError(
                f"refused to deploy {self.source}: after pytest-iac's override file "
                f"{OWN_STATE_FILE}, its state is still in {_describe_backend(backend)}. An "
                "override file of the module's sorts after it (Terraform merges them in the "
                "order of their names): rename that file, or pass backend_config=... to deploy "
                "into the module's backend on purpose"
            )

    def _refuse_a_state_in_use(self) -> None:
        """With `backend_config`, deploy only into a state that holds no resources yet: the
        destroy at teardown would take them too."""
        if not self.backend_config:
            return
        pulled = self._run(["state", "pull"], quiet=True).stdout  # empty: no state yet
        resources = (json.loads(pulled).get("resources") or []) if pulled.strip() else []
        count = sum(len(r.get("instances") or ()) for r in resources)
        if count:
            raise IacError(
                f"refused to deploy into {_describe_backend(self._backend())}: its state "
                f"already holds {count} resource{'s' if count > 1 else ''}, which a sandbox "
                "would adopt and destroy at teardown. Nothing was applied. Point "
                "backend_config at an empty state (another key or path), or leave it out: "
                "the deployment then has local state of its own"
            )

    def _walk_args(self) -> list[str]:
        return [f"-parallelism={self.parallelism}"] if self.parallelism is not None else []

    @property
    def var_file_paths(self) -> list[Path]:
        """The var files every command gets: the test's own, then ours with `vars`."""
        return [*self.var_files, self.workdir / _VAR_FILE]

    def _var_args(
        self, vars: Mapping[str, Any] | None = None, var_file: Path | None = None
    ) -> list[str]:
        # Variables go through a JSON var file, never the command line: every type arrives
        # intact and no value shows up in a process list.
        values = self.vars if vars is None else vars
        text = var_file_text(values)
        redact.remember_variables(self.module_dir, values, self.var_files)  # masked everywhere
        var_file = var_file or self.workdir / _VAR_FILE
        write_private(var_file, text)
        return [f"-var-file={f}" for f in (*self.var_files, var_file)]

    def _run(self, args: list[str], *, quiet: bool = False) -> Result:
        return self.terraform.run(
            args,
            cwd=self.module_dir,
            env=self.env,
            label=self.workdir.name,
            module=str(self.source),
            quiet=quiet,
        )


class Sandbox:
    """The place deployments live: one working directory each under `root`."""

    def __init__(
        self,
        terraform: Terraform,
        root: Path,
        hooks: Sequence[Hook] = (),
        init_cache: InitCache | None = None,
    ) -> None:
        self.terraform = terraform
        self.root = root
        self.hooks = list(hooks)  # given to every stack: guards, the ledger
        self.init_cache = init_cache  # shared by the stacks: what init made, reused

    def stack(
        self,
        source: Path,
        name: str,
        *,
        vars: Mapping[str, Any] | None = None,
        var_files: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        backend_config: Mapping[str, Any] | None = None,
        test_id: str = "",
        from_ref: str | None = None,
        init_upgrade: bool = False,
        parallelism: int | None = None,
    ) -> Stack:
        """A deployment of `source`, ready to apply: nothing runs yet.

        With `from_ref`, of `source` as it was at that git ref: an `UpgradeStack`.
        """
        check_module(source)
        var_file_text(vars or {})  # checked before a working directory is made
        kind: Callable[..., Stack] = Stack
        if from_ref is not None:
            from pytest_iac import upgrade  # GitPython: loaded by upgrade tests only

            at = upgrade.module_at(source, from_ref)  # resolved before anything is made
            kind = partial(upgrade.UpgradeStack, at=at)
        workdir = _unique_dir(self.root, name)
        try:
            return kind(
                self.terraform,
                source,
                workdir,
                vars=vars,
                var_files=var_files,
                env=env,
                backend_config=backend_config,
                hooks=self.hooks,
                test_id=test_id,
                init_cache=self.init_cache,
                init_upgrade=init_upgrade,
                parallelism=parallelism,
            )
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise

    @contextlib.contextmanager
    def deploy(self, source: Path, name: str, **options: Any) -> Iterator[Stack]:
        """Deploy `source` for the duration of a with-block; destroyed whatever happens."""
        stack = self.stack(source, name, **options)
        try:
            yield stack.apply()
        finally:
            stack.destroy()

    def plan(self, source: Path, name: str, **options: Any) -> Plan:
        """Plan `source` against empty state: nothing is deployed."""
        stack = self.stack(source, name, **options)
        try:
            return stack.plan()
        finally:
            shutil.rmtree(stack.workdir, ignore_errors=True)


def check_module(source: Path) -> None:
    """Fail early, and clearly, on a path that cannot be a Terraform module."""
    if not source.exists():
        raise IacError(f"module path {source} does not exist")
    if not source.is_dir():
        raise IacError(f"module path {source} is not a directory")
    if not is_module_dir(source):
        raise IacError(f"module path {source} has no .tf files: is it a Terraform module?")


def unsaved_state(module_dir: Path) -> str | None:
    """What the errored.tfstate in `module_dir` holds, said for a user, when it holds (or,
    unreadable, may hold) resources; None when there is none or it holds no resources."""
    path = module_dir / ERRORED_STATE
    try:
        data = json.loads(path.read_text("utf-8"))
        resources = [r for r in data.get("resources") or () if r.get("mode") == "managed"]
        count = sum(len(r.get("instances") or ()) for r in resources)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError, TypeError):
        return f"{path} cannot be read as a state, and may hold resources Terraform made"
    if not count:
        return None
    return (
        f"{path} holds {count} resource{'s' if count > 1 else ''} Terraform made but could not "
        "save to the deployment's state"
    )


def finish_unsaved(module_dir: Path, engine_argv: Sequence[str], env: Mapping[str, str]) -> str:
    """A shell command that pushes an errored.tfstate into the deployment's state, then moves
    it aside (once pushed, what it holds is in the state a destroy reads)."""
    assignments = "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
    push = shlex.join([*engine_argv, "state", "push", ERRORED_STATE])
    pushed = f"mv {ERRORED_STATE} {ERRORED_STATE}.pushed"
    return f"cd {shlex.quote(str(module_dir))} && {assignments}{push} && {pushed}"


def _resources(module: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from module.get("resources") or ()
    for child in module.get("child_modules") or ():
        yield from _resources(child)


def _unique_dir(root: Path, name: str) -> Path:
    """A new directory under `root` that only its owner can enter: it will hold the state."""
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        candidate = root / (name if n == 0 else f"{name}-{n}")
        try:
            candidate.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return candidate
    raise IacError(f"could not make a working directory for {name} under {root}")


def _hcl_assignments(values: Mapping[str, Any]) -> str:
    """`key = value` lines; JSON literals are valid HCL for the values backends take."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def var_file_text(values: Mapping[str, Any]) -> str:
    """`values` as a JSON var file; IacError naming the first value JSON cannot hold."""
    if not isinstance(values, Mapping):
        kind = type(values).__name__
        raise IacError(f"vars must be a dict of variable names and values, not a {kind}")
    try:
        problem = _not_json(dict(values), "vars")
    except RecursionError:
        problem = "vars is nested too deeply (or holds itself)"
    if problem:
        raise IacError(
            f"{problem}, which a Terraform variable cannot hold: give str, int, float, bool, "
            "None, or lists and dicts of those"
        )
    return json.dumps(dict(values), indent=2)


def _not_json(value: Any, where: str) -> str | None:
    """What in `value` (at `where`) a JSON var file cannot hold, said for a user; else None."""
    if value is None or isinstance(value, str | int):  # bool is an int
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value!r}"
    if isinstance(value, list | tuple):
        found = (_not_json(item, f"{where}[{i}]") for i, item in enumerate(value))
        return next((problem for problem in found if problem), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a key {key!r} that is not a str"
            if problem := _not_json(item, f"{where}[{key!r}]"):
                return problem
        return None
    return f"{where} is a {type(value).__name__}"


def _describe_backend(backend: Mapping[str, Any]) -> str:
    """`the s3 backend (bucket = b, key = k, region = r)`: what names a state, no secrets."""
    config = backend.get("config") or {}
    shown = [f"{k} = {config[k]}" for k in _BACKEND_IDENTITY if isinstance(config.get(k), str)]
    kind = backend.get("type") or "local"
    return f"the {kind} backend" + (f" ({', '.join(shown)})" if shown else "")
