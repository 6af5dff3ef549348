"""`make bench`: the suite's own numbers, as JSON (never asserted by timed tests).

Measured on the local provider: build times (cold ones are recorded by
`prepare` when they happen), warm `cluster up` to all nodes Ready, memory at
rest, toolbox pod start to Ready, and the whole suite as `kfs run --all --jobs N`
runs it: its wall time, per story the wall time (less any wait for another
story's turn on a node lock) against the waits its physics imposes (its own
physics_seconds plus the namespace controller's fixed deletion delay) and the
rest broken down (cluster calls, waits beyond physics, image work, teardown), time
to the first phase, the largest runner's peak memory and, with --repeat, flakiness.

With --kind, also a real kind cluster of 1+3 nodes (tools/kind_bench.py): the
node image's build time in this run (seconds when cached), `kind create
cluster` to all nodes Ready, and its memory at rest; then the suite on the kind
provider's own cluster (kind-configs/default.yaml), measured as on local."""

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

import psutil

from failure_stories.contract import scenario as scenarios
from failure_stories.core import timing
from failure_stories.core.wait import wait_for
from failure_stories.providers.base import Provider, toolbox_pod
from failure_stories.providers.kind import KindProvider
from failure_stories.providers.kube import pod_ready
from failure_stories.providers.local import LocalProvider, binaries
from failure_stories.reporting.model import ScenarioReport, report_path
from failure_stories.run.session import Session
from failure_stories.tools import kind_bench

BUILD_TIMES = "build-times.json"
# Every run deletes its own namespace, and kube-controller-manager's namespace
# controller starts on a deleted namespace only after a fixed 5 s
# (namespaceDeletionGracePeriod, not configurable): a wait the platform imposes
# on every story, on top of the story's own physics_seconds.
NAMESPACE_DELETION_DELAY = 5.0
# The story Chaos Toolkit is compared on (bench/chaostoolkit/).
MOONLIGHT = "moonlight-anti-affinity"


