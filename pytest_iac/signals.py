"""Signals: SIGTERM takes the same graceful path as Ctrl-C; destroys are shielded once.

- pytest handles SIGINT (KeyboardInterrupt: finalizers run, so deployments are destroyed) but
  not SIGTERM, which a CI runner sends when it cancels a job, nor SIGHUP (a closed terminal
  or SSH session): `install()` turns both into `Terminated`, a KeyboardInterrupt, so they
  take the same path.
- A destroy that has started should finish: inside `shield()`, the first interrupt of the run
  is postponed until the destroy is done; a second one (or one arriving after the run was
  already interrupted) stops the destroy gracefully, and the deployment stays in the ledger.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) received: stop the run the way Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received")


def interrupt_for(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def tell(config: pytest.Config, text: str) -> None:
    """Show `text` on the terminal now, whatever output capturing is doing."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(text, file=sys.stderr, flush=True)  # e.g. an xdist worker
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(text, yellow=True, bold=True)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


_GRACEFUL = (signal.SIGTERM, signal.SIGHUP)  # stop the run the way Ctrl-C does


def install() -> Callable[[], None]:
    """Turn SIGTERM and SIGHUP into `Terminated` (each unless someone else handles it, or
    it is ignored, as `nohup` does for SIGHUP); returns an undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    installed = [s for s in _GRACEFUL if signal.getsignal(s) is signal.SIG_DFL]
    for signum in installed:
        signal.signal(signum, _raise_terminated)

    def undo() -> None:
        for signum in installed:
            if signal.getsignal(signum) is _raise_terminated:
                signal.signal(signum, signal.SIG_DFL)

    return undo


@dataclass
class Shield:
    """What happened inside `shield()`: an interrupt postponed until the block finished."""

    postponed: int | None = None  # the signal number


@contextlib.contextmanager
def shield(already_interrupted: bool, tell: Callable[[str], None], what: str) -> Iterator[Shield]:
    """Let the block finish through one interrupt unless the run was interrupted before.

    The postponed interrupt is not raised here: the caller raises it when it is done.
    """
    state = Shield()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if already_interrupted or state.postponed is not None:
            raise interrupt_for(signum)
        state.postponed = signum
        tell(
            f"pytest-iac: {signal.Signals(signum).name} while {what}: letting the destroy "
            "finish so nothing is left deployed. Interrupt again to abort it (the deployment "
            "then stays in the ledger for `pytest --iac-cleanup`)."
        )

    previous: dict[int, _Handler] = {}
    for signum in (int(signal.SIGINT), *(int(s) for s in _GRACEFUL)):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        yield state
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
