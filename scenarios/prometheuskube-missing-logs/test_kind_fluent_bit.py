"""The real fluent-bit configurations offered for kind mirror the story: the audit,
which knows fluent-bit's options, flags the fragile one and passes the durable one."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml

from failure_stories.audit import Snapshot
from failure_stories.contract import scenario as scenarios

check_log_shippers = scenarios.get("prometheuskube-missing-logs").audit().check_log_shippers  # type: ignore[union-attr]

HERE = Path(__file__).resolve().parents[2] / "scenarios/prometheuskube-missing-logs/kind-fluent-bit"


def snapshot(mode: str) -> Snapshot:
    text = string.Template((HERE / f"{mode}.yaml").read_text()).safe_substitute(
        NAMESPACE="ns1", SINK_URL_HOST="10.96.0.5"
    )
    snap = Snapshot()
    for doc in yaml.safe_load_all(text):
        doc["metadata"]["namespace"] = "ns1"
        (snap.configmaps if doc["kind"] == "ConfigMap" else snap.daemonsets).append(doc)
    return snap


@pytest.mark.parametrize(("mode", "flagged"), [("fragile", True), ("durable", False)])
def test_fluent_bit_configuration(mode: str, flagged: bool):
    findings = list(check_log_shippers(snapshot(mode)))
    assert bool(findings) is flagged, [f.message for f in findings]
    if flagged:
        assert {f.story for f in findings} == {"prometheuskube-missing-logs"}
