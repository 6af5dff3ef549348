"""The collector configurations the story runs, read as the audit reads a live
cluster: the fragile one (fault.yaml) is flagged for each way it loses lines,
the durable one (mitigation.yaml) passes."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml

from failure_stories.audit import Snapshot
from failure_stories.contract import scenario as scenarios

audit = scenarios.get("prometheuskube-missing-logs").audit()
MANIFESTS = Path(__file__).resolve().parent / "manifests"
VARIABLES = {
    "NAMESPACE": "ns1",
    "TOOLBOX_IMAGE": "localhost/kfs/toolbox:v1",
    "OTELCOL_IMAGE": "localhost/kfs/otelcol:v0.165.0",
    "SINK_URL": "http://10.96.0.5:9200",
    "LINES_PER_SECOND": "20",
    "STATE_HOST_DIR": "/var/lib/kfs-shipper/ns1",
}


def snapshot(manifest: str) -> Snapshot:
    text = string.Template((MANIFESTS / manifest).read_text()).substitute(VARIABLES)
    snap = Snapshot()
    for doc in yaml.safe_load_all(text):
        doc["metadata"]["namespace"] = "ns1"
        kinds = {"ConfigMap": snap.configmaps, "DaemonSet": snap.daemonsets, "Pod": snap.pods}
        kinds[doc["kind"]].append(doc)
    return snap


@pytest.mark.parametrize(
    ("manifest", "found"),
    [("fault.yaml", {"position-db", "retry-limit"}), ("mitigation.yaml", set())],
)
def test_the_collector_configurations_of_the_story(manifest: str, found: set[str]) -> None:
    findings = list(audit.check_log_shippers(snapshot(manifest)))  # type: ignore[union-attr]
    assert {f.check for f in findings} == found, [f.message for f in findings]


def test_the_fragile_exporter_is_flagged_for_its_time_limit_and_memory_queue() -> None:
    [finding] = [
        f
        for f in audit.check_log_shippers(snapshot("fault.yaml"))  # type: ignore[union-attr]
        if f.check == "retry-limit"
    ]
    assert "max_elapsed_time 2s" in finding.message and "in memory" in finding.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("300s", 300.0), ("0", 0.0), (0, 0.0), ("0s", 0.0), ("1m30s", 90.0), ("250ms", 0.25)],
)
def test_collector_durations(text: object, seconds: float) -> None:
    assert audit.duration_seconds(text) == seconds  # type: ignore[union-attr]


def test_an_unreadable_duration_is_not_taken_for_zero() -> None:
    assert audit.duration_seconds("soon") is None  # type: ignore[union-attr]
    assert audit.duration_seconds("5 minutes") is None  # type: ignore[union-attr]
