"""The watchdog: what pytest-iac starts stops when pytest dies, even by SIGKILL.

Terraform runs in a session of its own, so that a Ctrl-C reaches pytest, which then stops it
gracefully. Nothing stops it when pytest itself dies without a word (SIGKILL from a CI runner
or the OOM killer, pytest-timeout's thread method, which calls `os._exit`): it would apply
on, and create what no state and no ledger record knows.

So pytest-iac starts one watchdog process per pytest process (each xdist worker has its own)
and tells it, over a socket only that pytest process holds, about each process group it
starts (terraform, the embedded engine's workers), handing it copies of the read ends of the
group's output pipes. When the socket closes while groups are still registered, pytest is
gone, and the watchdog stops them as pytest would have:

- SIGINT to each group, as a Ctrl-C at a terminal: terraform saves its state, and the
  provisioners in its group stop with it. Not to a group pytest interrupted already, nor to
  an embedded worker's, which stops its command itself when its stdin closes: a second
  interrupt makes terraform exit at once, without saving;
- meanwhile it reads their output: a Go program whose standard output is a pipe nobody reads
  dies of SIGPIPE at its next line, before it saves its state;
- once every pipe has closed, SIGKILL to each group: whatever survived the interrupt (a
  provisioner that ignores it); or at the latest when pytest itself would have killed it:
  the end of its command's time (`--iac-timeout`, given with `watch()` or `until()`) and
  the grace period after, and never sooner than the grace period after pytest's death.
  An interrupted terraform finishes the operations under way before it saves its state (a
  database can take many minutes to create): killed sooner, it would leave behind what no
  state records.

A process is registered right after it starts: a death in those microseconds goes unseen.

Not PR_SET_PDEATHSIG: it is Linux only, fires when the *thread* that started the child ends
(drift checks start terraform from a thread pool, embedded workers outlive the command that
started them), reaches terraform but not its provisioners, and cannot keep its output open.

The process runs this file as a script (`python -I -S watchdog.py FD GRACE`): standard library
only, and no package import, so it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

STOP_GRACE = 60.0  # seconds past its command's time for an interrupted terraform to save
MAX_WAIT = 24 * 3600.0  # the longest one wait on a selector (epoll takes at most ~24 days)


# The client: runs in pytest


class _Client:
    """This process's connection to its watchdog, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channel: socket.socket | None = None
        # Kept, never waited for: a watchdog runs until this process ends.
        self._processes: list[subprocess.Popen[bytes]] = []

    def watch(self, pgid: int, pipes: list[int], message: str) -> None:
        with self._lock:
            for attempt in (1, 2):
                if self._channel is None:
                    self._channel, process = _start()
                    self._processes.append(process)
                try:
                    socket.send_fds(self._channel, [message.encode()], pipes)
                    return
                except OSError:
                    # The watchdog is gone (killed on its own): a fresh one watches from now.
                    self._channel.close()
                    self._channel = None
                    if attempt == 2:
                        raise

    def tell(self, message: str) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self._channel is not None:
                self._channel.sendall(message.encode())

    def forget_parent(self) -> None:
        """In a forked child: the parent's watchdog is the parent's; the child's dies with
        the child, which holds no copy of the parent's socket."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._lock = threading.Lock()


_client = _Client()
os.register_at_fork(after_in_child=_client.forget_parent)


def wait_while_stopping(wait: Callable[[], None], kill: Callable[[], None]) -> None:
    """Wait (`wait` returns once it has stopped, or was ended) for what pytest interrupted.

    Another interrupt meanwhile (Ctrl-C, SIGTERM) kills it at once (`kill`) and is raised;
    anything else raised meanwhile (a pytest-timeout, say) is raised once it has stopped:
    the stop goes on, as a kill would leave behind what no state records.
    """
    pending: BaseException | None = None
    while True:
        try:
            wait()
            break
        except KeyboardInterrupt:
            kill()
            raise
        except BaseException as error:
            pending = pending or error
    if pending is not None:
        raise pending


def watch(
    process: subprocess.Popen[bytes], *, interrupt: bool = True, deadline: float | None = None
) -> None:
    """Have the watchdog stop `process`'s group if pytest dies before `forget(process)`.

    `process` leads a process group of its own (`start_new_session=True`). Without
    `interrupt`, the group gets no SIGINT, only the kill: for a process that stops its
    command itself when pytest dies (an embedded worker, whose stdin closes), where the
    watchdog's SIGINT would be the second interrupt, which stops terraform unsaved.
    `deadline` (`time.monotonic()`, the same clock in every process): the end of the
    command's time, before which (and the grace period after) the group is not killed.
    """
    pipes = [pipe.fileno() for pipe in (process.stdout, process.stderr) if pipe is not None]
    message = f"+{process.pid} {len(pipes)}\n" + ("" if interrupt else f"!{process.pid}\n")
    if deadline is not None:
        message += f"~{process.pid} {deadline!r}\n"
    _client.watch(process.pid, pipes, message)


def until(process: subprocess.Popen[bytes], deadline: float) -> None:
    """`process`'s group runs a command whose time ends at `deadline` (see `watch()`)."""
    _client.tell(f"~{process.pid} {deadline!r}\n")


