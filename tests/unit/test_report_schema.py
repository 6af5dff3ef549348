"""The report's JSON Schema, as shipped in the package, holds for real reports:
two written by `kfs run` on the local cluster (fixtures/reports/) and one of
each verdict written by the runner with the stub provider."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.reporting.model import (
    SCHEMA_FILE,
    SCHEMA_VERSION,
    ScenarioReport,
    kfs_version,
    write_json,
)
from failure_stories.run.runner import Runner

FIXTURES = Path(__file__).parent / "fixtures" / "reports"

STEPS = """
def steady_state(ctx):
    return {{"errors": 0}}

def inject(ctx):
    {inject}

def symptom(ctx):
    ctx.record("errors", {symptom})
    return {{"errors": {symptom}}}

def verify(ctx):
    return {{"errors": {verify}, "errors_ci_low": {low}, "errors_ci_high": {high}}}
"""


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    text = (resources.files("failure_stories.reporting") / SCHEMA_FILE).read_text()
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_reports_of_real_runs_follow_the_schema(validator: Any, path: Path) -> None:
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert _errors(validator, data) == []
    # and read back into the model unchanged
    assert ScenarioReport.from_json(data).to_json() == data


@pytest.mark.parametrize(
    ("verdict", "params"),
    [
        ("passed", {"symptom": 9, "verify": 0, "inject": "pass"}),
        ("not-reproduced", {"symptom": 2, "verify": 0, "inject": "pass"}),
        ("not-fixed", {"symptom": 9, "verify": 7, "inject": "pass"}),
        ("undecided", {"symptom": 9, "verify": 1, "low": 0, "high": 3, "inject": "pass"}),
        ("error", {"symptom": 9, "verify": 0, "inject": "raise RuntimeError('boom')"}),
    ],
)
def test_every_verdict_the_runner_writes_follows_the_schema(
    validator: Any, make_scenario: Any, provider: Any, tmp_path: Path, verdict: str, params: Any
) -> None:
    folder = make_scenario(STEPS.format(**({"low": 0, "high": 0} | params)))
    report = Runner(provider, tmp_path / "r").run(scenarios.get("test-story", folder.parent))
    assert report.verdict == verdict
    data = json.loads(write_json(report, tmp_path / "r").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["kfs_version"] == kfs_version() != "unknown"
    assert _errors(validator, data) == []


def test_the_schema_refuses_what_a_reader_could_not_trust(validator: Any) -> None:
    good = json.loads((FIXTURES / "moonlight-anti-affinity.json").read_text())
    unversioned = {k: v for k, v in good.items() if k != "schema_version"}
    assert _errors(validator, unversioned) == [": 'schema_version' is a required property"]
    renamed = good | {"verdikt": "passed"}
    assert (
        "Additional properties are not allowed ('verdikt' was unexpected)"
        in _errors(validator, renamed)[0]
    )
    bad_verdict = good | {"verdict": "fine"}
    assert _errors(validator, bad_verdict)[0].startswith("verdict: 'fine' is not one of")
    judged = json.loads(json.dumps(good))
    symptom = next(p for p in judged["phases"] if p["name"] == "symptom")
    name = next(iter(symptom["measurements"]))
    del symptom["measurements"][name]["ok"]  # a threshold without its judgement
    assert _errors(validator, judged)


def test_a_control_runs_report_follows_the_schema(
    validator: Any, make_scenario: Any, provider: Any, tmp_path: Path
) -> None:
    folder = make_scenario(STEPS.format(symptom=9, verify=7, low=0, high=0, inject="pass"))
    runner = Runner(provider, tmp_path / "r", control="no-fix")
    report = runner.run(scenarios.get("test-story", folder.parent))
    assert (report.verdict, report.as_expected) == ("not-fixed", True)
    data = json.loads(write_json(report, tmp_path / "r").read_text())
    assert data["control"] == "no-fix" and data["phases"][4]["withheld"] == "no-fix"
    assert _errors(validator, data) == []
