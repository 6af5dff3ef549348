"""`kfs report --compare`: two runs' reports, written by the real runner on the stub
provider, compared story by story against the thresholds' margins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from failure_stories.cli.main import cli
from failure_stories.contract import scenario as scenarios
from failure_stories.reporting.compare import compare, margin
from failure_stories.reporting.model import read_reports
from failure_stories.run.runner import Runner

# The story's numbers come from a file, so one story runs twice with other numbers,
# as one story does on two platforms.
STEPS = """
import json
from pathlib import Path
NUMBERS = Path({numbers!r})

def _n(key):
    return json.loads(NUMBERS.read_text())[key]

def steady_state(ctx):
    return {{"errors": 0}}

def symptom(ctx):
    return {{"errors": _n("symptom")}}

def verify(ctx):
    return {{"errors": _n("verify")}}
"""


@pytest.fixture
def run_story(make_scenario: Any, provider: Any, tmp_path: Path) -> Any:
    numbers = tmp_path / "numbers.json"
    folder = make_scenario(STEPS.format(numbers=str(numbers)))
    story = scenarios.get("test-story", folder.parent)

    def run(report_dir: Path, symptom: float, verify: float) -> Path:
        numbers.write_text(json.dumps({"symptom": symptom, "verify": verify}))
        Runner(provider, report_dir).run(story)
        return report_dir

    return run


def test_margins_are_the_room_left_on_the_good_side():
    assert margin(3.2, ">= 3") == pytest.approx(0.2)
    assert margin(0.005, "<= 0.02") == pytest.approx(0.015)
    assert margin(7, "> 0") == 7
    assert margin(0.5, "<= 0.02") == pytest.approx(-0.48)
    assert margin(1, "== 0") == -1
    assert str(margin(0, "== 0")) == "0.0"  # not -0.0
    assert margin(4, None) is None
    assert margin(4, "about 3") is None  # not a threshold this version reads


def test_a_fix_that_stopped_working_is_a_regression_and_exits_1(run_story, tmp_path):
    base = run_story(tmp_path / "base", symptom=9, verify=0)
    cand = run_story(tmp_path / "cand", symptom=9, verify=4)
    assert [r.verdict for r in read_reports(base) + read_reports(cand)] == ["passed", "not-fixed"]
    out = CliRunner().invoke(cli, ["report", "--compare", str(base), str(cand)])
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert "test-story: passed -> not-fixed (regressed)" in lines
    # verify's threshold is <= 1: 0 left a margin of 1, 4 is 3 past it.
    assert "  test-story verify errors 0 -> 4, threshold <= 1, margin 1 -> -3" in lines
    assert "  test-story symptom errors 9 -> 9, threshold >= 5, margin 4 -> 4" in lines
    assert "1 of 1 runs regressed" in lines
    page = (cand / "report.html").read_text()
    assert "Compared with " + str(base) in page
    assert "1 of 1 runs regressed" in page
    assert '<td class="bad">regressed</td>' in page


def test_a_pass_with_less_margin_is_shown_but_exits_0(run_story, tmp_path):
    base = run_story(tmp_path / "base", symptom=20, verify=0)
    cand = run_story(tmp_path / "cand", symptom=5, verify=1)
    out = CliRunner().invoke(cli, ["report", "--compare", str(base), str(cand)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "test-story: passed (unchanged)" in lines
    assert "  test-story symptom errors 20 -> 5, threshold >= 5, margin 15 -> 0" in lines
    assert "  test-story verify errors 0 -> 1, threshold <= 1, margin 1 -> 0" in lines
    assert "no run regressed (1 compared)" in lines
    result = compare(read_reports(base), read_reports(cand))
    assert [m.lost_margin for m in result.stories[0].measurements] == [False, True, True]
    page = (cand / "report.html").read_text()
    assert "no run regressed" in page
    assert '<td class="bad">0</td>' in page  # the margin now, marked as lost


def test_a_fix_that_works_again_is_not_a_regression(run_story, tmp_path):
    base = run_story(tmp_path / "base", symptom=9, verify=4)
    cand = run_story(tmp_path / "cand", symptom=9, verify=0)
    out = CliRunner().invoke(cli, ["report", "--compare", str(base), str(cand)])
    assert out.exit_code == 0, out.output
    assert "test-story: not-fixed -> passed (fixed)" in out.output.splitlines()


def test_a_story_the_candidate_did_not_run_is_a_regression(run_story, tmp_path):
    base = run_story(tmp_path / "base", symptom=9, verify=0)
    cand = tmp_path / "cand"
    cand.mkdir()
    other = json.loads((base / "test-story.json").read_text()) | {"scenario": "other-story"}
    (cand / "other-story.json").write_text(json.dumps(other))
    out = CliRunner().invoke(cli, ["report", "--compare", str(base), str(cand)])
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert "test-story: passed -> absent (regressed)" in lines
    assert "other-story: absent -> passed (new)" in lines


@pytest.mark.parametrize("which", ["baseline", "candidate"])
def test_a_directory_without_reports_is_one_usage_line(run_story, tmp_path, which):
    good = run_story(tmp_path / "good", symptom=9, verify=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(empty), str(good)] if which == "baseline" else [str(good), str(empty)]
    out = CliRunner().invoke(cli, ["report", "--compare", *args])
    assert out.exit_code == 2
    name = "BASELINE_DIR" if which == "baseline" else "CANDIDATE_DIR"
    assert f"no <id>.json reports in {name} {empty}: run `kfs run` first" in out.output
    assert "Traceback" not in out.output
