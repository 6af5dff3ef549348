"""A Session takes down only the cluster it created, never one kfs does not own,
and leaves the derived reports behind, also when a run is interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import Interrupted, ProviderError
from failure_stories.providers.base import ClusterStatus
from failure_stories.run.session import Session
from tests.unit.conftest import StubProvider

STEPS = (
    "def steady_state(ctx): return {'errors': 0}\n"
    "def symptom(ctx): return {'errors': 9}\n"
    "def verify(ctx): return {'errors': 0}\n"
)


class Lifecycle(StubProvider):
    def __init__(self, running: bool, owns: bool = True) -> None:
        super().__init__()
        self.running = running
        self.owns_cluster = owns
        self.downs = 0

    def status(self) -> ClusterStatus:
        return ClusterStatus("stub", self.running, None)

    def up(self) -> None:
        self.running = True

    def down(self) -> None:
        self.downs += 1


@pytest.mark.parametrize(
    ("running", "owns", "keep", "downs"),
    [
        (False, True, False, 1),  # created here: deleted at the end
        (False, True, True, 0),  # --keep-cluster
        (True, True, False, 0),  # was there before: left as it was
        (False, False, False, 0),  # an existing cluster: never deleted
    ],
)
def test_only_a_cluster_the_session_created_is_taken_down(
    make_scenario, tmp_path: Path, running: bool, owns: bool, keep: bool, downs: int
):
    story = scenarios.get("test-story", make_scenario(STEPS).parent)
    provider = Lifecycle(running, owns)
    said: list[str] = []
    with Session(provider, tmp_path / "r", keep=keep, say=said.append) as session:
        report = session.run(story)
    assert report.verdict == "passed"
    assert provider.downs == downs
    assert bool(said) == bool(downs)
    assert (tmp_path / "r" / "junit.xml").is_file() and (tmp_path / "r" / "report.html").is_file()


class CannotStart(Lifecycle):
    def up(self) -> None:
        raise ProviderError("docker is not installed: install Docker")


def test_a_cluster_that_never_came_up_is_not_deleted(make_scenario, tmp_path: Path):
    """kind without Docker: nothing was created, so nothing is said to be deleted."""
    story = scenarios.get("test-story", make_scenario(STEPS).parent)
    provider = CannotStart(running=False)
    said: list[str] = []
    with Session(provider, tmp_path / "r", say=said.append) as session:
        report = session.run(story)
    assert report.verdict == "error" and "docker is not installed" in report.error
    assert provider.downs == 0 and said == []


def test_an_interrupted_session_still_deletes_its_cluster_and_writes_reports(
    make_scenario, tmp_path: Path
):
    steps = STEPS + "def inject(ctx):\n    import os, signal; os.kill(os.getpid(), signal.SIGINT)\n"
    story = scenarios.get("test-story", make_scenario(steps).parent)
    provider = Lifecycle(running=False)
    with pytest.raises(Interrupted), Session(provider, tmp_path / "r", say=lambda _m: None) as s:
        s.run(story)
    assert provider.downs == 1
    assert "error" in (tmp_path / "r" / "junit.xml").read_text()
