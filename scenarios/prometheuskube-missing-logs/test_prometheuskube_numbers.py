"""PrometheusKube's log arithmetic, from the sink's count of a window's lines."""

from __future__ import annotations

from failure_stories.contract import scenario as scenarios

steps = scenarios.get("prometheuskube-missing-logs").steps()
WINDOW = {"expected": 468, "missing": 255, "duplicates": 0}


def test_lost_lines_and_a_stale_sink_fire_the_freshness_alert():
    numbers = steps.log_numbers(WINDOW, steps.ALERT_LAG_SECONDS + 0.5, {"records_dropped": 255})
    assert numbers["lines_lost"] == 255 and numbers["lines_written"] == 468
    assert numbers["freshness_alert_fired"] == 1.0
    assert numbers["records_dropped_reported"] == 255.0


def test_a_fresh_sink_does_not_alert_and_a_silent_shipper_says_minus_one():
    numbers = steps.log_numbers({**WINDOW, "missing": 0}, steps.ALERT_LAG_SECONDS, {})
    assert numbers["freshness_alert_fired"] == 0.0  # at the threshold, not past it
    assert numbers["records_dropped_reported"] == -1.0
