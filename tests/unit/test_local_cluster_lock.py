"""Creating or deleting the local cluster is one process's job at a time; runs on a
warm cluster only check it, together."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from failure_stories.providers.local import LocalProvider, binaries
from failure_stories.providers.local import layout as L


class Recorder:
    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def step(self, what: str, seconds: float = 0.3) -> None:
        start = time.monotonic()
        time.sleep(seconds)  # the span that must (or may) overlap another
        with self.lock:
            self.spans.append((what, start, time.monotonic()))

    def overlapped(self) -> bool:
        (_, a0, a1), (_, b0, b1) = sorted(self.spans, key=lambda s: s[1])
        return b0 < a1 and a0 < b1


@pytest.fixture
def provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalProvider:
    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(binaries, "ensure", lambda: None)
    return LocalProvider(L.Paths(tmp_path / "state"))


def _both(*calls: object) -> None:
    threads = [threading.Thread(target=c) for c in calls]  # type: ignore[arg-type]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)


def test_two_downs_take_turns(provider: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    monkeypatch.setattr(provider, "_down", lambda: rec.step("down"))
    _both(provider.down, provider.down)
    assert len(rec.spans) == 2
    assert not rec.overlapped()


def test_a_cold_up_and_a_down_take_turns(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    monkeypatch.setattr(provider, "_warm", lambda: False)
    monkeypatch.setattr(provider, "_up", lambda warm: rec.step(f"up warm={warm}"))
    monkeypatch.setattr(provider, "_down", lambda: rec.step("down"))
    _both(provider.up, provider.down)
    assert sorted(s[0] for s in rec.spans) == ["down", "up warm=False"]
    assert not rec.overlapped()


def test_runs_on_a_warm_cluster_check_it_together(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    monkeypatch.setattr(provider, "_warm", lambda: True)
    monkeypatch.setattr(provider, "_up", lambda warm: rec.step(f"up warm={warm}", 1.0))
    _both(provider.up, provider.up)
    assert [s[0] for s in rec.spans] == ["up warm=True"] * 2
    assert rec.overlapped()


def test_down_leaves_no_lock_records_and_keeps_held_ones(
    provider: LocalProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from failure_stories.host import locks

    monkeypatch.setattr(provider, "_down", lambda: None)
    with locks.held("run-kfs-other-abc123", "another run"):
        with locks.held("node", "x", shared=True):
            pass
        provider.down()
        assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == [
            "run-kfs-other-abc123.lock"
        ]
    provider.down()
    assert not (tmp_path / "locks").exists()


def test_a_lock_on_a_file_removed_meanwhile_is_not_held(tmp_path: Path, monkeypatch):
    """`down` unlinks lock files; one unlinked between a waiter's open and its
    flock must not count as held, or two processes would both hold the lock."""
    from failure_stories.host import locks

    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path / "locks"))
    path = tmp_path / "locks" / "node.lock"
    real_open = os.open

    def open_then_removed(name, flags, mode=0o777):
        fd = real_open(name, flags, mode)
        os.unlink(name)  # what a `down` did right then
        return fd

    monkeypatch.setattr(os, "open", open_then_removed)
    assert locks._try_lock(path) is None
    monkeypatch.setattr(os, "open", real_open)
    fd = locks._try_lock(path)
    assert fd is not None and os.fstat(fd).st_ino == os.stat(path).st_ino
    os.close(fd)
