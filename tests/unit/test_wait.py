from __future__ import annotations

import time

import pytest

from failure_stories.core.errors import TransientError, WaitTimeout
from failure_stories.core.wait import sample, wait_for


def test_returns_the_first_truthy_value():
    calls = iter([0, None, "", 42])
    assert wait_for(lambda: next(calls), what="the answer", timeout=5, interval=0.01) == 42


def test_timeout_names_what_was_awaited_and_the_last_value():
    with pytest.raises(
        WaitTimeout, match=r"timed out after 0.2s waiting for pods Ready .*last seen: 0"
    ):
        wait_for(lambda: 0, what="pods Ready", timeout=0.2, interval=0.05)


def test_transient_errors_count_as_not_yet():
    attempts = []

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("API hiccup")
        return True

    assert wait_for(flaky, what="a flaky API", timeout=5, interval=0.01) is True
    assert len(attempts) == 3


def test_other_errors_propagate_at_once():
    with pytest.raises(KeyError):
        wait_for(lambda: {}["x"], what="a bug", timeout=5, interval=0.01)


def test_sample_calls_the_probe_for_the_duration():
    t0 = time.monotonic()
    n = sample(lambda: None, every=0.05, duration=0.3)
    assert time.monotonic() - t0 >= 0.3
    assert 4 <= n <= 9
