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

from failure_stories.core import atomic

VERDICTS = ("passed", "not-reproduced", "not-fixed", "error")
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

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value}
        if self.threshold is not None:
            out["threshold"] = self.threshold
            out["ok"] = self.ok
        return out


@dataclass
class PhaseResult:
    name: str
    ok: bool = True
    seconds: float = 0.0
    measurements: dict[str, MeasurementResult] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False  # not reached because an earlier phase decided the verdict

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "measurements": {k: m.to_json() for k, m in self.measurements.items()},
        }
        if self.error:
            out["error"] = self.error
        if self.skipped:
            out["skipped"] = True
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

    def phase(self, name: str) -> PhaseResult | None:
        return next((p for p in self.phases if p.name == name), None)

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
        for key in ("error", "artifacts"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.info:
            out["info"] = self.info
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
                    k: MeasurementResult(m["value"], m.get("threshold"), m.get("ok"))
                    for k, m in p.get("measurements", {}).items()
                },
                error=p.get("error"),
                skipped=p.get("skipped", False),
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
        )


def report_path(report_dir: Path, scenario_id: str) -> Path:
    return report_dir / f"{scenario_id}.json"


def write_json(report: ScenarioReport, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_path(report_dir, report.scenario)
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
    bad = [
        f"{name}={m.value:g} (wanted {m.threshold})"
        for name, m in phase.measurements.items()
        if m.ok is False
    ]
    return f"verdict {report.verdict}: " + "; ".join(bad)


def junit_xml(reports: list[ScenarioReport]) -> str:
    """One testsuite per scenario, one testcase per phase, so a failure names the phase."""
    suites = ET.Element("testsuites")
    for report in reports:
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=report.scenario,
            tests=str(len(report.phases)),
            failures=str(sum(1 for p in report.phases if not p.ok and not p.error)),
            errors=str(sum(1 for p in report.phases if p.error)),
            skipped=str(sum(1 for p in report.phases if p.skipped)),
            time=f"{report.seconds:.3f}",
            timestamp=report.started_at,
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="verdict", value=report.verdict)
        ET.SubElement(props, "property", name="provider", value=report.provider)
        for phase in report.phases:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"kfs.{report.scenario}",
                name=phase.name,
                time=f"{phase.seconds:.3f}",
            )
            if phase.skipped:
                ET.SubElement(case, "skipped", message=phase.error or "not reached")
            elif phase.error:
                ET.SubElement(case, "error", message=phase.error)
            elif not phase.ok:
                ET.SubElement(case, "failure", message=_describe_failure(report, phase))
            if phase.measurements:
                out = ET.SubElement(case, "system-out")
                out.text = "\n".join(
                    f"{k} = {m.value:g}" + (f" (threshold {m.threshold})" if m.threshold else "")
                    for k, m in phase.measurements.items()
                )
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(reports: list[ScenarioReport], report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "junit.xml"
    path.write_text(junit_xml(reports))
    return path