def interrupted(process: subprocess.Popen[bytes]) -> None:
    """`process`'s group got its SIGINT: a second one would stop terraform at once, unsaved."""
    _client.tell(f"!{process.pid}\n")


def forget(process: subprocess.Popen[bytes]) -> None:
    """`process` has ended: its group is no concern of the watchdog any more."""
    _client.tell(f"-{process.pid}\n")


def _start() -> tuple[socket.socket, subprocess.Popen[bytes]]:
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(theirs.fileno()), str(STOP_GRACE)],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # no Ctrl-C at the terminal reaches it
        )
    return ours, process


# The watchdog: runs in its own process


def main(channel_fd: int, grace: float) -> int:
    channel = socket.socket(fileno=channel_fd)
    groups: dict[int, list[int]] = {}  # process group -> the read ends of its output pipes
    deadlines: dict[int, float] = {}  # process group -> the end of its command's time
    interrupted: set[int] = set()
    received: list[int] = []  # pipes received, not yet claimed by their message
    buffer = b""
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(channel, 4096, 16)
        except OSError:
            data, fds = b"", []
        received.extend(fds)
        if not data:
            break  # pytest is gone
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"+"):  # +PGID NPIPES: its pipes came with it
                pgid, count = map(int, line[1:].split())
                groups[pgid], received = received[:count], received[count:]
            elif line.startswith(b"!"):  # !PGID: interrupted already, or stops itself
                interrupted.add(int(line[1:]))
            elif line.startswith(b"~"):  # ~PGID DEADLINE: its command's time ends then
                pgid_text, deadline = line[1:].split()
                deadlines[int(pgid_text)] = float(deadline)
            else:  # -PGID: ended
                pgid = int(line[1:])
                interrupted.discard(pgid)
                deadlines.pop(pgid, None)
                for fd in groups.pop(pgid, []):
                    os.close(fd)
    _stop(groups, interrupted, deadlines, grace)
    return 0


def _stop(
    groups: dict[int, list[int]], interrupted: set[int], deadlines: dict[int, float], grace: float
) -> None:
    """Interrupt every group and read its output until it ends; kill each when its pipes
    have closed, or at the grace period after its command's deadline (after now, at least)."""
    for pgid in groups.keys() - interrupted:
        _signal(pgid, signal.SIGINT)
    now = time.monotonic()
    kill_at = {pgid: max(now, deadlines.get(pgid, now)) + grace for pgid in groups}
    with selectors.DefaultSelector() as selector:
        for pgid, fds in groups.items():
            for fd in fds:
                selector.register(fd, selectors.EVENT_READ, pgid)
        while waiting := {key.data for key in selector.get_map().values()}:
            pgid = min(waiting, key=kill_at.__getitem__)
            left = kill_at[pgid] - time.monotonic()
            if left <= 0:  # its time is over: killed, its pipes no longer read
                _signal(pgid, signal.SIGKILL)
                for fd in groups[pgid]:
                    with contextlib.suppress(KeyError):  # closed already
                        selector.unregister(fd)
                continue
            for key, _ in selector.select(min(left, MAX_WAIT)):
                if not os.read(key.fd, 65536):
                    selector.unregister(key.fd)
                    if key.data not in {k.data for k in selector.get_map().values()}:
                        _signal(key.data, signal.SIGKILL)  # its output ended: what is left
    for pgid in groups:
        _signal(pgid, signal.SIGKILL)


def _signal(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]), float(sys.argv[2])))
