"""pytest plugin shipped with kube-failure-stories.

- ``kfs_provider``: a session-wide cluster (``--kfs-provider``, default local). It is
  brought up once and, if this session created it, taken down at the end unless
  ``--kfs-keep-cluster``.
- ``kfs_run``: run a scenario by id and get its ScenarioReport (cached per session).
- ``scenario.yaml`` files given to pytest (``pytest scenarios/``) are collected as
  one test item per phase, so a failure names exactly the phase that broke.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.contract.scenario import PHASES
from failure_stories.providers import get_provider
from failure_stories.providers.base import Provider
from failure_stories.reporting.model import PhaseResult, ScenarioReport
from failure_stories.run.session import Session


class _Cluster:
    """The session's one cluster, shared by fixtures and collected scenario items."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.session: Session | None = None
        self.reports: dict[str, ScenarioReport] = {}
        self.report_dir = Path(config.getoption("--kfs-report-dir"))

    def get(self) -> Provider:
        if self.session is None:
            provider = get_provider(self.config.getoption("--kfs-provider"))
            keep = bool(self.config.getoption("--kfs-keep-cluster"))
            session = Session(provider, self.report_dir, keep=keep)
            session.__enter__()
            self.session = session
            provider.up()
        return self.session.provider

    def run(self, scenario_id: str) -> ScenarioReport:
        if scenario_id not in self.reports:
            self.get()
            assert self.session is not None
            story = scenarios.get(scenario_id)
            self.session.check([story])
            self.reports[scenario_id] = self.session.run(story)
            self.session.write_reports()
        return self.reports[scenario_id]

    def finish(self) -> None:
        if self.session is not None:
            self.session.__exit__(None, None, None)


_CLUSTER = pytest.StashKey[_Cluster]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kfs", "kube-failure-stories")
    group.addoption("--kfs-provider", default="local", help="cluster provider for e2e tests")
    group.addoption(
        "--kfs-keep-cluster",
        action="store_true",
        help="leave the cluster running after the session",
    )
    group.addoption(
        "--kfs-report-dir",
        default="reports/pytest",
        help="where scenario reports from tests are written",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_CLUSTER] = _Cluster(config)


def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_CLUSTER].finish()


@pytest.fixture(scope="session")
def kfs_provider(request: pytest.FixtureRequest) -> Provider:
    """The session-wide cluster, up for the whole session."""
    return request.config.stash[_CLUSTER].get()


@pytest.fixture
def kfs_run(request: pytest.FixtureRequest) -> Callable[[str], ScenarioReport]:
    """Run a scenario by id (once per session) and return its report."""
    return request.config.stash[_CLUSTER].run


def describe_phase(report: ScenarioReport, phase: PhaseResult) -> str:
    lines = [f"{report.scenario} phase {phase.name}: verdict {report.verdict}"]
    if phase.error:
        lines.append(f"error: {phase.error}")
    for name, m in phase.measurements.items():
        lines.append(f"  {name} = {m.value:g}" + (f" (want {m.threshold})" if m.threshold else ""))
    if report.artifacts:
        lines.append(f"artifacts: {report.artifacts}")
    return "\n".join(lines)


class PhaseItem(pytest.Item):
    def __init__(self, *, phase: str, scenario_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.phase = phase
        self.scenario_id = scenario_id
        self.add_marker(pytest.mark.e2e)

    def runtest(self) -> None:
        report = self.config.stash[_CLUSTER].run(self.scenario_id)
        result = report.phase(self.phase)
        assert result is not None
        if result.skipped:
            pytest.skip(
                f"{self.phase} not reached: an earlier phase decided "
                f"verdict {report.verdict} ({report.error or 'see report'})"
            )
        if not result.ok:
            raise PhaseFailed(describe_phase(report, result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, PhaseFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.scenario_id}::{self.phase}"


class PhaseFailed(AssertionError):
    pass


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        meta = scenarios.load_meta(self.path.parent)
        for phase in PHASES:
            yield PhaseItem.from_parent(self, name=phase, phase=phase, scenario_id=meta.id)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name == "scenario.yaml":
        return ScenarioFile.from_parent(parent, path=file_path)
    return None
