"""Moonlight's outage arithmetic, from ready endpoints sampled during a node failure."""

from __future__ import annotations

from failure_stories.contract import scenario as scenarios

steps = scenarios.get("moonlight-anti-affinity").steps()


def test_each_empty_sample_is_one_interval_of_outage():
    outage = steps.Outage(every=0.25)
    for ready in (3, 3, 0, 0, 0, 1, 0, 3):
        outage.observe(ready)
    assert outage.fewest == 0
    assert outage.seconds == 1.0  # four empty samples of 0.25 s


def test_spread_replicas_never_reach_zero():
    outage = steps.Outage(every=0.25)
    for ready in (3, 2, 2, 2, 3):
        outage.observe(ready)
    assert (outage.fewest, outage.seconds) == (2, 0.0)
