"""The buffer-cpu-throttling story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

import re
from collections.abc import Iterator

from failure_stories.audit.model import (
    INFO,
    LATENCY_CRITICAL,
    LOW,
    MEDIUM,
    Finding,
    Snapshot,
    Workload,
    _get,
    _meta,
    cpu_cores,
    workloads,
)

STORY = "buffer-cpu-throttling"
# What its checks look for, as the audit report says it.
LOOKS_FOR = "CPU limits that throttle latency-critical work; kernels with the CFS bug"


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("true", "yes", "1")


def latency_critical(w: Workload) -> bool:
    return _truthy(w.labels.get(LATENCY_CRITICAL)) or _truthy(w.annotations.get(LATENCY_CRITICAL))


def _kernel(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_cpu_limits(snap: Snapshot) -> Iterator[Finding]:
    unlabelled_containers = 0
    unlabelled_workloads = 0
    for w in workloads(snap):
        limited = [
            (c, cpu_cores(_get(c, "resources", "limits", "cpu")))
            for c in w.containers
            if _get(c, "resources", "limits", "cpu") is not None
        ]
        if not limited:
            continue
        if not latency_critical(w):
            unlabelled_containers += len(limited)
            unlabelled_workloads += 1
            continue
        for c, cores in limited:
            limit = _get(c, "resources", "limits", "cpu")
            quota = (
                f" (a CFS quota of {cores * 100:g} ms of CPU per 100 ms period)" if cores else ""
            )
            yield w.finding(
                STORY,
                "cpu-limit-on-latency-critical",
                MEDIUM,
                f"container {c.get('name')} is latency-critical and has a CPU limit of "
                f"{limit}{quota}: a burst that uses it up is throttled until the next period, "
                "even on an idle node, and that pause lands in the response times",
                "remove limits.cpu and keep requests.cpu (Buffer's fix), or raise the limit "
                "well above the bursts; watch container_cpu_cfs_throttled_periods_total",
            )
    if unlabelled_containers:
        yield Finding(
            STORY,
            "cpu-limits-elsewhere",
            "Cluster",
            "",
            "unlabelled-workloads",
            INFO,
            f"{unlabelled_containers} containers in {unlabelled_workloads} workloads not "
            f"labelled {LATENCY_CRITICAL}=true have CPU limits; whether throttling hurts them "
            "depends on how bursty they are, which the API does not show",
            f"label latency-critical workloads {LATENCY_CRITICAL}=true so the audit checks "
            "them, and compare their throttled periods with their latency",
        )
    for node in snap.nodes:
        version = str(_get(node, "status", "nodeInfo", "kernelVersion") or "")
        parsed = _kernel(version)
        if parsed is None or parsed >= (5, 4):
            continue
        backported = parsed in ((4, 14), (4, 19), (5, 3))
        yield Finding(
            STORY,
            "old-kernel",
            "Node",
            "",
            _meta(node)[1],
            LOW if backported else MEDIUM,
            f"kernel {version} is older than 5.4, which removed the expiration of CPU-local "
            "CFS slices (the bug that throttles multi-threaded containers far below their "
            "limit)"
            + (
                f"; {parsed[0]}.{parsed[1]}.y stable kernels may carry the backport, check the "
                "distribution's changelog"
                if backported
                else ""
            ),
            "upgrade the node image to a kernel >= 5.4 (or a stable kernel with the fix), "
            "or remove CPU limits from latency-critical workloads",
        )


CHECKS = (check_cpu_limits,)
