"""The watchdog on its own (no terraform): what a dead pytest process registered is stopped.

A stand-in for pytest starts process groups the way the engine starts terraform, registers
them with the watchdog (some as interrupted already, some that stop themselves like an
embedded worker, some with their command's deadline), and dies of SIGKILL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# A stand-in for pytest: starts process groups the way the engine starts terraform (each a
# shell that prints a line once its trap is set), registers them with the watchdog, prints
# their pids and dies of SIGKILL. Its argument: the grace period, and the groups.
STAND_IN = """
import json, os, signal, subprocess, sys, time
from pytest_iac import watchdog

grace, groups = json.loads(sys.argv[1])
watchdog.STOP_GRACE = grace
# A shell cannot trap a signal ignored when it started, as SIGINT is in a background job.
signal.signal(signal.SIGINT, signal.SIG_DFL)
pids = []
for group in groups:
    process = subprocess.Popen(
        ["sh", "-c", group["script"], group["name"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    ahead = group.get("deadline")  # seconds from now until its command's time is over
    deadline = None if ahead is None else time.monotonic() + ahead
    watchdog.watch(process, interrupt=group.get("interrupt", True), deadline=deadline)
    process.stdout.readline()
    if group.get("interrupted"):
        watchdog.interrupted(process)  # as the engine says after its own SIGINT
    pids.append(process.pid)
print(" ".join(map(str, pids)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
LOOP = "while :; do sleep 0.05; done"  # after `echo ready`, once the trap is set


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: here, nobody may reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def die(grace: float, groups: list[dict[str, Any]]) -> list[int]:
    """Run the stand-in with these groups; the pids of their shells."""
    stand_in = subprocess.run(
        [sys.executable, "-c", STAND_IN, json.dumps([grace, groups])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stand_in.returncode == -9, stand_in.stderr
    return [int(pid) for pid in stand_in.stdout.split()]


def wait_until_gone(pids: list[int], deadline: float) -> None:
    """Until none of `pids` runs (by `deadline` at most: the watchdog must end them all)."""
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_dead_process_s_groups_are_interrupted_once_then_killed(tmp_path: Path) -> None:
    log = tmp_path / "interrupts"
    script = f'trap "echo $0 >> {log}; exit" INT; echo ready; {LOOP}'  # notes its SIGINT and exits
    groups = [
        {"name": "first", "script": script},
        {"name": "second", "script": script, "interrupted": True},
        # The third stops itself when pytest dies, as an embedded worker does: no SIGINT.
        {"name": "third", "script": script, "interrupt": False},
    ]
    wait_until_gone(die(2.0, groups), time.monotonic() + 30)
    # The first got its interrupt and ended; the second, interrupted before, got no second
    # one, nor did the third: they ran until the grace period was over, then were killed.
    assert log.read_text().split() == ["first"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_group_is_not_killed_before_its_command_s_time_is_over(tmp_path: Path) -> None:
    """pytest alive would give an interrupted command until its deadline (and the grace
    period) to stop: so does the watchdog once pytest is dead. Without a deadline, the
    grace period after the death is all it gets. Each group's shell takes 3 s to end once
    interrupted, as terraform finishing the operations under way before it saves its state."""
    log = tmp_path / "saved"
    script = f'trap "sleep 3; echo $0 >> {log}; exit" INT; echo ready; {LOOP}'
    groups = [
        {"name": "timed", "script": script, "deadline": 20},
        {"name": "untimed", "script": script},
    ]
    wait_until_gone(die(1.0, groups), time.monotonic() + 30)
    assert log.read_text().split() == ["timed"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_group_whose_output_ended_is_killed_without_waiting_for_the_others() -> None:
    """Its own bound, not another group's: killed once its output has ended (at once here),
    while the other still takes its time to stop. One group closes its output at once and
    ignores SIGINT (a provisioner's leftover, say); the other takes 3 s to stop and has a
    deadline 20 s ahead."""
    groups = [
        {"name": "deaf", "script": f'trap "" INT; echo ready; exec >&- 2>&-; {LOOP}'},
        {"name": "slow", "script": f'trap "sleep 3; exit" INT; echo ready; {LOOP}', "deadline": 20},
    ]
    deaf, slow = die(10.0, groups)
    deadline = time.monotonic() + 30
    wait_until_gone([deaf], deadline)
    assert alive(slow)  # still finishing (3 s): the deaf one did not wait for it
    wait_until_gone([slow], deadline)