def record_build_time(step: str, seconds: float) -> None:
    """Called by prepare when a slow step really ran (cold), not on cache hits."""
    path = binaries.cache_dir() / BUILD_TIMES
    data = json.loads(path.read_text()) if path.exists() else {}
    data[step] = round(seconds, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _rss_kib(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss // 1024)
    except psutil.Error:
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
        pod = toolbox_pod("probe", "c", grace_seconds=0, ready_probe=True)
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
    p.up()  # the cluster may be down: then this first up is not the one measured
    t0 = time.monotonic()
    p.up()
    out["cluster_up_idempotent_seconds"] = round(time.monotonic() - t0, 2)
    p.down()
    t0 = time.monotonic()
    p.up()
    out["cluster_up_warm_seconds"] = round(time.monotonic() - t0, 2)
    out["memory_at_rest"] = memory_at_rest(p)
    out["pod_start_to_ready_seconds"] = [pod_start_to_ready(p) for _ in range(3)]
    return out


def suite_numbers(p: Provider, report_dir: Path, repeat: int, jobs: int) -> dict[str, Any]:
    """The whole suite as `kfs run --all --jobs N --provider NAME` runs it, ``repeat`` times."""
    found = list(scenarios.discover().values())
    p.up()
    runs: list[dict[str, Any]] = []
    for i in range(repeat):
        out = report_dir / f"run{i}"
        first: list[float] = []
        t0 = time.monotonic()

        def say(scenario_id: str, line: str, t0: float = t0, first: list[float] = first) -> None:
            if not first and line.lstrip().startswith(f"> {scenario_id} "):
                first.append(time.monotonic() - t0)

        # The same Session as `kfs run --all --jobs N`; the cluster outlives it.
        with Session(p, out, keep=True) as session:
            session.check(found)
            session.run_parallel(found, jobs, ["--provider", p.name], say)
        suite_seconds = time.monotonic() - t0
        reports = {s.id: _read(out, s.id) for s in found}
        runs.append(
            {
                "suite_seconds": round(suite_seconds, 1),
                "seconds_to_first_phase": round(first[0], 2) if first else None,
                "verdicts": {k: r.verdict if r else "no report" for k, r in reports.items()},
                "per_story": {s.id: _story_numbers(s, reports[s.id]) for s in found},
            }
        )
    passed = sum(all(v == "passed" for v in r["verdicts"].values()) for r in runs)
    stops = [
        stop
        for r in runs
        for st in r["per_story"].values()
        for stop in st.get("windows", {}).values()
    ]
    return {
        "provider": p.name,
        "jobs": jobs,
        "runs": runs,
        "suite_runs_passed": f"{passed}/{len(runs)}",
        "windows_at_maximum": f"{stops.count('maximum reached')}/{len(stops)}",
        # Each story runs in its own `kfs run` process: the largest of them.
        "runner_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
        ),
    }


def _read(report_dir: Path, scenario_id: str) -> ScenarioReport | None:
    path = report_path(report_dir, scenario_id)
    return ScenarioReport.from_json(json.loads(path.read_text())) if path.exists() else None


def _story_numbers(s: scenarios.Scenario, r: ScenarioReport | None) -> dict[str, Any]:
    if r is None:
        return {"seconds": None}
    waited = float(r.info.get("lock_wait_seconds", 0.0))
    own = r.seconds - waited  # time spent waiting for another story's turn is not its own
    physics = s.meta.physics_seconds + NAMESPACE_DELETION_DELAY
    return {
        "seconds": round(r.seconds, 1),
        "lock_wait_seconds": waited,
        "phase_seconds": {p.name: round(p.seconds, 1) for p in r.phases},
        "physics_seconds": s.meta.physics_seconds,
        "namespace_deletion_delay_seconds": NAMESPACE_DELETION_DELAY,
        "wall_to_physics": round(own / physics, 2) if s.meta.physics_seconds else None,
        "overhead_seconds": overhead(r, s.meta.physics_seconds),
        # How each statistically stopped window ended ("settled" or "maximum reached").
        **(
            {"windows": {k: w.get("stop") for k, w in r.info["windows"].items()}}
            if r.info.get("windows")
            else {}
        ),
    }


def overhead(r: ScenarioReport, physics_seconds: float) -> dict[str, float] | None:
    """A run's wall time less its lock wait and its physics, in slices that add
    up to it: time inside Kubernetes API requests; waits beyond physics (the
    wait helper's time and the commands run in pods, where the mechanisms'
    grace periods and load windows pass, less the story's physics_seconds);
    building and importing images; teardown beyond the namespace deletion delay;
    the noise guard's waits for a quiet node before timing windows; and the
    rest (step code, client setup). Reports from before the runner kept
    its ledger (``info.framework_seconds``) have none."""
    ledger = r.info.get("framework_seconds")
    if ledger is None:
        return None
    teardown = r.phase("teardown")
    own = r.seconds - float(r.info.get("lock_wait_seconds", 0.0))
    waits = ledger.get(timing.WAITS, 0.0) + ledger.get(timing.EXEC, 0.0)
    slices = {
        "cluster_calls": ledger.get(timing.CLUSTER_CALLS, 0.0),
        "waits_beyond_physics": waits - physics_seconds,
        "image_work": ledger.get(timing.IMAGES, 0.0),
        "noise_guard": ledger.get(timing.NOISE_GUARD, 0.0),
        "teardown_beyond_deletion_delay": (teardown.seconds if teardown else 0.0)
        - NAMESPACE_DELETION_DELAY,
    }
    total = own - physics_seconds - NAMESPACE_DELETION_DELAY
    slices["other"] = total - sum(slices.values())
    out = {k: round(v, 1) for k, v in slices.items()}
    out["total"] = round(total, 1)
    return out


def chaostoolkit_numbers(
    p: LocalProvider, report_dir: Path, suite: dict[str, Any] | None
) -> dict[str, Any]:
    """Chaos Toolkit's two experiments on the same cluster, and kfs's Moonlight
    overhead against its own (Moonlight from this bench's last suite run, or run
    alone now when the suite was skipped)."""
    from failure_stories.tools import chaostoolkit

    out = chaostoolkit.compare(p, report_dir / "chaostoolkit")
    if suite is not None:
        story = suite["runs"][-1]["per_story"][MOONLIGHT]
    else:
        found = [scenarios.get(MOONLIGHT)]
        with Session(p, report_dir / "moonlight", keep=True) as session:
            session.check(found)
            session.run_parallel(found, 1, ["--provider", "local"], lambda *_: None)
        story = _story_numbers(found[0], _read(report_dir / "moonlight", MOONLIGHT))
    if story.get("seconds") is not None:
        out["moonlight_overhead"] = chaostoolkit.overhead_ratio(story, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench.json"))
    parser.add_argument("--repeat", type=int, default=1, help="suite runs (flakiness)")
    parser.add_argument("--jobs", type=int, default=3, help="scenarios at once, as kfs run --jobs")
    parser.add_argument("--skip-suite", action="store_true")
    parser.add_argument(
        "--skip-chaostoolkit", action="store_true", help="no side-by-side Chaos Toolkit runs"
    )
    parser.add_argument("--report-dir", type=Path, default=Path("reports/bench"))
    parser.add_argument(
        "--kind",
        action="store_true",
        help="also measure a kind 1+3 cluster's create and memory, and the suite on kind",
    )
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
    if args.kind:
        result.update(kind_bench.numbers())
    if not args.skip_suite:
        result["suite"] = suite_numbers(p, args.report_dir, args.repeat, args.jobs)
    if args.kind and not args.skip_suite:
        kind = KindProvider()
        try:
            result["kind_suite"] = suite_numbers(
                kind, args.report_dir / "kind", args.repeat, args.jobs
            )
        finally:
            kind.down()  # and the dockerd kfs started for it
    if not args.skip_chaostoolkit:
        result["chaostoolkit"] = chaostoolkit_numbers(p, args.report_dir, result.get("suite"))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
