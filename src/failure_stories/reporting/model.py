"""Run results and their one format: JSON per scenario, JUnit XML derived from it.

Every JSON report carries ``schema_version`` (raised when a key changes meaning
or goes away; new optional keys keep it) and the ``kfs_version`` that wrote it.
``report.schema.json`` beside this module is its JSON Schema, shipped with the
package (``importlib.resources.files("failure_stories.reporting")``).
"""

from __future__ import annotations

import importlib.metadata
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from failure_stories.contract.controls import CONTROLS, expected_verdict, run_key
from failure_stories.core import atomic

# undecided: a check's confidence interval still spanned its threshold when the
# window reached its maximum, so neither verdict would be honest (run it again on
# a quieter node, or give it more CPUs).
VERDICTS = ("passed", "not-reproduced", "not-fixed", "undecided", "error")
SCHEMA_VERSION = 1
SCHEMA_FILE = "report.schema.json"


def kfs_version() -> str:
    """The installed package's version ("unknown" for sources run uninstalled)."""
    try:
        return importlib.metadata.version("kube-failure-stories")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class MeasurementResult:
    value: float
    threshold: str | None = None
    ok: bool | None = None  # None when the measurement is only reported
    # Its confidence interval (from the step's <name>_ci_low/_ci_high) spans the
    # threshold: ``ok`` then only says on which side the point estimate fell.
    undecided: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value}
        if self.threshold is not None:
            out["threshold"] = self.threshold
            out["ok"] = self.ok
        if self.undecided:
            out["undecided"] = True
        return out


