"""A Session: one batch of runs on one provider, for `kfs run`, `kfs gameday`,
the pytest plugin and `make bench`.

It checks up front that the provider has every ability the stories need; uses
the cluster that is there or creates it; runs stories one at a time in this
process, or side by side, each in its own `kfs run` process; writes the
derived reports (junit.xml, report.html) from the JSON ones; and at the end
deletes only a cluster it created, and never one kfs does not own."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from failure_stories.contract.controls import CONTROLS, run_key
from failure_stories.contract.scenario import Scenario
from failure_stories.core.errors import (
    Interrupted,
    ScenarioDefinitionError,
    UnfitProviderError,
)
from failure_stories.providers.base import Provider
from failure_stories.providers.capabilities import lacking
from failure_stories.reporting.html import write_html
from failure_stories.reporting.model import (
    ScenarioReport,
    attach_controls,
    report_path,
    write_json,
    write_junit,
)
from failure_stories.run import parallel
from failure_stories.run.context import RunContext
from failure_stories.run.runner import Listener, Runner


def refuse_uncontrollable(stories: Iterable[Scenario], controls: Iterable[str | None]) -> None:
    """One line naming a control a story cannot run: it has no phase to withhold."""
    for control in (c for c in controls if c is not None):
        phase = CONTROLS[control].withholds
        lacking_phase = [s.id for s in stories if s.step(phase) is None]
        if lacking_phase:
            raise ScenarioDefinitionError(
                f"the {control} control withholds the {phase} phase, which "
                f"{', '.join(lacking_phase)} does not have: it would be the story itself"
            )


def refuse_unfit(provider: Provider, stories: Iterable[Scenario]) -> None:
    """One line naming every story the provider cannot run, and what it lacks."""
    unfit = [(s.id, lacking(provider, s.meta.needs)) for s in stories]
    unfit = [(sid, missing) for sid, missing in unfit if missing]
    if unfit:
        which = "; ".join(f"{sid} needs {', '.join(missing)}" for sid, missing in unfit)
        raise UnfitProviderError(
            f"the {provider.name} provider cannot run {which}: choose another provider "
            "(`kfs describe ID` says what a story needs)"
        )


class Session:
    def __init__(
        self,
        provider: Provider,
        report_dir: Path,
        *,
        keep: bool = False,
        listener: Listener | None = None,
        say: Callable[[str], None] = print,
        keep_flag: str | None = None,
    ) -> None:
        self.provider = provider
        self.report_dir = report_dir
        self.keep = keep
        self.listener = listener
        self.say = say
        self.keep_flag = keep_flag  # the option that would have kept the cluster, if any
        self.reports: list[ScenarioReport] = []
        self.created = False

    def __enter__(self) -> Session:
        self.created = self.provider.owns_cluster and not self.provider.status().running
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        try:
            self.write_reports()
        finally:
            # Only a cluster that came up: a provider that could not start one
            # (kind without Docker) has nothing to delete.
            if self.created and not self.keep and self.provider.status().running:
                hint = f" ({self.keep_flag} keeps it)" if self.keep_flag else ""
                self.say(f"deleting the {self.provider.name} cluster this run created{hint}")
                self.provider.down()

    def check(self, stories: Iterable[Scenario]) -> None:
        """Refuse, before the cluster is touched, stories the provider lacks an
        ability for, then a cluster not meant for faults (the existing provider's
        --allow-context guard)."""
        refuse_unfit(self.provider, stories)
        self.provider.check_allowed()

    def reach(self) -> None:
        """Bring up (or, on existing, check that it answers) the one cluster every
        story shares, before the first story: a cluster that cannot be had is one
        error, not an error verdict per story. Providers that build a cluster per
        story do it in each run."""
        if self.provider.shared_cluster:
            self.provider.up()

    def write_reports(self) -> None:
        """junit.xml and report.html, derived from this session's reports so far;
        a story run's JSON report names the controls run beside it."""
        if self.reports:
            for story in attach_controls(self.reports):
                write_json(story, self.report_dir)
            write_junit(self.reports, self.report_dir)
            write_html(self.reports, self.report_dir)

    def run(
        self,
        scenario: Scenario,
        hold_fault: Callable[[RunContext], None] | None = None,
        control: str | None = None,
    ) -> ScenarioReport:
        """One story in this process (``hold_fault``: a drill's hold, see Runner;
        ``control``: a negative control instead of the story itself)."""
        runner = Runner(
            self.provider, self.report_dir, self.listener, hold_fault=hold_fault, control=control
        )
        try:
            report = runner.run(scenario)
        except Interrupted:
            # The runner wrote the interrupted run's report: the derived ones show it too.
            path = report_path(self.report_dir, scenario.id, control)
            if path.exists():
                self.reports.append(ScenarioReport.from_json(json.loads(path.read_text())))
            raise
        self.reports.append(report)
        return report

    def run_parallel(
        self,
        stories: Sequence[Scenario],
        jobs: int,
        child_args: Sequence[str],
        say: Callable[[str, str], None],
        controls: Sequence[str | None] = (None,),
    ) -> list[ScenarioReport]:
        """Each story in its own `kfs run` process (``child_args`` name the provider),
        once per entry of ``controls`` (None: the story itself), ``jobs`` at a time;
        ``say(key, line)`` gets their output. Every report that was written is
        kept, also when interrupted."""
        self.provider.up()  # once, before the children; they leave it up
        self.report_dir.mkdir(parents=True, exist_ok=True)
        runs = [(s, c) for s in stories for c in controls]
        for s, c in runs:  # a stale report must never stand in for this run's
            report_path(self.report_dir, s.id, c).unlink(missing_ok=True)
        finished: dict[str, int | None] = {}
        found: list[ScenarioReport] = []

        try:
            for job in parallel.run_all(
                list(stories),
                self.report_dir,
                jobs,
                [*child_args, "--keep-cluster"],
                say,
                controls=controls,
                nodes_share_cpus=self.provider.nodes_share_cpus,
            ):
                finished[run_key(job.scenario.id, job.control)] = job.returncode
        finally:
            for s, c in runs:
                report = _report_of(s, c, self.report_dir, finished)
                if report is not None:
                    found.append(report)
            self.reports.extend(found)
        return found


def _report_of(
    s: Scenario, control: str | None, report_dir: Path, finished: dict[str, int | None]
) -> ScenarioReport | None:
    path = report_path(report_dir, s.id, control)
    if path.exists():
        return ScenarioReport.from_json(json.loads(path.read_text()))
    key = run_key(s.id, control)
    if key not in finished:
        return None  # never started (interrupted before its turn)
    return ScenarioReport(
        scenario=s.id,
        provider="",
        started_at="",
        verdict="error",
        control=control,
        error=f"its process exited with code {finished[key]} before writing a report",
    )
