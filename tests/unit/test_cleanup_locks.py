"""`kfs cleanup` on a host without a cluster leaves the lock directory as a new
machine has it: the node lock it took to sweep is not left behind as a file,
while a lock some process still holds is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.core.errors import ClusterUnreachableError
from failure_stories.host import docker_engine
from failure_stories.host.locks import FileLocks
from failure_stories.run import cleanup

from .conftest import StubProvider


class NoCluster(StubProvider):
    def kube(self) -> None:
        raise ClusterUnreachableError("no cluster is running here")


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(docker_engine, "cleanup_if_idle", lambda: [])
    return tmp_path / "locks"


def test_cleanup_without_a_cluster_leaves_no_lock_files(locks: Path) -> None:
    done = cleanup.sweep(NoCluster())
    assert done == ["cluster not reachable, skipped its objects (no cluster is running here)"]
    assert not locks.exists()


def test_cleanup_keeps_a_lock_that_is_held(locks: Path) -> None:
    with FileLocks().held("run-kfs-story-abc", "the run"):
        cleanup.sweep(NoCluster())
        assert sorted(p.name for p in locks.iterdir()) == ["run-kfs-story-abc.lock"]
    assert not locks.exists() or not list(locks.iterdir())