@dataclass
class PhaseResult:
    name: str
    ok: bool = True
    seconds: float = 0.0
    measurements: dict[str, MeasurementResult] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False  # not reached because an earlier phase decided the verdict
    withheld: str | None = None  # the control that did not run this phase
    refused: str | None = None  # why the platform refused the mitigation (not-fixed)
    undecided: str | None = None  # which checks' intervals spanned their thresholds
    # When the story's event ran in this phase: started_at (seconds since the run
    # started) and seconds.
    event: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "measurements": {k: m.to_json() for k, m in self.measurements.items()},
        }
        for key in ("error", "skipped", "withheld", "refused", "undecided", "event"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass
class ScenarioReport:
    scenario: str
    provider: str
    started_at: str
    verdict: str = "error"
    seconds: float = 0.0
    phases: list[PhaseResult] = field(default_factory=list)
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    # Time series for plots: name -> list of [seconds since start, value].
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    artifacts: str | None = None
    kfs_version: str = field(default_factory=kfs_version)  # the kfs that wrote it
    # A negative control (contract.controls): the part of the story it withheld.
    control: str | None = None
    # Why the verdict is what it is when no threshold says it (a refused mitigation).
    reason: str | None = None
    # The controls run beside this story run in the same session: name -> summary.
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)

    def phase(self, name: str) -> PhaseResult | None:
        return next((p for p in self.phases if p.name == name), None)

    @property
    def key(self) -> str:
        """``<id>`` for the story run, ``<id>--<control>`` for a control."""
        return run_key(self.scenario, self.control)

    @property
    def expected_verdict(self) -> str:
        return expected_verdict(self.control)

    @property
    def as_expected(self) -> bool:
        """The story passed, or the control ended with the verdict it must end with."""
        return self.verdict == self.expected_verdict

    def control_summary(self) -> dict[str, Any]:
        """What the story run's report says about this control run."""
        assert self.control is not None
        return {
            "verdict": self.verdict,
            "expected": self.expected_verdict,
            "as_expected": self.as_expected,
            "withheld": CONTROLS[self.control].withholds,
            "seconds": round(self.seconds, 3),
            "report": report_path(Path("."), self.scenario, self.control).name,
        }

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kfs_version": self.kfs_version,
            "scenario": self.scenario,
            "verdict": self.verdict,
            "provider": self.provider,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 3),
            "phases": [p.to_json() for p in self.phases],
        }
        if self.control:
            out["control"] = self.control
            out["expected_verdict"] = self.expected_verdict
            out["as_expected"] = self.as_expected
        for key in ("error", "reason", "artifacts"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.info:
            out["info"] = self.info
        if self.controls:
            out["controls"] = self.controls
        if self.series:
            out["series"] = self.series
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioReport:
        phases = [
            PhaseResult(
                name=p["name"],
                ok=p["ok"],
                seconds=p["seconds"],
                measurements={
                    k: MeasurementResult(
                        m["value"], m.get("threshold"), m.get("ok"), m.get("undecided", False)
                    )
                    for k, m in p.get("measurements", {}).items()
                },
                error=p.get("error"),
                skipped=p.get("skipped", False),
                withheld=p.get("withheld"),
                refused=p.get("refused"),
                undecided=p.get("undecided"),
                event=p.get("event"),
            )
            for p in data["phases"]
        ]
        return cls(
            scenario=data["scenario"],
            provider=data["provider"],
            started_at=data["started_at"],
            verdict=data["verdict"],
            seconds=data["seconds"],
            phases=phases,
            error=data.get("error"),
            info=data.get("info", {}),
            series=data.get("series", {}),
            artifacts=data.get("artifacts"),
            kfs_version=data.get("kfs_version", "unknown"),  # reports older than the key
            control=data.get("control"),
            reason=data.get("reason"),
            controls=data.get("controls", {}),
        )


def report_path(report_dir: Path, scenario_id: str, control: str | None = None) -> Path:
    return report_dir / f"{run_key(scenario_id, control)}.json"


def attach_controls(reports: list[ScenarioReport]) -> list[ScenarioReport]:
    """Give each story run the summaries of the controls of the same story among
    ``reports``; return the story runs that changed."""
    changed = []
    for story in (r for r in reports if r.control is None):
        found = {
            r.control: r.control_summary()
            for r in reports
            if r.scenario == story.scenario and r.control is not None
        }
        if found and found != story.controls:
            story.controls = found
            changed.append(story)
    return changed


def write_json(report: ScenarioReport, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_path(report_dir, report.scenario, report.control)
    atomic.write_text(path, json.dumps(report.to_json(), indent=2) + "\n")
    return path


def read_reports(report_dir: Path) -> list[ScenarioReport]:
    return [
        ScenarioReport.from_json(json.loads(p.read_text()))
        for p in sorted(report_dir.glob("*.json"))
        if not p.name.startswith("bench")
    ]


def _describe_failure(report: ScenarioReport, phase: PhaseResult) -> str:
    if phase.error:
        return phase.error
    if phase.refused:
        return f"verdict {report.verdict}: {phase.refused}"
    bad = [
        f"{name}={m.value:g} (wanted {m.threshold})"
        for name, m in phase.measurements.items()
        if m.ok is False
    ]
    return f"verdict {report.verdict}: " + "; ".join(bad)


def _case_outcome(report: ScenarioReport, phase: PhaseResult) -> tuple[str, str] | None:
    """The JUnit element (tag, message) a phase's case carries, if any. In a
    control run, thresholds that fail are what the control looks for: its own
    "control" case says whether the run ended as it must."""
    if phase.skipped:
        why = f"withheld by the {phase.withheld} control" if phase.withheld else "not reached"
        return "skipped", phase.error or why
    if phase.error:
        return "error", phase.error
    if phase.undecided:  # neither a pass nor a failure: the window could not tell
        return "error", f"undecided: {phase.undecided}"
    if not phase.ok and report.control is None:
        return "failure", _describe_failure(report, phase)
    return None


def junit_xml(reports: list[ScenarioReport]) -> str:
    """One testsuite per run (a story's, or one of its controls'), one testcase per
    phase, so a failure names the phase; a control run adds a "control" case."""
    suites = ET.Element("testsuites")
    for report in reports:
        outcomes = [_case_outcome(report, p) for p in report.phases]
        control_failed = report.control is not None and not report.as_expected
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=report.key,
            tests=str(len(report.phases) + (report.control is not None)),
            failures=str(sum(1 for o in outcomes if o and o[0] == "failure") + control_failed),
            errors=str(sum(1 for o in outcomes if o and o[0] == "error")),
            skipped=str(sum(1 for o in outcomes if o and o[0] == "skipped")),
            time=f"{report.seconds:.3f}",
            timestamp=report.started_at,
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="verdict", value=report.verdict)
        if report.control:
            ET.SubElement(props, "property", name="control", value=report.control)
            ET.SubElement(props, "property", name="expected", value=report.expected_verdict)
        ET.SubElement(props, "property", name="provider", value=report.provider)
        for phase, outcome in zip(report.phases, outcomes, strict=True):
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"kfs.{report.key}",
                name=phase.name,
                time=f"{phase.seconds:.3f}",
            )
            if outcome is not None:
                ET.SubElement(case, outcome[0], message=outcome[1])
            if phase.measurements:
                out = ET.SubElement(case, "system-out")
                out.text = "\n".join(
                    f"{k} = {m.value:g}" + (f" (threshold {m.threshold})" if m.threshold else "")
                    for k, m in phase.measurements.items()
                )
        if report.control is not None:
            case = ET.SubElement(
                suite, "testcase", classname=f"kfs.{report.key}", name="control", time="0"
            )
            if control_failed:
                ET.SubElement(
                    case,
                    "failure",
                    message=f"the {report.control} control ended {report.verdict}, "
                    f"it must end {report.expected_verdict}"
                    + (f": {report.error}" if report.error else ""),
                )
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(reports: list[ScenarioReport], report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "junit.xml"
    path.write_text(junit_xml(reports))
    return path
