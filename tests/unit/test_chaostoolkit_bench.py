"""The Chaos Toolkit side of `make bench`: experiments that are what its users
write, and an overhead comparison that counts the same things for both tools."""

from __future__ import annotations

import json

from failure_stories.tools import chaostoolkit


def test_the_experiments_have_a_hypothesis_a_method_and_rollbacks() -> None:
    for name in ("moonlight-node-failure", "pod-kill"):
        doc = json.loads((chaostoolkit.HERE / f"{name}.json").read_text())
        assert doc["steady-state-hypothesis"]["probes"], name
        assert doc["method"], name
        assert "rollbacks" in doc, name
    node = json.loads((chaostoolkit.HERE / "moonlight-node-failure.json").read_text())
    # The node is stopped and restarted, never left frozen.
    assert "-STOP" in node["method"][0]["provider"]["arguments"]
    assert "-CONT" in node["rollbacks"][0]["provider"]["arguments"]
    assert chaostoolkit._pauses(chaostoolkit.HERE / "moonlight-node-failure.json") == 20


def test_the_tool_is_pinned_with_everything_it_installs() -> None:
    pins = [
        line
        for line in chaostoolkit.REQUIREMENTS.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert "chaostoolkit==1.19.0" in pins and "chaostoolkit-kubernetes==0.39.0" in pins
    assert all("==" in line for line in pins)


def test_overheads_count_wall_minus_physics_and_the_work_around_the_tool() -> None:
    exp = chaostoolkit.Experiment("moonlight-node-failure", pauses=20.0)
    exp.wall, exp.setup, exp.teardown, exp.outcome = 23.4, 3.0, 6.7, "deviated"
    ctk = {"experiments": {exp.name: exp.numbers()}}
    assert ctk["experiments"][exp.name]["overhead_seconds"] == 3.4
    assert ctk["experiments"][exp.name]["overhead_with_setup_and_teardown_seconds"] == 13.1
    kfs = {
        "seconds": 41.5,
        "lock_wait_seconds": 1.5,
        "physics_seconds": 30,
        "namespace_deletion_delay_seconds": 5.0,
    }
    ratio = chaostoolkit.overhead_ratio(kfs, ctk)
    assert ratio["kfs_overhead_seconds"] == 5.0
    assert ratio["ratio"] == round(5.0 / 13.1, 2)


def test_the_assertion_table_does_not_credit_chaos_toolkit_with_a_fix() -> None:
    assert chaostoolkit.ASSERTS["chaostoolkit"]["the mitigation removes the symptom"] is False
    assert all(chaostoolkit.ASSERTS["kfs"].values())
