"""A pipe's bytes as whole lines of text: how terraform's output is read, from a process
(`pytest_iac.engine`) or an embedded worker (`pytest_iac.embedded`). No pytest import here."""

from __future__ import annotations

from collections.abc import Callable

LineSink = Callable[[str], None]


class Lines:
    """Bytes in (`feed`), whole lines out: kept in `lines` and given to the sink as each one
    completes. A partial line waits in `pending` for the rest, or for `flush()` at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.pending = b""

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def feed(self, data: bytes, sink: LineSink | None = None) -> None:
        data = self.pending + data
        cut = data.rfind(b"\n") + 1
        self.pending = data[cut:]
        self._add(data[:cut], sink)

    def flush(self, sink: LineSink | None = None) -> None:
        """The output ended: what is pending is its last line."""
        data, self.pending = self.pending, b""
        self._add(data, sink)

    def _add(self, data: bytes, sink: LineSink | None) -> None:
        if not data:
            return
        # Whole lines: no character is cut. Only "\n" ends a line (not "\r", as in
        # str.splitlines), the way terraform writes them.
        parts = data.decode("utf-8", errors="replace").split("\n")
        for line in [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else []):
            self.lines.append(line)
            if sink is not None:
                sink(line)
