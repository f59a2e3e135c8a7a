"""Waiting out eventual consistency: `eventually()` retries an assertion until it holds.

    def test_bucket_policy(aws_sandbox, bucket):
        s3 = aws_sandbox.client("s3")

        def policy_is_applied():
            assert "Statement" in s3.get_bucket_policy(Bucket=bucket)["Policy"]

        pytest_iac.eventually(policy_is_applied, timeout=30)

No pytest import here: the core works without pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 1.0,
) -> T:
    """Call `check` until it returns without an AssertionError; return what it returned.

    `check` is retried every `interval` seconds for at most `timeout` seconds. When time
    runs out, the last AssertionError is raised again, its message saying how many attempts
    were made over how long. Any other exception stops at once: only a failed assertion
    means "not yet".
    """
    if timeout < 0 or interval < 0:
        raise ValueError(f"timeout and interval must not be negative ({timeout=}, {interval=})")
    __tracebackhide__ = True
    started = time.monotonic()
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_exception_type(AssertionError),
        reraise=True,
    )
    try:
        result: T = retrying(check)
    except AssertionError as error:
        attempts = retrying.statistics.get("attempt_number", 1)
        elapsed = time.monotonic() - started
        error.add_note(
            f"eventually: still failing after {attempts} attempts over {elapsed:.1f}s "
            f"(timeout={timeout:g}s, interval={interval:g}s)"
        )
        raise error.with_traceback(_user_frames(error.__traceback__)) from None
    return result


def _user_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback from the caller's check on: tenacity's frames and ours say nothing."""
    while tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith(
        ("tenacity", "concurrent.futures", "pytest_iac.retry")
    ):
        tb = tb.tb_next
    return tb
