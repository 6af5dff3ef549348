"""Buffer's window arithmetic, from cgroup counters read around a load window."""

from __future__ import annotations

import pytest

from failure_stories.contract import scenario as scenarios

steps = scenarios.get("buffer-cpu-throttling").steps()
LOAD = {"ok": 60, "sent": 60, "p50_ms": 34.0, "p95_ms": 41.0, "p99_ms": 55.0}


def test_a_limited_window_is_mostly_throttled_far_below_the_limit():
    before = {"nr_periods": 1000, "nr_throttled": 10, "usage_ns": 5_000_000_000}
    # 40 s at 100 ms periods, 300 of them active and 240 throttled; 2.8 s of CPU used.
    after = {"nr_periods": 1300, "nr_throttled": 250, "usage_ns": 7_800_000_000}
    numbers = steps.window_numbers(before, after, 40.0, LOAD)
    assert numbers["throttled_period_ratio"] == 0.8
    # 2.8 s / 40 s = 70 millicores, against the fault's 200m limit.
    assert numbers["cpu_usage_to_limit_ratio"] == pytest.approx(0.35)
    assert numbers["request_success_ratio"] == 1.0
    assert numbers["p95_latency_ms"] == 41.0


def test_a_window_without_periods_is_not_throttled():
    same = {"nr_periods": 7, "nr_throttled": 3, "usage_ns": 0}
    numbers = steps.window_numbers(same, same, 40.0, {**LOAD, "ok": 59})
    assert numbers["throttled_period_ratio"] == 0.0
    assert numbers["request_success_ratio"] == 0.9833


def test_improvement_is_the_p95_ratio_and_never_divides_by_zero():
    assert steps.improvement_factor(204.0, 34.0) == 6.0
    assert steps.improvement_factor(74.0, 43.8) == 1.69
    assert steps.improvement_factor(10.0, 0.0) == 10000.0


@pytest.mark.parametrize(
    ("release", "fixed"),
    [("5.10.0-28-amd64", True), ("5.4.0", True), ("4.19.0-25", False), ("weird", False)],
)
def test_the_kernel_fix_is_judged_by_version(release, fixed):
    assert steps.kernel_has_fix(release) is fixed
