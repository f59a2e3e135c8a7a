"""Terraform's output read in pieces: whole lines, whatever the pipe's reads cut."""

from __future__ import annotations

from pytest_iac.lines import Lines


def test_whole_lines_whatever_the_reads_cut() -> None:
    seen: list[str] = []
    lines = Lines()
    data = "Plan: 1 to add\r\nsecond ✓ line\nno newline at the end".encode()
    for i in range(len(data)):  # one byte at a time: lines and characters cut everywhere
        lines.feed(data[i : i + 1], seen.append)
    assert seen == ["Plan: 1 to add\r\n", "second ✓ line\n"]
    lines.flush(seen.append)
    assert seen[-1] == "no newline at the end"
    assert lines.text == data.decode()
    lines.flush(seen.append)  # nothing left: nothing more
    assert len(seen) == 3
