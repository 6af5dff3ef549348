"""flock() favours no one: without an order, shared holders that keep overlapping
keep an exclusive waiter (a story alone on the node, `kfs cleanup`) out until they all stop.
The node lock queues a shared taker behind a waiting exclusive one."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from failure_stories.core.errors import WaitTimeout
from failure_stories.host import locks


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.02)
    return tmp_path


def _taker(name: str, shared: bool, got: dict[str, float], hold: float) -> threading.Thread:
    def take() -> None:
        with locks.held("node", name, timeout=10, shared=shared):
            got[name] = time.monotonic()
            time.sleep(hold)

    thread = threading.Thread(target=take)
    thread.start()
    return thread


def test_a_shared_taker_queues_behind_a_waiting_exclusive_one() -> None:
    got: dict[str, float] = {}
    with locks.held("node", "first reader", shared=True):
        writer = _taker("writer", shared=False, got=got, hold=0.3)
        time.sleep(0.2)  # the writer is waiting now
        reader = _taker("second reader", shared=True, got=got, hold=0.0)
        time.sleep(0.3)
        # Shared with the first reader, it could have had the lock at once.
        assert got == {}
    writer.join(5)
    reader.join(5)
    assert list(got) == ["writer", "second reader"]
    assert got["second reader"] >= got["writer"] + 0.25  # it waited for the writer's hold


def test_shared_takers_still_share_when_no_one_waits() -> None:
    got: dict[str, float] = {}
    with locks.held("node", "first reader", shared=True):
        reader = _taker("second reader", shared=True, got=got, hold=0.0)
        reader.join(5)
    assert "second reader" in got


def test_a_waiter_says_once_what_it_waits_for_and_times_out_in_one_line() -> None:
    said: list[str] = []
    waiter = locks.held("node", "another run", timeout=0.2, on_wait=said.append)
    with locks.held("node", "holder"), pytest.raises(WaitTimeout, match="another run"), waiter:
        pass
    assert said == ["waiting for another run"]
    # The gate of the timed-out waiter was released: the lock is free again.
    with locks.held("node", "after", timeout=0.2):
        pass
