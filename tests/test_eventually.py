"""`pytest_iac.eventually`: an assertion retried until it holds or time runs out."""

from __future__ import annotations

import time

import pytest

import pytest_iac


def test_passes_once_the_check_holds_and_returns_its_value() -> None:
    ready_at = time.monotonic() + 0.3
    calls: list[float] = []

    def check() -> str:
        calls.append(time.monotonic())
        assert time.monotonic() >= ready_at, "not ready yet"
        return "ready"

    assert pytest_iac.eventually(check, timeout=5, interval=0.05) == "ready"
    assert len(calls) > 1  # it failed first, then passed
    assert calls[-1] - calls[0] < 2


def test_other_errors_stop_at_once() -> None:
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("no such bucket")

    with pytest.raises(KeyError):
        pytest_iac.eventually(check, timeout=5, interval=0.01)
    assert calls == 1


def test_rejects_negative_times() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        pytest_iac.eventually(lambda: None, timeout=-1)


def test_reports_a_check_that_never_holds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_never="""
        import pytest_iac

        def test_bucket_has_policy():
            policies = []

            def policy_is_attached():
                assert len(policies) == 1, "the policy is not attached"

            pytest_iac.eventually(policy_is_attached, timeout=0.5, interval=0.1)
        """
    )
    result = pytester.runpytest()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '>*assert len(policies) == 1, "the policy is not attached"',
            "E*AssertionError: the policy is not attached",
            "E*eventually: still failing after * attempts over *s (timeout=0.5s, interval=0.1s)",
        ]
    )
    # The user's check is shown, not tenacity's machinery.
    result.stdout.no_fnmatch_line("*tenacity*")
    result.stdout.no_fnmatch_line("*concurrent/futures*")
