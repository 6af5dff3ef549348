"""MindTickle's call arithmetic, from the two call probes' summaries, and its fault
and fix as the config the masq agent reads."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from failure_stories.contract import scenario as scenarios
from failure_stories.providers.kube import render

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


# -- fault and fix: the masq agent's config, as the agent itself parses it --------------

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "masq_agent", REPO / "images" / "workloads" / "masq_agent.py"
)
assert _spec and _spec.loader
agent = importlib.util.module_from_spec(_spec)
sys.modules["masq_agent"] = agent
_spec.loader.exec_module(agent)

LOCAL = "nonMasqueradeCIDRs: [10.244.0.0/16, 10.96.0.0/16]\nresyncInterval: 1s\n"
MANIFESTS = Path(__file__).parent / "manifests"


def _written(manifest: str, saved: str | None, cidrs: list[str]) -> object:
    text = (MANIFESTS / manifest).read_text()
    variables = {"MASQ_NAMESPACE": "kube-system", "MASQ_CONFIGMAP": "kfs-masq-agent"}
    (cm,) = render(text, {**variables, **steps.config_variables(saved, cidrs)})
    assert (cm["metadata"]["namespace"], cm["metadata"]["name"]) == (
        "kube-system",
        "kfs-masq-agent",
    )
    return agent.parse_config(cm["data"]["config"])


def test_the_fault_adds_the_outside_network_and_the_fix_takes_only_it_out():
    kept = steps.kept_ranges(LOCAL)
    assert kept == ["10.244.0.0/16", "10.96.0.0/16"]
    fault = _written("fault.yaml", LOCAL, [*kept, steps.OUTSIDE_NET])
    fix = _written("mitigation.yaml", LOCAL, kept)
    assert fault.non_masquerade == ("10.244.0.0/16", "10.96.0.0/16", "198.51.100.0/24")
    assert fix.non_masquerade == ("10.244.0.0/16", "10.96.0.0/16")
    assert fault.resync_seconds == fix.resync_seconds == 1.0  # the owner's other settings kept


def test_an_owner_on_its_defaults_keeps_rfc1918_and_its_settings():
    assert steps.kept_ranges(None) == list(agent.RFC1918)
    assert steps.kept_ranges("masqLinkLocal: true\n") == list(agent.RFC1918)
    fault = _written("fault.yaml", "masqLinkLocal: true\n", [*agent.RFC1918, steps.OUTSIDE_NET])
    assert fault.masq_link_local is True
    assert fault.resync_seconds == 60.0
    assert fault.non_masquerade[-1] == "198.51.100.0/24"
