"""Flant's key arithmetic, from the keys each Redis instance holds after the edit."""

from __future__ import annotations

from failure_stories.contract import scenario as scenarios

steps = scenarios.get("flant-redis-data-loss").steps()


def test_an_empty_promoted_master_lost_everything():
    assert steps.lost_ratio(0, 300000) == 1.0
    assert steps.lost_ratio(3, 300000) == 1.0  # rounded to four places
    assert steps.lost_ratio(150000, 300000) == 0.5


def test_more_keys_than_written_is_no_loss():
    assert steps.lost_ratio(300010, 300000) == 0.0


def test_instances_holding_every_key():
    per_pod = {"rfr-0": 300000, "rfr-1": 300004, "rfr-2": 12, "rfr-3": 0}
    assert steps.holding_all(per_pod, 300000) == 2
