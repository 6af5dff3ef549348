"""Negative controls, the exposing event, and verdicts that tell "the fault did not
take hold" and "the platform refused the fix" from infrastructure errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from failure_stories.cli.main import cli
from failure_stories.contract import scenario as scenarios
from failure_stories.reporting.html import render
from failure_stories.reporting.model import attach_controls, junit_xml
from failure_stories.run.runner import Runner


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - the suite's own JUnit output, not untrusted


# The fault sets a flag the event turns into errors; the fix clears it. The event
# is a generator: it starts before its yield and ends after it.
STEPS = """
from pathlib import Path
from failure_stories import RefusedError, WaitTimeout, watch
LOG = Path({log!r})

def note(what):
    with LOG.open("a") as f:
        f.write(what + "\\n")

def setup(ctx):
    ctx.state["faulty"] = False

def steady_state(ctx):
    return {{"errors": 0}}

def inject(ctx):
    note("inject")
    ctx.state["faulty"] = True

def expose(ctx):
    note("event-start")
    ctx.state["errors"] = 9 if ctx.state["faulty"] else 0
    yield
    note("event-end")

def _window(ctx):
    {window}
    return {{"errors": ctx.state.pop("errors", -1)}}

def symptom(ctx):
    return _window(ctx)

def mitigate(ctx):
    note("mitigate")
    {mitigate}
    ctx.state["faulty"] = False

def verify(ctx):
    return _window(ctx)
