"""Progress of long terraform commands without -s: a status line on a terminal, else heartbeats."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import leftovers

from pytest_iac.progress import Task

SLOW_MODULE = """
resource "terraform_data" "fast" { input = "x" }
resource "terraform_data" "slow" {
  depends_on = [terraform_data.fast]
  provisioner "local-exec" { command = "sleep 3" }
}
"""
TEST_FILE = """
def test_slow(iac_deploy):
    iac_deploy("app")

def test_after():
    pass
"""


@pytest.fixture
def slow_project(pytester: pytest.Pytester) -> Path:
    pytester.mkdir("app")
    pytester.path.joinpath("app", "main.tf").write_text(SLOW_MODULE)
    pytester.makepyfile(test_slow=TEST_FILE)
    return pytester.path


def test_a_heartbeat_in_a_log_names_the_command_and_its_progress(
    pytester: pytest.Pytester, slow_project: Path, engine: str, iac_home: Path
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "--iac-progress-interval=1", f"--iac-binary={engine}"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "test_slow.py ",
            "pytest-iac: terraform apply app: 1/2 resources, *s",
            "test_slow.py .. *",  # the report goes on below the heartbeats
        ]
    )
    assert leftovers(iac_home) == []


def test_quiet_shows_no_progress(pytester: pytest.Pytester, slow_project: Path) -> None:
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--iac-progress-interval=1", "-q")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*terraform apply*")


def test_a_terminal_shows_a_live_status_line(slow_project: Path, iac_home: Path) -> None:
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "--iac-progress-interval=1"],
        cwd=slow_project,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait() == 0
    screen = b"".join(chunks).decode()
    # Below the report line "test_slow.py ", a status line, erased (cursor back up to
    # column 13) before the report goes on.
    status = "test_slow.py \r\nterraform apply app: 1/2 resources, "
    assert status in screen
    assert "\r\x1b[2K\x1b[1A\r\x1b[13C" in screen
    assert "pytest-iac: terraform" not in screen  # no heartbeat on a terminal
    assert "2 passed" in screen
    assert leftovers(iac_home) == []


def test_progress_is_read_from_terraform_s_own_lines() -> None:
    task = Task("modules/app", "apply", started=0.0)
    assert task.describe(5.0) == "terraform apply modules/app: starting, 5s"
    for line in [
        "terraform_data.a: Refreshing state... [id=1]",
        "Plan: 2 to add, 1 to change, 1 to destroy.",
        "terraform_data.b: Creating...",
        "terraform_data.b: Creation complete after 1s [id=2]",
        "terraform_data.a: Modifications complete after 0s [id=1]",
        "terraform_data.b: Still creating... [10s elapsed]",
    ]:
        task.line(line + "\n")
    assert task.describe(12.0) == "terraform apply modules/app: 2/4 resources, 12s"
    long = Task("x" * 200, "plan", started=0.0)
    assert len(long.describe(1.0, width=60)) == 60
