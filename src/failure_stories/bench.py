"""`make bench`: the suite's own numbers, as JSON (never asserted by timed tests).

Measured on the local provider: build times (cold ones are recorded by
`prepare` when they happen), warm `cluster up` to all nodes Ready, memory at
rest, toolbox pod start to Ready, and the whole suite: wall time per story
against the waits its physics imposes, time to the first phase, the runner's
peak memory and, with --repeat, flakiness."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from failure_stories import scenario as scenarios
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.kube import pod_ready
from failure_stories.providers.base import REAL_NODE_LABEL
from failure_stories.providers.local import LocalProvider, binaries
from failure_stories.report import write_junit
from failure_stories.runner import Event, Runner
from failure_stories.wait import wait_for

BUILD_TIMES = "build-times.json"


def record_build_time(step: str, seconds: float) -> None:
    """Called by prepare when a slow step really ran (cold), not on cache hits."""
    path = binaries.cache_dir() / BUILD_TIMES
    data = json.loads(path.read_text()) if path.exists() else {}
    data[step] = round(seconds, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_at_rest(p: LocalProvider) -> dict[str, float]:
    """RSS of every cluster process plus what the real node's pods use."""
    per: dict[str, float] = {}
    for name in p.sup.names():
        rec = p.sup.record(name)
        if rec is not None and p.sup.alive(name):
            per[name] = round(_rss_kib(rec.pid) / 1024, 1)
    pods = Path("/sys/fs/cgroup/memory/kfs/memory.usage_in_bytes")
    pods_mib = int(pods.read_text()) / 2**20 if pods.exists() else 0.0
    control = sum(
        per.get(c, 0.0)
        for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
    )
    return {
        "control_plane_rss_mib": round(control, 1),
        "cluster_total_mib": round(sum(per.values()) + pods_mib, 1),
        "pods_cgroup_mib": round(pods_mib, 1),
        **{f"rss_mib_{k}": v for k, v in per.items()},
    }


def pod_start_to_ready(p: LocalProvider) -> float:
    kube = p.kube()
    ns = kube.create_namespace("bench")
    try:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {
                "nodeSelector": {REAL_NODE_LABEL: "true"},
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "c",
                        "image": TOOLBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "600"],
                        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
                    }
                ],
            },
        }
        t0 = time.monotonic()
        kube.apply([pod], ns)
        wait_for(
            lambda: pod_ready(kube.core.read_namespaced_pod("probe", ns)),
            what="the probe pod Ready",
            timeout=60,
            interval=0.05,
        )
        return round(time.monotonic() - t0, 2)
    finally:
        kube.delete_namespace(ns)


def cluster_numbers(p: LocalProvider) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    p.up()  # idempotent: the cluster may already run
    out["cluster_up_idempotent_seconds"] = round(time.monotonic() - t0, 2)
    p.down()
    t0 = time.monotonic()
    p.up()
    out["cluster_up_warm_seconds"] = round(time.monotonic() - t0, 2)
    out["memory_at_rest"] = memory_at_rest(p)
    out["pod_start_to_ready_seconds"] = [pod_start_to_ready(p) for _ in range(3)]
    return out


def suite_numbers(p: LocalProvider, report_dir: Path, repeat: int) -> dict[str, Any]:
    found = list(scenarios.discover().values())
    runs: list[dict[str, Any]] = []
    for i in range(repeat):
        first_phase: list[float] = []
        t0 = time.monotonic()

        def listener(event: Event, t0: float = t0, first: list[float] = first_phase) -> None:
            if event.kind == "phase-start" and not first:
                first.append(time.monotonic() - t0)

        reports = []
        for s in found:
            reports.append(Runner(p, report_dir / f"run{i}", listener).run(s))
        write_junit(reports, report_dir / f"run{i}")
        runs.append(
            {
                "suite_seconds": round(time.monotonic() - t0, 1),
                "seconds_to_first_phase": round(first_phase[0], 2) if first_phase else None,
                "verdicts": {r.scenario: r.verdict for r in reports},
                "per_story": {
                    r.scenario: {
                        "seconds": round(r.seconds, 1),
                        "physics_seconds": s.meta.physics_seconds,
                        "wall_to_physics": round(r.seconds / s.meta.physics_seconds, 2)
                        if s.meta.physics_seconds
                        else None,
                    }
                    for r, s in zip(reports, found, strict=True)
                },
            }
        )
    passed = sum(all(v == "passed" for v in r["verdicts"].values()) for r in runs)
    return {
        "runs": runs,
        "suite_runs_passed": f"{passed}/{len(runs)}",
        "runner_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--repeat", type=int, default=1, help="suite runs (flakiness)")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument("--report-dir", type=Path, default=Path("reports/bench"))
    args = parser.parse_args(argv)
    p = LocalProvider()
    build_times = binaries.cache_dir() / BUILD_TIMES
    result: dict[str, Any] = {
        "machine": {"kernel": platform.release(), "cpus": len(os.sched_getaffinity(0))},
        "cold_build_seconds": json.loads(build_times.read_text())
        if build_times.exists()
        else "not recorded (binaries were already cached when prepare first ran)",
    }
    result.update(cluster_numbers(p))
    if not args.skip_suite:
        result["suite"] = suite_numbers(p, args.report_dir, args.repeat)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
