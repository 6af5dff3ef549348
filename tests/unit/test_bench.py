"""make bench's per-story numbers: the ratio of a story's own wall time to its physics."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.contract.scenario import discover
from failure_stories.reporting.model import PhaseResult, ScenarioReport
from failure_stories.tools import bench

ROOT = Path(__file__).resolve().parents[2]


def test_ratio_leaves_out_lock_waits_and_counts_the_namespace_delay() -> None:
    story = discover(ROOT / "scenarios")["jwplayer-exposed-dashboard"]
    report = ScenarioReport(
        scenario=story.id,
        provider="local",
        started_at="2026-11-29T05:00:00+00:00",
        verdict="passed",
        seconds=40.0,
        phases=[PhaseResult("setup", seconds=2.5), PhaseResult("teardown", seconds=5.6)],
        info={"lock_wait_seconds": 10.0},
    )
    numbers = bench._story_numbers(story, report)
    physics = story.meta.physics_seconds + bench.NAMESPACE_DELETION_DELAY
    assert numbers["wall_to_physics"] == pytest.approx(round(30.0 / physics, 2))
    assert numbers["phase_seconds"] == {"setup": 2.5, "teardown": 5.6}
    assert numbers["lock_wait_seconds"] == 10.0


def test_a_story_that_did_not_report_has_no_numbers() -> None:
    story = discover(ROOT / "scenarios")["flant-redis-data-loss"]
    assert bench._story_numbers(story, None) == {"seconds": None}
