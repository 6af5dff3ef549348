"""MindTickle's call arithmetic, from the two call probes' summaries."""

from __future__ import annotations

from failure_stories.contract import scenario as scenarios

steps = scenarios.get("mindtickle-external-snat").steps()


def _probe(oks: list[bool], ms: list[float], retransmits: int = 0) -> dict:
    results = [{"ok": ok, "ms": m} for ok, m in zip(oks, ms, strict=True)]
    return {"ok": sum(oks), "count": len(oks), "results": results, "syn_retransmits": retransmits}


def test_outside_calls_time_out_while_inside_ones_answer():
    external = _probe([False] * 4, [2000.0, 2001.0, 2003.0, 2000.5], retransmits=8)
    internal = _probe([True] * 4, [1.0, 2.0, 1.5, 1.2])
    numbers = steps.call_numbers(external, internal)
    assert numbers == {
        "external_success_ratio": 0.0,
        "internal_success_ratio": 1.0,
        "syn_retransmits": 8,
        "external_p50_ms": 2001.0,  # the upper median of four
    }


def test_one_outside_call_in_four_is_a_quarter():
    numbers = steps.call_numbers(
        _probe([True, True, True, False], [3, 4, 5, 2000]), _probe([True], [1])
    )
    assert numbers["external_success_ratio"] == 0.75