"""

WINDOW = "ctx.expose()"


def run(
    make_scenario: Any,
    provider: Any,
    tmp_path: Path,
    control: str | None = None,
    window: str = WINDOW,
    mitigate: str = "pass",
) -> tuple[Any, list[str]]:
    log = tmp_path / "log.txt"
    folder = make_scenario(STEPS.format(log=str(log), window=window, mitigate=mitigate))
    story = scenarios.get("test-story", folder.parent)
    report = Runner(provider, tmp_path / "reports", control=control).run(story)
    return report, (log.read_text().split() if log.exists() else [])


def test_the_story_passes_with_its_event_in_both_windows(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path)
    assert report.verdict == "passed" and report.as_expected
    assert log == ["inject", "event-start", "event-end", "mitigate", "event-start", "event-end"]
    for phase in ("symptom", "verify"):
        event = report.phase(phase).event
        assert event is not None and event["seconds"] >= 0 and event["started_at"] >= 0


def test_no_fault_withholds_inject_and_ends_not_reproduced(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path, control="no-fault")
    assert report.verdict == "not-reproduced"
    assert report.as_expected and report.expected_verdict == "not-reproduced"
    inject = report.phase("inject")
    assert inject.skipped and inject.withheld == "no-fault" and inject.ok
    # The event still happened: the fault, not the event, is what was withheld.
    assert log == ["event-start", "event-end"]
    assert report.phase("symptom").measurements["errors"].value == 0
    data = json.loads((tmp_path / "reports" / "test-story--no-fault.json").read_text())
    assert data["control"] == "no-fault" and data["as_expected"] is True
    assert next(p for p in data["phases"] if p["name"] == "inject")["withheld"] == "no-fault"
    assert report.artifacts is None  # a control that ended as it must is no failure


def test_no_fix_withholds_mitigate_and_ends_not_fixed(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path, control="no-fix")
    assert report.verdict == "not-fixed" and report.as_expected
    assert "mitigate" not in log
    assert report.phase("mitigate").withheld == "no-fix"
    assert report.phase("verify").measurements["errors"].value == 9
    assert log.count("event-start") == log.count("event-end") == 2


def test_a_control_that_does_not_fail_is_not_as_expected(make_scenario, provider, tmp_path):
    # A story whose symptom does not depend on its fault proves nothing.
    folder = make_scenario(
        STEPS.format(log=str(tmp_path / "l"), window=WINDOW, mitigate="pass").replace(
            'ctx.state["errors"] = 9 if ctx.state["faulty"] else 0',
            'ctx.state["errors"] = 9 if ctx.phase == "symptom" else 0',
        )
    )
    story = scenarios.get("test-story", folder.parent)
    report = Runner(provider, tmp_path / "reports", control="no-fault").run(story)
    assert report.verdict == "passed"
    assert not report.as_expected
    assert report.artifacts is not None
    suite = parse(junit_xml([report])).find("testsuite")
    assert suite is not None and suite.get("name") == "test-story--no-fault"
    control = next(c for c in suite.iter("testcase") if c.get("name") == "control")
    failure = control.find("failure")
    assert failure is not None
    assert "ended passed, it must end not-reproduced" in str(failure.get("message"))


def test_the_runner_ends_an_event_the_window_left_running(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path, window="ctx.expose()  # no with")
    assert report.verdict == "passed"
    assert log.count("event-end") == 2


def test_the_event_ends_even_when_the_window_fails(make_scenario, provider, tmp_path):
    report, log = run(
        make_scenario, provider, tmp_path, window="ctx.expose(); raise RuntimeError('probe broke')"
    )
    assert report.verdict == "error"
    assert "probe broke" in report.phase("symptom").error
    assert log == ["inject", "event-start", "event-end"]


def test_a_window_that_never_starts_its_event_is_a_story_bug(make_scenario, provider, tmp_path):
    report, _ = run(make_scenario, provider, tmp_path, window="pass")
    assert report.verdict == "error"
    assert "symptom never started the story's event" in report.phase("symptom").error


def test_a_window_that_starts_its_event_twice_is_a_story_bug(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path, window="ctx.expose(); ctx.expose()")
    assert report.verdict == "error"
    assert "started its event twice" in report.phase("symptom").error
    assert log.count("event-start") == log.count("event-end") == 1


def test_an_effect_that_never_comes_is_measured_not_an_error(make_scenario, provider, tmp_path):
    # The window waits for its effect with watch(): at the deadline it measures what
    # it saw, so the verdict is about the story, not about a timeout.
    window = (
        "ctx.expose()\n"
        "    came = watch(lambda: False, every=0.05, within=0.3, what='an effect')\n"
        "    ctx.measure('effect_seen', 1 if came else 0)"
    )
    report, _ = run(make_scenario, provider, tmp_path, control="no-fault", window=window)
    assert report.verdict == "not-reproduced"
    symptom = report.phase("symptom")
    assert symptom.error is None
    assert symptom.measurements["effect_seen"].value == 0


def test_infrastructure_that_times_out_is_still_an_error_with_its_reason(
    make_scenario, provider, tmp_path
):
    window = "ctx.expose(); raise WaitTimeout('timed out after 60s waiting for pod web Ready')"
    report, _ = run(make_scenario, provider, tmp_path, window=window)
    assert report.verdict == "error"
    assert "waiting for pod web Ready" in report.phase("symptom").error


def api_refusal(status: int, message: str) -> str:
    body = json.dumps({"kind": "Status", "message": message})
    return (
        "from kubernetes.client.rest import ApiException\n"
        f"    exc = ApiException(status={status}, reason='refused')\n"
        f"    exc.body = {body!r}\n"
        "    raise exc"
    )


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, 'admission webhook "policy.example" denied the request: limits.cpu is required'),
        (403, 'deployments.apps "api" is forbidden: User "ci" cannot patch resource'),
        (422, 'Deployment.apps "api" is invalid: spec.template.spec.containers[0]'),
    ],
)
def test_a_mitigation_the_api_refuses_is_not_fixed_with_the_reason(
    make_scenario, provider, tmp_path, status, message
):
    report, _ = run(make_scenario, provider, tmp_path, mitigate=api_refusal(status, message))
    assert report.verdict == "not-fixed"
    assert report.reason == f"the platform refused the mitigation: {message}"
    mitigate = report.phase("mitigate")
    assert mitigate.refused == message and mitigate.error is None and not mitigate.ok
    assert report.phase("verify").skipped
    data = json.loads((tmp_path / "reports" / "test-story.json").read_text())
    assert data["verdict"] == "not-fixed" and data["reason"].endswith(message)
    failure = next(parse(junit_xml([report])).iter("failure"))
    assert failure.get("message") == f"verdict not-fixed: {message}"


def test_a_fix_the_platform_cannot_carry_out_is_not_fixed(make_scenario, provider, tmp_path):
    mitigate = "raise RefusedError('the agent kept the old nonMasqueradeCIDRs')"
    report, _ = run(make_scenario, provider, tmp_path, mitigate=mitigate)
    assert report.verdict == "not-fixed"
    assert report.reason.endswith("the agent kept the old nonMasqueradeCIDRs")


def test_other_failures_in_mitigate_stay_errors(make_scenario, provider, tmp_path):
    report, _ = run(make_scenario, provider, tmp_path, mitigate=api_refusal(500, "etcd down"))
    assert report.verdict == "error"
    assert report.reason is None
    assert report.phase("mitigate").error is not None


def test_a_refusal_outside_mitigate_is_an_error(make_scenario, provider, tmp_path):
    window = "ctx.expose(); raise RefusedError('pods are forbidden')"
    report, _ = run(make_scenario, provider, tmp_path, window=window)
    assert report.verdict == "error"
    assert "pods are forbidden" in report.phase("symptom").error


def test_reports_show_the_controls_beside_the_story(make_scenario, provider, tmp_path):
    folder = make_scenario(STEPS.format(log=str(tmp_path / "l"), window=WINDOW, mitigate="pass"))
    found = scenarios.get("test-story", folder.parent)
    story, fault, fix = (
        Runner(provider, tmp_path / "reports", control=c).run(found)
        for c in (None, "no-fault", "no-fix")
    )
    reports = [story, fault, fix]
    assert attach_controls(reports) == [story]
    assert story.controls["no-fault"]["verdict"] == "not-reproduced"
    assert story.controls["no-fix"] == {
        "verdict": "not-fixed",
        "expected": "not-fixed",
        "as_expected": True,
        "withheld": "mitigate",
        "seconds": round(fix.seconds, 3),
        "report": "test-story--no-fix.json",
    }
    assert story.to_json()["controls"] == story.controls
    page = render(reports)
    assert "no-fault control</th><th>no-fix control" in page
    assert "without the fault (no-fault control)" in page
    assert "without the fix (no-fix control)" in page
    assert page.count('<h2 id="test-story"') == 1  # one section per story, controls inside
    # A failed threshold in a control that ended as it must is no JUnit failure.
    suites = parse(junit_xml(reports))
    assert [s.get("failures") for s in suites.iter("testsuite")] == ["0", "0", "0"]


def test_an_unknown_control_is_one_usage_line():
    out = CliRunner().invoke(
        cli, ["run", "moonlight-anti-affinity", "--control", "nope"], prog_name="kfs"
    )
    assert out.exit_code == 2
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    assert "'nope' is not one of 'no-fault', 'no-fix'" in lines[0]
    assert "kfs run --help" in lines[0]


def test_control_and_with_controls_together_is_one_usage_line():
    out = CliRunner().invoke(
        cli,
        ["run", "moonlight-anti-affinity", "--control", "no-fix", "--with-controls"],
        prog_name="kfs",
    )
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "kfs: error: give --control or --with-controls, not both (see `kfs run --help`)"
    ]


def test_a_story_without_the_withheld_phase_is_refused(make_scenario, monkeypatch):
    folder = make_scenario(
        "def symptom(ctx):\n    return {'errors': 9}\n\n"
        "def verify(ctx):\n    return {'errors': 0}\n"
    )
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(folder.parent))
    out = CliRunner().invoke(cli, ["run", "test-story", "--control", "no-fault", "--dry-run"])
    assert out.exit_code == 2
    assert "withholds the inject phase, which test-story does not have" in out.output


def test_the_dry_run_of_a_control_says_what_it_withholds():
    out = CliRunner().invoke(
        cli, ["run", "moonlight-anti-affinity", "--control", "no-fix", "--dry-run"]
    )
    assert out.exit_code == 0, out.output
    assert "mitigate: withheld by the no-fix control" in out.output
    assert "the event: freeze the node agent" in out.output


def test_every_shipped_story_keeps_fault_event_and_measure_apart():
    """The shipped stories can run both controls: each has the phases they
    withhold, and a story with an event says what it is."""
    for story in scenarios.discover().values():
        for phase in ("inject", "mitigate"):
            assert story.step(phase) is not None, (story.id, phase)
        if story.expose_step() is not None:
            assert story.meta.event, story.id
            assert story.meta.plan_for("expose"), story.id


def test_a_drill_holds_the_symptoms_event_until_the_reveal(make_scenario, provider, tmp_path):
    """A game day investigates a live fault: the failed node stays down while held."""
    log = tmp_path / "log.txt"
    folder = make_scenario(STEPS.format(log=str(log), window=WINDOW, mitigate="pass"))
    story = scenarios.get("test-story", folder.parent)

    def hold(_ctx: Any) -> None:
        with log.open("a") as f:
            f.write("hold\n")

    report = Runner(provider, tmp_path / "reports", hold_fault=hold).run(story)
    assert report.verdict == "passed"
    assert log.read_text().split()[:5] == ["inject", "event-start", "hold", "event-end", "mitigate"]
