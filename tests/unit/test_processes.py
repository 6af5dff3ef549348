"""The supervisor finds exactly the processes it started: a real child process,
its record, and what psutil says about it (a pid reused by another process has
another start time)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from failure_stories.core.wait import wait_for
from failure_stories.host.processes import Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def sup(tmp_path: Path):
    sup = Supervisor(tmp_path)
    yield sup
    for name in sup.names():
        sup.stop(name, timeout=5)


def test_a_started_process_is_recorded_with_its_start_time(sup: Supervisor) -> None:
    assert sup.start("sleeper", SLEEPER) is True
    rec = sup.record("sleeper")
    assert rec is not None and rec.started == psutil.Process(rec.pid).create_time()
    assert sup.alive("sleeper")
    assert sup.start("sleeper", SLEEPER) is False  # same argv: left running


def test_a_pid_with_another_start_time_is_not_ours(sup: Supervisor) -> None:
    sup.start("sleeper", SLEEPER)
    path = sup.pid_dir / "sleeper.json"
    data = json.loads(path.read_text())
    # As if the recorded process had died and the kernel had given its pid to
    # this one: same pid, same argv, a start time a second earlier.
    path.write_text(json.dumps(data | {"started": data["started"] - 1.0}))
    assert not sup.alive("sleeper")
    path.write_text(json.dumps(data))
    assert sup.alive("sleeper")


def test_a_record_without_a_start_time_is_checked_by_argv(sup: Supervisor) -> None:
    """Records written before start times were kept (a cluster already running)."""
    sup.start("sleeper", SLEEPER)
    path = sup.pid_dir / "sleeper.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({"pid": data["pid"], "argv": data["argv"]}))
    assert sup.alive("sleeper")
    path.write_text(json.dumps({"pid": data["pid"], "argv": ["/bin/other"]}))
    assert not sup.alive("sleeper")


def test_frozen_thawed_and_stopped(sup: Supervisor) -> None:
    sup.start("sleeper", SLEEPER)
    rec = sup.record("sleeper")
    assert rec is not None
    sup.freeze("sleeper")
    # A signal is delivered, not applied at once.
    wait_for(
        lambda: psutil.Process(rec.pid).status() == psutil.STATUS_STOPPED,
        what="the sleeper to stop",
        timeout=5,
        interval=0.02,
    )
    assert sup.thaw("sleeper") is True
    assert sup.thaw("sleeper") is False  # not frozen any more
    sup.stop("sleeper", timeout=5)
    assert sup.record("sleeper") is None and not sup.alive("sleeper")

    def gone() -> bool:
        try:
            return psutil.Process(rec.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # An exiting process has no argv left (so is not ours) a moment before it is gone.
    wait_for(gone, what="the sleeper to exit", timeout=5, interval=0.02)
