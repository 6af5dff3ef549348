"""A story that measures timing, run beside CPU-bound processes, ends in a clear
"too busy to judge" error: never a false not-fixed or not-reproduced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from failure_stories.contract import scenario as scenarios
from failure_stories.providers.base import Provider
from failure_stories.run.runner import Runner


def test_buffer_beside_a_busy_process_per_cpu_says_too_busy(kfs_provider: Provider, tmp_path: Path):
    story = scenarios.get("buffer-cpu-throttling")
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)  # two on this machine kind
    ]
    try:
        report = Runner(kfs_provider, tmp_path).run(story)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert report.verdict == "error", report.to_json()
    failed = next(p for p in report.phases if p.error)
    # The first measuring window already finds the node busy; nothing was judged.
    assert failed.name == "steady-state", failed
    assert failed.error is not None and failed.error.startswith("node too busy to judge: ")
    match = re.search(r": (\d+)% idle, need (\d+)%", failed.error)
    assert match is not None
    idle, need = int(match.group(1)), int(match.group(2))
    assert need == round(story.meta.node.min_idle_cpu * 100) and idle < need
    assert all(p.skipped for p in report.phases if p.name in ("symptom", "verify"))
    assert report.phase("teardown").ok  # type: ignore[union-attr]
