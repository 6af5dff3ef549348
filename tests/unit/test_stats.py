"""Confidence intervals and the stopping rule that ends a measuring window early."""

from __future__ import annotations

import random

import pytest

from failure_stories.core import stats
from failure_stories.core.stats import Interval


def test_percentile_is_nearest_rank_like_the_load_generator():
    values = [float(x) for x in range(1, 61)]  # 60 requests, 1..60 ms
    assert stats.percentile(values, 95) == 57.0  # index round(0.95 * 59) = 56
    assert stats.percentile(values, 50) == 31.0
    assert stats.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        stats.percentile([], 95)


def test_an_interval_settles_only_when_wholly_on_one_side():
    assert Interval(5.0, 3.2, 7.0).side(">=", 3) is True
    assert Interval(2.0, 1.5, 2.9).side(">=", 3) is False
    assert Interval(3.1, 2.8, 4.0).side(">=", 3) is None
    assert Interval(0.01, 0.0, 0.015).side("<=", 0.02) is True
    assert Interval(0.3, 0.25, 0.4).side("<=", 0.02) is False
    with pytest.raises(ValueError):
        Interval(1, 1, 1).side("==", 1)


def _latencies(seed: int, n: int, base: float, slow_share: float, slow: float) -> list[float]:
    """Synthetic service: ``base`` ms +-10%, a share of requests ``slow`` ms later."""
    rng = random.Random(seed)
    return [
        base * rng.uniform(0.9, 1.1)
        + (slow * rng.uniform(0.8, 1.2) if rng.random() < slow_share else 0)
        for _ in range(n)
    ]


def test_a_six_fold_p95_ratio_is_settled_above_three():
    # Buffer's shape: throttled requests wait ~170 ms more; without the limit ~34 ms.
    with_limit = _latencies(1, 45, 34, 0.45, 170)
    without = _latencies(2, 30, 34, 0.0, 0)
    ci = stats.bootstrap_quantile_ratio(with_limit, without, 95, seed=7)
    assert ci.low <= ci.estimate <= ci.high
    assert ci.low > 3  # settled: clears the threshold
    assert ci.side(">=", 3) is True


def test_equal_distributions_settle_below_three():
    a, b = _latencies(3, 45, 34, 0.1, 20), _latencies(4, 30, 34, 0.1, 20)
    ci = stats.bootstrap_quantile_ratio(a, b, 95, seed=7)
    assert 0.7 < ci.estimate < 1.4
    assert ci.side(">=", 3) is False


def test_the_bootstrap_is_replayable_from_its_seed_and_narrows_with_samples():
    a, b = _latencies(5, 45, 34, 0.3, 80), _latencies(6, 30, 34, 0.05, 40)
    assert stats.bootstrap_quantile_ratio(a, b, 95, seed=1) == stats.bootstrap_quantile_ratio(
        a, b, 95, seed=1
    )
    small = stats.bootstrap_quantile_ratio(a[:15], b[:15], 50, seed=1, resamples=500)
    large = stats.bootstrap_quantile_ratio(
        _latencies(5, 300, 34, 0.3, 80), _latencies(6, 300, 34, 0.05, 40), 50, seed=1, resamples=500
    )
    assert large.high - large.low < small.high - small.low


def test_a_zero_denominator_uses_the_floor_and_empty_samples_are_refused():
    assert stats.bootstrap_quantile_ratio([2.0], [0.0], 95, seed=1, resamples=10).estimate == 2000
    with pytest.raises(ValueError):
        stats.bootstrap_quantile_ratio([], [1.0], 95, seed=1)


def test_wilson_interval_for_throttled_periods():
    ci = stats.wilson(90, 200)  # 45% of 200 active periods throttled
    assert ci.estimate == 0.45
    assert 0.35 < ci.low < 0.45 < ci.high < 0.55
    assert ci.side(">=", 0.25) is True
    assert stats.wilson(0, 0) == Interval(0.0, 0.0, 1.0)
    none = stats.wilson(0, 300)
    assert none.low == 0.0 and none.high < 0.03


def test_stopping_waits_for_the_minimum_then_stops_when_settled():
    assert stats.stopping(True, 15, 45, 10.5, 40) is None
    assert stats.stopping(True, 45, 45, 31.0, 40) == "settled"
    assert stats.stopping(False, 45, 45, 31.0, 40) is None
    assert stats.stopping(False, 60, 45, 41.2, 40) == "maximum reached"
    # Settled and at the maximum at once: it is settled, which is the stronger news.
    assert stats.stopping(True, 60, 45, 41.2, 40) == "settled"
