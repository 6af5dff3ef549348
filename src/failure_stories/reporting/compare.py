"""Two report directories side by side: what a platform change did to each story.

A passing verdict says the fix still works; the margin says by how much. For
each judged measurement the margin is its distance from the threshold on the
good side (``>= 3`` at 3.2 leaves 0.2; ``<= 0.02`` at 0.005 leaves 0.015), so a
fix that still passes but has lost most of its room shows before it fails.
A story regressed when its baseline passed and the candidate did not (or did
not run it); a negative control, when it no longer ends as it must. That, and
only that, makes `kfs report --compare` exit non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from failure_stories.contract.scenario import Threshold
from failure_stories.core.errors import ScenarioDefinitionError
from failure_stories.reporting.model import MeasurementResult, ScenarioReport


def run_key(report: ScenarioReport) -> str:
    """What a run is matched by across the two directories: the story's id, or
    ``<id>--<control>`` for a negative control's run (the controls branch gives
    reports a ``control``; without it every run is the story's own)."""
    control = getattr(report, "control", None)
    return f"{report.scenario}--{control}" if control else report.scenario


def expected_verdict(report: ScenarioReport | None) -> str:
    """The verdict a run must end with: passed for a story, the control's own
    (not-reproduced, not-fixed) for a negative control."""
    return str(getattr(report, "expected_verdict", "passed")) if report else "passed"


def margin(value: float, threshold: str | None) -> float | None:
    """How far ``value`` is from failing ``threshold``: positive while it holds
    with room, 0 at the edge, negative past it; None if it is not judged."""
    if threshold is None:
        return None
    try:
        t = Threshold.parse(threshold)
    except ScenarioDefinitionError:
        return None  # a report written by another version: shown, not judged
    if t.op in (">=", ">"):
        return value - t.value
    if t.op in ("<=", "<"):
        return t.value - value
    return -abs(value - t.value) or 0.0  # == holds at 0 exactly (never "-0")


@dataclass(frozen=True)
class MeasurementChange:
    phase: str
    name: str
    before: MeasurementResult | None
    after: MeasurementResult | None

    @property
    def threshold(self) -> str | None:
        for m in (self.after, self.before):
            if m is not None and m.threshold is not None:
                return m.threshold
        return None

    @property
    def margins(self) -> tuple[float | None, float | None]:
        return (
            margin(self.before.value, self.before.threshold) if self.before else None,
            margin(self.after.value, self.after.threshold) if self.after else None,
        )

    @property
    def lost_margin(self) -> bool:
        """The candidate has less room to its threshold than the baseline had."""
        before, after = self.margins
        return before is not None and after is not None and after < before

    def describe(self, scenario: str) -> str:
        """'buffer-cpu-throttling verify latency_improvement_factor 6 -> 3.2,
        threshold >= 3, margin 3 -> 0.2'"""

        def num(m: MeasurementResult | None) -> str:
            return "-" if m is None else f"{m.value:g}"

        def num_margin(x: float | None) -> str:
            return "-" if x is None else f"{x:.3g}"

        line = f"{scenario} {self.phase} {self.name} {num(self.before)} -> {num(self.after)}"
        if self.threshold is not None:
            before, after = self.margins
            line += f", threshold {self.threshold}, margin {num_margin(before)} -> "
            line += num_margin(after)
        if (
            self.before is not None
            and self.after is not None
            and self.before.threshold != self.after.threshold
        ):
            line += f" (threshold was {self.before.threshold})"
        return line


@dataclass(frozen=True)
class StoryChange:
    scenario: str
    before: ScenarioReport | None
    after: ScenarioReport | None
    measurements: tuple[MeasurementChange, ...] = field(default=())

    @property
    def verdicts(self) -> tuple[str, str]:
        return (
            self.before.verdict if self.before else "absent",
            self.after.verdict if self.after else "absent",
        )

    @property
    def expected(self) -> str:
        return expected_verdict(self.after or self.before)

    @property
    def regressed(self) -> bool:
        before, after = self.verdicts
        return before == self.expected and after != self.expected

    @property
    def improved(self) -> bool:
        before, after = self.verdicts
        return before not in (self.expected, "absent") and after == self.expected

    @property
    def status(self) -> str:
        if self.regressed:
            return "regressed"
        if self.improved:
            return "fixed"
        before, after = self.verdicts
        if before == "absent":
            return "new"
        if before != after:
            return "changed"
        return "unchanged"

    def describe(self) -> str:
        before, after = self.verdicts
        if before == after:
            return f"{self.scenario}: {after} (unchanged)"
        return f"{self.scenario}: {before} -> {after} ({self.status})"


def _judged(report: ScenarioReport | None) -> dict[tuple[str, str], MeasurementResult]:
    if report is None:
        return {}
    return {
        (p.name, name): m
        for p in report.phases
        for name, m in p.measurements.items()
        if m.threshold is not None
    }


def compare_story(
    scenario: str, before: ScenarioReport | None, after: ScenarioReport | None
) -> StoryChange:
    old, new = _judged(before), _judged(after)
    keys = list(old) + [k for k in new if k not in old]
    return StoryChange(
        scenario,
        before,
        after,
        tuple(MeasurementChange(ph, n, old.get((ph, n)), new.get((ph, n))) for ph, n in keys),
    )


@dataclass(frozen=True)
class Comparison:
    baseline: str
    candidate: str
    stories: tuple[StoryChange, ...]

    @property
    def regressed(self) -> list[StoryChange]:
        return [s for s in self.stories if s.regressed]

    def lines(self) -> list[str]:
        out: list[str] = []
        for story in self.stories:
            out.append(story.describe())
            out += [f"  {m.describe(story.scenario)}" for m in story.measurements]
        n = len(self.regressed)
        out.append(
            f"{n} of {len(self.stories)} runs regressed"
            if n
            else f"no run regressed ({len(self.stories)} compared)"
        )
        return out


def compare(
    baseline: list[ScenarioReport],
    candidate: list[ScenarioReport],
    baseline_name: str = "baseline",
    candidate_name: str = "candidate",
) -> Comparison:
    """Per story in either set (the baseline's order, then new ones), its verdict
    change and each judged measurement's change against its threshold."""
    old = {run_key(r): r for r in baseline}
    new = {run_key(r): r for r in candidate}
    ids = list(old) + [i for i in new if i not in old]
    return Comparison(
        baseline_name,
        candidate_name,
        tuple(compare_story(i, old.get(i), new.get(i)) for i in ids),
    )
