"""What each running terraform command is doing, shown while it takes long. No pytest here.

`Progress` follows every command the engine runs through its output lines: Terraform's own
human-readable text, the same on both engines, which is also what a failure quotes. The
counts come from lines that have read the same since Terraform 0.12 (`Plan: 2 to add, 1 to
change, 0 to destroy.`, `...: Creation complete after 3s`). Reading `-json` instead would
mean rendering Terraform's diagnostics back into text for every failure message.

`Display` shows the running commands from a thread of its own: on a terminal, a status line
per command below the test report line, redrawn every half second and erased when done;
elsewhere (CI logs), a heartbeat line per command at a steady interval.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PLANNED = re.compile(r"^Plan: (\d+) to add, (\d+) to change, (\d+) to destroy\.")
_DONE = re.compile(r": (?:Creation|Modifications|Destruction) complete after ")
_REFRESHED = re.compile(r": (?:Refreshing state|Reading)\.\.\.")
SHOW_AFTER = 3.0  # seconds a command runs before it is shown: quick ones never are
TICK = 0.5  # seconds between redraws of the status lines on a terminal


@dataclass
class Task:
    """One running terraform command."""

    what: str  # the deployment or drift check, as the user knows it (a path)
    command: str  # init, plan, apply, destroy...
    started: float = field(default_factory=time.monotonic)
    planned: int | None = None
    done: int = 0
    refreshed: int = 0

    def line(self, text: str) -> None:
        """Take one line of the command's output into account."""
        planned = _PLANNED.match(text)
        if planned:
            self.planned = sum(int(n) for n in planned.groups())
        elif _DONE.search(text):
            self.done += 1
        elif _REFRESHED.search(text):
            self.refreshed += 1

    def describe(self, now: float, width: int = 120) -> str:
        """`terraform apply examples/app: 2/5 resources, 12s`, at most `width` characters."""
        if self.planned is not None:
            counts = f"{self.done}/{self.planned} resources"
        elif self.refreshed:
            counts = f"{self.refreshed} read"
        else:
            counts = "starting"
        tail = f": {counts}, {now - self.started:.0f}s"
        head = f"terraform {self.command} "
        room = max(10, width - len(head) - len(tail))
        what = self.what if len(self.what) <= room else "..." + self.what[-(room - 3) :]
        return f"{head}{what}{tail}"


class Progress:
    """The terraform commands running now, in this process (all threads)."""

    def __init__(self, rootdir: Path | None = None) -> None:
        self.rootdir = rootdir
        self.on_task: Callable[[], None] | None = None  # called as each command starts
        self._tasks: list[Task] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def task(self, args: Sequence[str], module: str | None, label: str) -> Iterator[Task]:
        task = Task(self._name(module, label), args[0] if args else "?")
        if self.on_task is not None:
            self.on_task()
        with self._lock:
            self._tasks.append(task)
        try:
            yield task
        finally:
            with self._lock:
                self._tasks.remove(task)

    def running(self, longer_than: float = 0.0) -> list[Task]:
        now = time.monotonic()
        with self._lock:
            return [t for t in self._tasks if now - t.started >= longer_than]

    def _name(self, module: str | None, label: str) -> str:
        if not module:
            return label
        path = Path(module)
        if self.rootdir is not None and path.is_relative_to(self.rootdir):
            path = path.relative_to(self.rootdir)
        return str(path) if str(path) != "." else path.resolve().name


class Display:
    """Shows `progress` while commands run long: status lines on a terminal, else heartbeats.

    `write` takes text for the terminal (or log); `column` says where the cursor stands on
    the current line (status lines are drawn below it and the cursor put back there);
    `lock` is held by whoever else writes to the same terminal, and calls `erase()` before
    it does. Heartbeats go below the line being written (`current_line`); `erase()` copies
    that line below them, so the report goes on where it was.
    """

    def __init__(
        self,
        progress: Progress,
        write: Callable[[str], None],
        *,
        tty: bool,
        interval: float,
        show_after: float = SHOW_AFTER,
        width: Callable[[], int],
        column: Callable[[], int],
        current_line: Callable[[], str],
        lock: threading.Lock,
    ) -> None:
        self.progress = progress
        self.write = write
        self.tty = tty
        self.interval = interval
        self.show_after = show_after
        self.width = width
        self.column = column
        self.current_line = current_line
        self.lock = lock
        self._drawn = 0  # status lines on screen below the cursor's line
        self._beaten = False  # heartbeats written below the report's current line
        self._column = 0
        self._stop = threading.Event()
        self._beats: dict[int, float] = {}  # task id -> when its last heartbeat was
        self._thread = threading.Thread(target=self._loop, name="pytest-iac-progress", daemon=True)

    def start(self) -> None:
        """Start showing (from the first command on: a run without one starts no thread)."""
        with self.lock:
            if not self._thread.is_alive() and not self._stop.is_set():
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self.lock:
            self.erase()

    def _loop(self) -> None:
        while not self._stop.wait(TICK if self.tty else min(TICK * 2, self.interval)):
            with self.lock:
                if self.tty:
                    self._draw()
                else:
                    self._heartbeat()

    # On a terminal

    def _draw(self) -> None:
        tasks = self.progress.running(longer_than=self.show_after)
        if not tasks:
            self.erase()
            return
        now, width = time.monotonic(), self.width() - 1
        lines = [t.describe(now, width) for t in tasks]
        if self._drawn:
            text = self._erasing() + self._back()
        else:
            text, self._column = "", self.column()
        self.write(text + "\n" + "\n".join(lines))
        self._drawn = len(lines)

    def erase(self) -> None:
        """Put the cursor back where the report left it (status lines gone, or below beats)."""
        if self.tty and self._drawn:
            self.write(self._erasing() + self._back())
            self._drawn = 0
        if self._beaten:
            self.write("\n" + self.current_line())
            self._beaten = False

    def _erasing(self) -> str:
        """From the end of the last status line: clear them all, end on the first one."""
        return "\r\x1b[2K" + "\x1b[1A\r\x1b[2K" * (self._drawn - 1)

    def _back(self) -> str:
        """From the first status line up to the report line, at the report's column."""
        return "\x1b[1A\r" + (f"\x1b[{self._column}C" if self._column else "")

    # In a log

    def _heartbeat(self) -> None:
        now = time.monotonic()
        due = [
            t
            for t in self.progress.running(longer_than=self.interval)
            if now - self._beats.get(id(t), t.started) >= self.interval
        ]
        if not due:
            return
        for task in due:
            self._beats[id(task)] = now
        self.write("".join(f"\npytest-iac: {t.describe(now)}" for t in due))
        self._beaten = True
