"""The watchdog on its own (no terraform): what a dead pytest process registered is stopped.

A stand-in for pytest starts three process groups the way the engine starts terraform,
registers them (the third as one that stops itself, like an embedded worker), says it
interrupted the second one already, and dies of SIGKILL.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

# Each group's shell notes a SIGINT and exits; it prints a line once its trap is set.
STAND_IN = """
import os, signal, subprocess, sys
from pytest_iac import watchdog

watchdog.STOP_GRACE = 2.0
# A shell cannot trap a signal ignored when it started, as SIGINT is in a background job.
signal.signal(signal.SIGINT, signal.SIG_DFL)
script = 'trap "echo $0 >> {log}; exit" INT; echo ready; while :; do sleep 0.05; done'
groups = {{}}
for name in ("first", "second", "third"):
    groups[name] = subprocess.Popen(
        ["sh", "-c", script, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # The third stops itself when pytest dies, as an embedded worker does: no SIGINT.
    watchdog.watch(groups[name], interrupt=name != "third")
    groups[name].stdout.readline()
watchdog.interrupted(groups["second"])  # as the engine says after its own SIGINT
print(" ".join(str(p.pid) for p in groups.values()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not: here, nobody may reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def die_and_wait_for_the_groups(stand_in_code: str) -> None:
    """Run a stand-in for pytest that starts groups and dies of SIGKILL; wait until none of
    its groups' processes is left (30 s at most: the watchdog must have ended them all)."""
    stand_in = subprocess.run(
        [sys.executable, "-c", stand_in_code], capture_output=True, text=True, timeout=60
    )
    assert stand_in.returncode == -9, stand_in.stderr
    pids = [int(pid) for pid in stand_in.stdout.split()]
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_dead_process_s_groups_are_interrupted_once_then_killed(tmp_path: Path) -> None:
    log = tmp_path / "interrupts"
    die_and_wait_for_the_groups(STAND_IN.format(log=log))
    # The first got its interrupt and ended; the second, interrupted before, got no second
    # one, nor did the third: they ran until the grace period was over, then were killed.
    assert log.read_text().split() == ["first"]


# Each group's shell takes 3 s to end once interrupted, as terraform finishing the operations
# under way before it saves its state. One has a command deadline 20 s ahead, one has none.
SLOW_TO_STOP = """
import os, signal, subprocess, sys, time
from pytest_iac import watchdog

watchdog.STOP_GRACE = 1.0
signal.signal(signal.SIGINT, signal.SIG_DFL)
script = 'trap "sleep 3; echo $0 >> {log}; exit" INT; echo ready; while :; do sleep 0.05; done'
pids = []
for name, deadline in (("timed", time.monotonic() + 20), ("untimed", None)):
    group = subprocess.Popen(
        ["sh", "-c", script, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    watchdog.watch(group, deadline=deadline)
    group.stdout.readline()
    pids.append(group.pid)
print(" ".join(map(str, pids)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_group_is_not_killed_before_its_command_s_time_is_over(tmp_path: Path) -> None:
    """pytest alive would give an interrupted command until its deadline (and the grace
    period) to stop: so does the watchdog once pytest is dead. Without a deadline, the
    grace period after the death is all it gets."""
    log = tmp_path / "saved"
    die_and_wait_for_the_groups(SLOW_TO_STOP.format(log=log))
    assert log.read_text().split() == ["timed"]


# One group closes its output at once and ignores SIGINT (a provisioner's leftover, say);
# the other takes 3 s to stop and has a deadline 20 s ahead.
TWO_GROUPS = """
import os, signal, subprocess, sys, time
from pytest_iac import watchdog

watchdog.STOP_GRACE = 10.0
signal.signal(signal.SIGINT, signal.SIG_DFL)
scripts = {{
    "deaf": 'trap "" INT; echo ready; exec >&- 2>&-; while :; do sleep 0.05; done',
    "slow": 'trap "sleep 3; exit" INT; echo ready; while :; do sleep 0.05; done',
}}
pids = []
for name, script in scripts.items():
    group = subprocess.Popen(
        ["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    watchdog.watch(group, deadline=time.monotonic() + 20 if name == "slow" else None)
    group.stdout.readline()
    pids.append(group.pid)
print(" ".join(map(str, pids)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_group_whose_output_ended_is_killed_without_waiting_for_the_others() -> None:
    """Its own bound, not another group's: killed once its output has ended (at once here),
    while the other still takes its time to stop."""
    stand_in = subprocess.run(
        [sys.executable, "-c", TWO_GROUPS.format()], capture_output=True, text=True, timeout=60
    )
    assert stand_in.returncode == -9, stand_in.stderr
    deaf, slow = (int(pid) for pid in stand_in.stdout.split())
    deadline = time.monotonic() + 30
    while alive(deaf) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(deaf)
    assert alive(slow)  # still finishing (3 s): the deaf one did not wait for it
    while alive(slow) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(slow)
