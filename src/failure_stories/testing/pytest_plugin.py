"""pytest plugin shipped with kube-failure-stories.

- ``kfs_provider``: a session-wide cluster (``--kfs-provider``, default local). It is
  brought up once and, if this session created it, taken down at the end unless
  ``--kfs-keep-cluster``. ``--kfs-provider existing`` takes ``--kfs-kubeconfig``
  (a file or a list, merged as kubectl does), ``--kfs-context`` and, since tests
  inject faults, ``--kfs-allow-context`` naming the same context.
- ``kfs_run``: run a scenario by id and get its ScenarioReport (cached per session).
- ``scenario.yaml`` files of the stories directory given to pytest (``pytest
  scenarios/``) are collected as one test item per phase, so a failure names
  exactly the phase that broke. Any other project that installs the package
  keeps its own files named scenario.yaml to itself, unless it asks with
  ``--kfs-collect-scenarios``.
- the ``e2e`` marker is registered, so ``--strict-markers`` projects can use it.

A refusal (a context not allowed, a story the provider cannot run) fails the
test with the one-line message, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.contract.scenario import PHASES
from failure_stories.core.errors import KfsError
from failure_stories.providers import NAMES, get_provider
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
            _one_line(self._start)
        assert self.session is not None
        return self.session.provider

    def _start(self) -> None:
        option = self.config.getoption
        keep = bool(option("--kfs-keep-cluster"))
        provider = get_provider(
            option("--kfs-provider"),
            kubeconfig=option("--kfs-kubeconfig"),
            context=option("--kfs-context"),
            allow_context=option("--kfs-allow-context"),
            keep_cluster=keep,
        )
        provider.check_allowed()  # before the cluster is contacted
        session = Session(provider, self.report_dir, keep=keep)
        session.__enter__()
        self.session = session
        provider.up()

    def run(self, scenario_id: str) -> ScenarioReport:
        if scenario_id not in self.reports:
            self.get()
            self.reports[scenario_id] = _one_line(lambda: self._run(scenario_id))
        return self.reports[scenario_id]

    def _run(self, scenario_id: str) -> ScenarioReport:
        assert self.session is not None
        story = scenarios.get(scenario_id)
        self.session.check([story])
        report = self.session.run(story)
        self.session.write_reports()
        return report

    def finish(self) -> None:
        if self.session is not None:
            self.session.__exit__(None, None, None)


_CLUSTER = pytest.StashKey[_Cluster]()
_T = TypeVar("_T")

# Options that only make sense for a cluster kfs did not build.
_EXISTING_ONLY = ("--kfs-kubeconfig", "--kfs-context", "--kfs-allow-context")


def _one_line(work: Callable[[], _T]) -> _T:
    """A KfsError fails the test with its one line (it says what to do)."""
    try:
        return work()
    except KfsError as exc:
        refused = str(exc)
    pytest.fail(refused, pytrace=False)  # after the except: no chained traceback


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kfs", "kube-failure-stories")
    group.addoption(
        "--kfs-provider",
        default="local",
        choices=NAMES,
        help="cluster provider for e2e tests (default: local)",
    )
    group.addoption(
        "--kfs-kubeconfig",
        default=None,
        metavar="PATH",
        help="existing provider: the kubeconfig file, or an os.pathsep-separated list "
        "merged as kubectl does (default: $KUBECONFIG, else ~/.kube/config)",
    )
    group.addoption(
        "--kfs-context",
        default=None,
        metavar="NAME",
        help="existing provider: the kubeconfig context (default: the current one)",
    )
    group.addoption(
        "--kfs-allow-context",
        default=None,
        metavar="NAME",
        help="existing provider: name the context again to let tests inject faults into it",
    )
    group.addoption(
        "--kfs-keep-cluster",
        action="store_true",
        help="leave the cluster running after the session",
    )
    group.addoption(
        "--kfs-collect-scenarios",
        action="store_true",
        help="collect every scenario.yaml given to pytest as a story, also outside the "
        "stories directory (default: only the stories directory's, see KFS_SCENARIOS_DIR)",
    )
    group.addoption(
        "--kfs-report-dir",
        default="reports/pytest",
        help="where scenario reports from tests are written",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against a real cluster (local provider by default)"
    )
    provider = config.getoption("--kfs-provider")
    if provider != "existing":
        for flag in _EXISTING_ONLY:
            if config.getoption(flag) is not None:
                raise pytest.UsageError(
                    f"{flag} is for --kfs-provider existing; the {provider} provider "
                    "builds its own cluster and kubeconfig"
                )
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
    if phase.undecided:
        lines.append(f"undecided: {phase.undecided}")
    for name, m in phase.measurements.items():
        want = f" (want {m.threshold}{', undecided' if m.undecided else ''})" if m.threshold else ""
        lines.append(f"  {name} = {m.value:g}{want}")
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
    if file_path.name != "scenario.yaml":
        return None
    stories = scenarios.scenarios_root().resolve()
    if file_path.resolve().is_relative_to(stories) or parent.config.getoption(
        "--kfs-collect-scenarios"
    ):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None
