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


def _report(seconds: float, teardown: float, ledger: dict[str, float] | None) -> ScenarioReport:
    info: dict[str, object] = {"lock_wait_seconds": 12.0}
    if ledger is not None:
        info["framework_seconds"] = ledger
    return ScenarioReport(
        scenario="buffer-cpu-throttling",
        provider="local",
        started_at="2026-12-02T04:00:00+00:00",
        verdict="passed",
        seconds=seconds,
        phases=[PhaseResult("setup", seconds=9.0), PhaseResult("teardown", seconds=teardown)],
        info=info,
    )


def test_overhead_slices_add_up_to_wall_less_lock_wait_and_physics() -> None:
    ledger = {
        "cluster_calls": 3.4,
        "waits": 21.0,
        "exec": 64.0,
        "images": 2.6,
        "lock_wait": 12.0,
        "noise_guard": 4.0,
    }
    # 120 s wall, 12 s of it waiting for the node lock, 7.5 s teardown, 70 s physics.
    out = bench.overhead(_report(120.0, 7.5, ledger), 70.0)
    assert out is not None
    assert out["total"] == 120.0 - 12.0 - 70.0 - bench.NAMESPACE_DELETION_DELAY == 33.0
    assert out["cluster_calls"] == 3.4
    assert out["waits_beyond_physics"] == 21.0 + 64.0 - 70.0 == 15.0
    assert out["image_work"] == 2.6
    assert out["teardown_beyond_deletion_delay"] == 2.5
    assert out["noise_guard"] == 4.0
    assert out["other"] == pytest.approx(33.0 - 3.4 - 15.0 - 2.6 - 2.5 - 4.0)
    assert sum(v for k, v in out.items() if k != "total") == pytest.approx(out["total"])


def test_a_report_without_the_ledger_has_no_breakdown_and_story_numbers_carry_it() -> None:
    assert bench.overhead(_report(120.0, 7.5, None), 70.0) is None
    story = discover(ROOT / "scenarios")["buffer-cpu-throttling"]
    ledger = {"cluster_calls": 1.0, "waits": 10.0, "exec": 60.0}
    numbers = bench._story_numbers(story, _report(100.0, 6.0, ledger))
    assert numbers["overhead_seconds"]["cluster_calls"] == 1.0
    assert numbers["overhead_seconds"]["total"] == round(
        100.0 - 12.0 - story.meta.physics_seconds - bench.NAMESPACE_DELETION_DELAY, 1
    )


def test_story_numbers_say_how_each_window_stopped() -> None:
    story = discover(ROOT / "scenarios")["buffer-cpu-throttling"]
    report = _report(100.0, 6.0, None)
    report.info["windows"] = {
        "with_limit": {"stop": "settled", "chunks": 3},
        "without_limit": {"stop": "maximum reached", "chunks": 4},
    }
    numbers = bench._story_numbers(story, report)
    assert numbers["windows"] == {"with_limit": "settled", "without_limit": "maximum reached"}
    assert "windows" not in bench._story_numbers(story, _report(100.0, 6.0, None))
