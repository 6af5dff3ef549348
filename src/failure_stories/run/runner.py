"""Runs a scenario's phases and decides its verdict from measurements and thresholds."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from failure_stories.contract.controls import CONTROLS, expected_verdict
from failure_stories.contract.scenario import PHASES, STEP_PHASES, Scenario
from failure_stories.core import timing
from failure_stories.core.errors import (
    Interrupted,
    KfsError,
    ProviderError,
    ScenarioDefinitionError,
)
from failure_stories.providers.capabilities import lacking
from failure_stories.providers.kube import namespace_name, refusal
from failure_stories.reporting.model import (
    MeasurementResult,
    PhaseResult,
    ScenarioReport,
    write_json,
)
from failure_stories.run.context import Cleanup, RunContext
from failure_stories.run.events import Event, EventKind

if TYPE_CHECKING:
    from failure_stories.host.locks import LockBackend
    from failure_stories.providers.base import Provider

# A failed check in these phases means the story itself did or did not hold;
# anywhere else it means the environment was not healthy enough to judge.
_VERDICT_ON_FAILED_CHECK = {"symptom": "not-reproduced", "verify": "not-fixed"}
# Windows that must start the story's event (steps.expose), when it has one.
_MEASURING = ("symptom", "verify")
# The names a step gives a statistic's confidence interval: <name>_ci_low/_ci_high.
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"


Listener = Callable[[Event], None]


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into Interrupted so `finally` blocks (teardown) run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[list[str]]:
    """Keep teardown itself from being interrupted; remember the signal for later."""
    seen: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        seen.append(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _judge(
    phase: str, values: Mapping[str, float], scenario: Scenario
) -> dict[str, MeasurementResult]:
    checks = scenario.meta.checks_for(phase)
    missing = [name for name in checks if name not in values]
    if missing:
        raise ScenarioDefinitionError(
            f"{scenario.id}: phase {phase} did not report {', '.join(missing)}"
        )
    out: dict[str, MeasurementResult] = {}
    for name, value in values.items():
        threshold = checks.get(name)
        if threshold is None:
            out[name] = MeasurementResult(value)
            continue
        result = MeasurementResult(value, str(threshold), threshold.holds(value))
        # A step that estimates a statistic reports its confidence interval
        # beside it; one that spans the threshold leaves the check undecided,
        # whichever side the point estimate fell on.
        low, high = values.get(f"{name}{CI_LOW}"), values.get(f"{name}{CI_HIGH}")
        if low is not None and high is not None:
            result.undecided = threshold.holds(low) != threshold.holds(high)
        out[name] = result
    return out


def _undecided(measurements: Mapping[str, MeasurementResult]) -> str | None:
    """Why a phase is undecided: no check failed for sure, and some interval
    still spans its threshold (None when the phase is decided)."""
    if any(m.ok is False and not m.undecided for m in measurements.values()):
        return None
    spans = [
        f"{name} {m.value:g}, interval [{measurements[name + CI_LOW].value:g}, "
        f"{measurements[name + CI_HIGH].value:g}] spans {m.threshold}"
        for name, m in measurements.items()
        if m.undecided
    ]
    if not spans:
        return None
    ended = " when its window ended: too noisy to judge; run it again on a quieter node"
    return "; ".join(spans) + ended


class Runner:
    def __init__(
        self,
        provider: Provider,
        report_dir: Path,
        listener: Listener | None = None,
        hold_fault: Callable[[RunContext], None] | None = None,
        namespace: str | None = None,
        namespace_labels: Mapping[str, str] | None = None,
        control: str | None = None,
    ) -> None:
        self.provider = provider
        # A negative control withholds one phase (contract.controls).
        if control is not None and control not in CONTROLS:
            raise ScenarioDefinitionError(
                f"unknown control {control!r}: choose {', '.join(CONTROLS)}"
            )
        self.control = control
        # The run's namespace: generated unless given (it must not exist yet);
        # extra labels let an owner (a GameDay) find what its runs created.
        self.namespace = namespace
        self.namespace_labels = dict(namespace_labels or {})
        self.report_dir = report_dir
        self.listener = listener or (lambda _e: None)
        # Called once the symptom is proven and before the mitigation: a game day
        # holds the fault here while people investigate it, with the symptom's
        # event still going (a failed node stays down) unless its window ended it.
        self.hold_fault = hold_fault

    def _emit(self, event: Event) -> None:
        self.listener(event)

    def _enter(self, cm: contextlib.AbstractContextManager[None]) -> None:
        self._stack.enter_context(cm)

    def run(self, scenario: Scenario) -> ScenarioReport:
        """Run every phase; teardown always runs; Interrupted is re-raised after it."""
        with contextlib.ExitStack() as self._stack:
            return self._run(scenario)

    def _run(self, scenario: Scenario) -> ScenarioReport:
        report = ScenarioReport(
            scenario=scenario.id,
            provider=self.provider.name,
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            control=self.control,
        )
        t0 = time.monotonic()
        timing.LEDGER.reset()
        ctx: RunContext | None = None
        interrupted: Interrupted | None = None
        verdict = "error"
        try:
            with interrupts_raise():
                try:
                    ctx = self._prepare(scenario, report)
                    self._enter_run_scope(scenario, ctx)
                    verdict = self._run_phases(scenario, ctx, report)
                except Interrupted as exc:
                    interrupted = exc
                    report.error = str(exc)
                    if report.phases and report.phases[-1].ok:
                        report.phases[-1].ok = False
                        report.phases[-1].error = str(exc)
                except Exception as exc:
                    report.error = _one_line(exc)
                    if not report.phases:  # the cluster, namespace or node access failed
                        report.phases.append(PhaseResult("setup", ok=False, error=report.error))
        except Interrupted as exc:  # a signal between the inner handler and here
            interrupted = exc
            report.error = str(exc)
        with interrupts_deferred() as late:
            if ctx is not None and verdict != expected_verdict(self.control):
                self._collect_artifacts(ctx, report)
            # Framework time up to teardown, by category (teardown has its own phase time).
            report.info["framework_seconds"] = timing.LEDGER.snapshot()
            teardown = self._teardown(scenario, ctx)
            report.phases.append(teardown)
            # A run that ended as it must, but left something behind, is no pass.
            if not teardown.ok and verdict == expected_verdict(self.control):
                verdict = "error"
                report.error = teardown.error
            done = {p.name for p in report.phases}
            for name in PHASES:
                if name not in done:
                    report.phases.insert(
                        PHASES.index(name),
                        PhaseResult(name, ok=False, skipped=True, error="not reached"),
                    )
            report.verdict = verdict if interrupted is None else "error"
            report.seconds = time.monotonic() - t0
            if ctx is not None:
                report.series = ctx.series
                report.info.update(ctx.info)
            write_json(report, self.report_dir)
        if late and interrupted is None:
            interrupted = Interrupted(late[0])
        if interrupted is not None:
            raise interrupted
        return report

    def _prepare(self, scenario: Scenario, report: ScenarioReport) -> RunContext:
        missing = lacking(self.provider, scenario.meta.needs)
        if missing:
            raise ProviderError(
                f"the {self.provider.name} provider lacks {', '.join(missing)}, "
                f"which {scenario.id} needs: run it on another provider"
            )
        kube = self.provider.prepare(scenario)
        report.info.update(self.provider.info())
        self._hold_node_locks(scenario, report)
        # The run's lock before its namespace: `kfs cleanup` must never see the
        # namespace of a live run without its lock.
        namespace = self.namespace or namespace_name(scenario.id)
        self._enter(self.provider.locks().held(f"run-{namespace}", f"the lock of run {namespace}"))
        kube.create_namespace(scenario.id, labels=self.namespace_labels, name=namespace)
        self._emit(Event(EventKind.PREPARED, scenario.id, message=namespace))
        return RunContext(
            scenario=scenario,
            provider=self.provider,
            kube=kube,
            namespace=namespace,
            report_dir=self.report_dir,
            variables=self.provider.manifest_variables(),
            log=lambda msg: self._emit(Event(EventKind.LOG, scenario.id, message=msg)),
        )

    def _enter_run_scope(self, scenario: Scenario, ctx: RunContext) -> None:
        """The provider's per-run node access; closed by the last teardown action,
        after the story's own undo steps (which still reach the nodes through it)
        and before the namespace goes, so its failures are teardown's to report."""
        scope = self.provider.run_scope(ctx.namespace, scenario, ctx.log)
        scope.__enter__()

        def close() -> None:
            scope.__exit__(None, None, None)

        ctx.cleanups.insert(0, Cleanup(f"{self.provider.name} node access", close))

    def _hold_node_locks(self, scenario: Scenario, report: ScenarioReport) -> None:
        """Node lock (shared, or exclusive for timing stories), then the named
        resources in sorted order: one global order, so runs never deadlock.
        The time spent waiting is reported, apart from the run's own time."""
        node = scenario.meta.node
        alone = node.exclusive(self.provider.nodes_share_cpus)
        wanted: list[tuple[str, bool, str]] = []
        if node.shared:
            what = (
                "every other run on the node to end"
                if alone
                else ("a run that needs the node to itself to end")
            )
            wanted.append(("node", not alone, what))
        wanted += [(f"node-{r}", False, f"another run using {r} to end") for r in node.locks]
        start = time.monotonic()
        locks = self.provider.locks()
        with timing.span(timing.LOCK_WAIT, opaque=True):
            self._hold_locks(scenario, wanted, locks)
        report.info["lock_wait_seconds"] = round(time.monotonic() - start, 1)

    def _hold_locks(
        self, scenario: Scenario, wanted: list[tuple[str, bool, str]], locks: LockBackend
    ) -> None:
        for name, shared, what in wanted:
            self._enter(
                locks.held(
                    name,
                    what,
                    shared=shared,
                    on_wait=lambda m: self._emit(Event(EventKind.LOG, scenario.id, message=m)),
                )
            )

    def _run_phases(self, scenario: Scenario, ctx: RunContext, report: ScenarioReport) -> str:
        report.info["namespace"] = ctx.namespace
        withheld = CONTROLS[self.control].withholds if self.control else None
        for phase in STEP_PHASES:
            if phase == withheld:
                report.phases.append(
                    PhaseResult(phase, ok=True, skipped=True, withheld=self.control)
                )
                self._emit(Event(EventKind.LOG, scenario.id, message=f"{phase}: withheld"))
                continue
            result = PhaseResult(phase)
            report.phases.append(result)  # recorded even if a signal cuts it short
            self._run_phase(scenario, ctx, result)
            if ctx.exposures and not result.ok:
                ctx.end_exposures()  # no hold follows a symptom that did not show
            if result.error:
                return "error"
            if result.refused:
                report.reason = f"the platform refused the mitigation: {result.refused}"
                return "not-fixed"
            if result.undecided:
                report.reason = result.undecided
                return "undecided"
            if not result.ok:
                return _VERDICT_ON_FAILED_CHECK.get(phase, "error")
            if phase == "symptom" and self.hold_fault is not None:
                try:
                    self.hold_fault(ctx)
                finally:
                    ctx.end_exposures()  # the event a drill kept live ends with the hold
        return "passed"

    def _run_phase(self, scenario: Scenario, ctx: RunContext, result: PhaseResult) -> None:
        phase = result.name
        ctx.phase = phase
        self._emit(Event(EventKind.PHASE_START, scenario.id, phase))
        start = time.monotonic()
        try:
            fn = scenario.step(phase)
            try:
                returned: Any = fn(ctx) if fn else None
            except BaseException:
                # The event ends with its window, also a failed one (best effort:
                # teardown's undo steps still run after this).
                with contextlib.suppress(Exception):
                    ctx.end_exposures()
                raise
            held = phase == "symptom" and self.hold_fault is not None
            events = [e.window() for e in ctx.exposures] if held else ctx.end_exposures()
            if events:
                result.event = events[0]
            elif phase in _MEASURING and scenario.expose_step() is not None:
                raise ScenarioDefinitionError(
                    f"{scenario.id}: {phase} never started the story's event: "
                    "call ctx.expose() in the measuring window"
                )
            values = ctx.take_measurements()
            if isinstance(returned, Mapping):
                values.update({k: float(v) for k, v in returned.items()})
            elif returned is not None:
                raise ScenarioDefinitionError(
                    f"{scenario.id}: step {phase} returned {type(returned).__name__}; "
                    "return a mapping of measurements or None"
                )
            result.measurements = _judge(phase, values, scenario)
            result.undecided = _undecided(result.measurements)
            result.ok = result.undecided is None and all(
                m.ok is not False for m in result.measurements.values()
            )
        except Interrupted as exc:
            result.ok = False
            result.error = str(exc)
            result.seconds = time.monotonic() - start
            self._emit(Event(EventKind.PHASE_END, scenario.id, phase, result=result))
            raise
        except Exception as exc:
            result.ok = False
            refused = refusal(exc) if phase == "mitigate" else None
            if refused is not None:
                # The user's platform does not let the documented fix happen: a
                # verdict about the platform (not-fixed), not trouble with kfs.
                result.refused = " ".join(refused.split())[:500]
            else:
                result.error = _one_line(exc)
            ctx.state.setdefault("tracebacks", []).append(traceback.format_exc())
        result.seconds = time.monotonic() - start
        self._emit(Event(EventKind.PHASE_END, scenario.id, phase, result=result))

    def _teardown(self, scenario: Scenario, ctx: RunContext | None) -> PhaseResult:
        self._emit(Event(EventKind.PHASE_START, scenario.id, "teardown"))
        result = PhaseResult("teardown")
        start = time.monotonic()
        errors: list[str] = []
        if ctx is not None:
            ctx.phase = "teardown"
            if ctx.exposures:  # interrupted while a drill held the event
                try:
                    ctx.end_exposures()
                except Exception as exc:
                    errors.append(f"end the story's event: {_one_line(exc)}")
            fn = scenario.step("teardown")
            if fn is not None:
                ctx.defer("scenario teardown step", lambda: fn(ctx))
            for cleanup in reversed(ctx.cleanups):
                try:
                    cleanup.fn()
                except Exception as exc:
                    errors.append(f"{cleanup.what}: {_one_line(exc)}")
            try:
                ctx.kube.delete_namespace(ctx.namespace)
            except Exception as exc:
                errors.append(f"delete namespace {ctx.namespace}: {_one_line(exc)}")
        if errors:
            result.ok = False
            result.error = "teardown left something behind: " + "; ".join(errors)
        result.seconds = time.monotonic() - start
        self._emit(Event(EventKind.PHASE_END, scenario.id, "teardown", result=result))
        return result

    def _collect_artifacts(self, ctx: RunContext, report: ScenarioReport) -> None:
        target = self.report_dir / f"{report.key}-artifacts"
        try:
            ctx.kube.dump_namespace(ctx.namespace, target)
            self.provider.export_logs(target / "cluster")
            tracebacks = ctx.state.get("tracebacks")
            if tracebacks:
                (target / "tracebacks.txt").write_text("\n".join(tracebacks))
            report.artifacts = str(target)
        except Exception as exc:
            report.info["artifacts_error"] = _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, KfsError):
        text = f"{type(exc).__name__}: {text}"
    return text[:500]
