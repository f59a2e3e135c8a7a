"""pytest glue for the progress display: the option, and the terminal shared with pytest. Thin.

The display writes to a duplicate of pytest's own stdout taken at configure time (before
tests capture file descriptor 1), under a lock that pytest's report hooks take too: status
lines are erased before pytest writes a result, and a heartbeat is followed by the report
line it interrupted, written again.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Generator

import pytest

from pytest_iac.fixtures import RUN_KEY
from pytest_iac.progress import SHOW_AFTER, Display, Progress

DEFAULT_INTERVAL = 15.0
_DISPLAY_KEY = pytest.StashKey[Display]()
_FD_KEY = pytest.StashKey[int]()
_HOOKS = "iac-progress-report-hooks"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("iac")
    group.addoption(
        "--iac-progress-interval",
        type=float,
        metavar="SECONDS",
        help="while a terraform command runs long, show its progress: a live status line on "
        "a terminal, else a line every SECONDS (default 15; 0: never; -q and -s show none; "
        "ini iac_progress_interval)",
    )
    parser.addini("iac_progress_interval", "seconds between progress lines (0: none)")


@pytest.hookimpl(trylast=True)  # after the core plugin has made the run
def pytest_configure(config: pytest.Config) -> None:
    interval = _interval(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if (
        not interval
        or reporter is None
        or config.get_verbosity() < 0  # -q
        or config.getoption("capture") == "no"  # -s: terraform's own output streams
        or hasattr(config, "workerinput")  # an xdist worker's output is not the terminal
    ):
        return
    try:
        fd = os.dup(sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return  # no file descriptor behind stdout (pytest run in-process): nothing to show
    terminal = config.get_terminal_writer()
    progress = Progress(config.rootpath)
    display = Display(
        progress,
        lambda text: _write(fd, terminal, text),
        tty=os.isatty(fd) and os.environ.get("TERM") != "dumb",
        interval=interval,
        show_after=min(SHOW_AFTER, interval),
        width=lambda: terminal.fullwidth,
        column=lambda: terminal.width_of_current_line,
        # pytest's terminal writer keeps the current line's text only privately.
        current_line=lambda: str(getattr(terminal, "_current_line", "")),
        lock=threading.Lock(),
    )
    hooks = _ReportHooks(display)
    config.stash[RUN_KEY].progress = progress
    config.stash[_DISPLAY_KEY] = display
    config.stash[_FD_KEY] = fd
    config.pluginmanager.register(hooks, _HOOKS)
    progress.on_task = display.start


def _interval(config: pytest.Config) -> float:
    raw = config.getoption("iac_progress_interval")
    if raw is None:
        raw = config.getini("iac_progress_interval") or DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        raise pytest.UsageError(f"iac_progress_interval must be a number, not {raw!r}") from None
    if value < 0:
        raise pytest.UsageError(f"iac_progress_interval must not be negative, not {raw!r}")
    return value


def _write(fd: int, terminal: object, text: str) -> None:
    flush = getattr(terminal, "flush", None)
    if flush is not None:
        flush()  # what pytest wrote first comes first
    with contextlib.suppress(OSError):
        os.write(fd, text.encode("utf-8", errors="replace"))


class _ReportHooks:
    """While pytest writes a report line: no status lines under it, no heartbeat in it."""

    def __init__(self, display: Display) -> None:
        self.display = display

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logstart(self) -> Generator[None]:
        with self.display.lock:
            self.display.erase()
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self) -> Generator[None]:
        with self.display.lock:
            self.display.erase()
            return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _stop(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop(config)


def _stop(config: pytest.Config) -> None:
    display = config.stash.get(_DISPLAY_KEY, None)
    if display is not None:
        display.stop()
        del config.stash[_DISPLAY_KEY]
        os.close(config.stash[_FD_KEY])
        config.pluginmanager.unregister(name=_HOOKS)
