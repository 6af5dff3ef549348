"""The pytest plugin's own options, run in a throw-away pytest (pytester): a bad
provider is a usage error, the e2e marker is registered, and the existing
provider's guard refuses before any cluster is contacted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from failure_stories.providers.kube import Kube

pytest_plugins = ["pytester"]

# The plugin under test by module name, whether or not the installed entry point
# (named failure_stories) was loaded for the outer session.
PLUGIN = ("-p", "no:failure_stories", "-p", "failure_stories.testing.pytest_plugin")


def kubeconfig(path: Path, context: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    return path


RUNS_A_STORY = """
def test_story(kfs_run):
    kfs_run("any-story")
"""


def test_an_unknown_kfs_provider_is_a_usage_error_naming_the_choices(pytester):
    pytester.makepyfile("def test_nothing(): pass\n")
    result = pytester.runpytest(*PLUGIN, "--kfs-provider", "bogus")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--kfs-provider*invalid choice*'bogus'*local*kind*existing*"])


def test_the_e2e_marker_is_registered_for_strict_markers(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.e2e
        def test_marked():
            pass
        """
    )
    result = pytester.runpytest(*PLUGIN, "--strict-markers")
    result.assert_outcomes(passed=1)
    assert "e2e: end-to-end test" in pytester.runpytest(*PLUGIN, "--markers").stdout.str()


STORY_YAML = """\
id: elsewhere
title: A story outside the stories directory
company: ExampleCo
year: 2020
source: https://example.invalid/story
kind_config: default
story: A story.
fault: A fault.
symptom: A symptom.
mitigation: A mitigation.
measured:
  errors: how many requests failed
checks:
  symptom:
    errors: ">= 5"
  verify:
    errors: "<= 1"
"""


def test_a_projects_own_scenario_yaml_is_collected_only_when_asked(pytester, monkeypatch):
    """A project that installs kfs may have files named scenario.yaml of its own."""
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(pytester.path / "stories"))
    folder = pytester.mkdir("elsewhere")
    (folder / "scenario.yaml").write_text(STORY_YAML)
    (folder / "steps.py").write_text("def symptom(ctx): ...\ndef verify(ctx): ...\n")
    pytester.makepyfile("def test_nothing(): pass\n")
    quiet = pytester.runpytest(*PLUGIN, "--collect-only", "-q")
    assert quiet.ret == pytest.ExitCode.OK
    assert "scenario.yaml" not in quiet.stdout.str()
    quiet.stdout.fnmatch_lines(["1 test collected*"])

    asked = pytester.runpytest(*PLUGIN, "--collect-only", "-q", "--kfs-collect-scenarios")
    asked.stdout.fnmatch_lines(["elsewhere/scenario.yaml::setup", "8 tests collected*"])


def test_the_stories_directorys_scenarios_are_collected(pytester, monkeypatch):
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(pytester.path / "stories"))
    folder = pytester.mkdir("stories") / "elsewhere"
    folder.mkdir()
    (folder / "scenario.yaml").write_text(STORY_YAML)
    (folder / "steps.py").write_text("def symptom(ctx): ...\ndef verify(ctx): ...\n")
    found = pytester.runpytest(*PLUGIN, "--collect-only", "-q", "stories")
    found.stdout.fnmatch_lines(["stories/elsewhere/scenario.yaml::verify", "7 tests collected*"])


def test_kfs_context_with_a_provider_that_builds_its_cluster_is_a_usage_error(pytester):
    pytester.makepyfile("def test_nothing(): pass\n")
    result = pytester.runpytest(*PLUGIN, "--kfs-context", "lab")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--kfs-context is for --kfs-provider existing*"])


def test_kfs_run_refuses_a_context_not_allowed_before_contacting_it(
    pytester, tmp_path, monkeypatch
):
    def no_contact(*_a: object, **_k: object) -> None:
        raise AssertionError("the cluster was contacted before the guard refused")

    monkeypatch.setattr(Kube, "__init__", no_contact)  # pytester runs in this process
    pytester.makepyfile(RUNS_A_STORY)
    result = pytester.runpytest(
        *PLUGIN,
        "--kfs-provider",
        "existing",
        "--kfs-kubeconfig",
        str(kubeconfig(tmp_path / "config", "lab")),
        "--kfs-context",
        "lab",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*refusing to inject faults into context 'lab': "
            "pass --allow-context lab if this cluster is meant for it"
        ]
    )
    out = result.stdout.str()
    assert "Traceback" not in out
    assert "AssertionError" not in out


def test_an_allowed_context_is_reached_through_the_given_kubeconfig(pytester, tmp_path):
    pytester.makepyfile(RUNS_A_STORY)
    result = pytester.runpytest(
        *PLUGIN,
        "--kfs-provider",
        "existing",
        "--kfs-kubeconfig",
        os.pathsep.join([str(tmp_path / "missing"), str(kubeconfig(tmp_path / "config", "lab"))]),
        "--kfs-context",
        "lab",
        "--kfs-allow-context",
        "lab",
        "--kfs-report-dir",
        str(tmp_path / "reports"),
    )
    result.assert_outcomes(failed=1)  # nothing listens at 127.0.0.1:1
    result.stdout.fnmatch_lines(["*the API server of lab does not answer*"])
    assert "Traceback" not in result.stdout.str()


def test_an_undecided_phase_fails_its_test_and_says_which_interval() -> None:
    from failure_stories.reporting.model import MeasurementResult, PhaseResult, ScenarioReport
    from failure_stories.testing.pytest_plugin import describe_phase

    why = "factor 3.4, interval [2.33, 4.1] spans >= 3 when its window ended"
    phase = PhaseResult(
        "verify",
        ok=False,
        measurements={
            "factor": MeasurementResult(3.4, ">= 3", True, undecided=True),
            "factor_ci_low": MeasurementResult(2.33),
        },
        undecided=why,
    )
    report = ScenarioReport("buffer", "kind", "now", verdict="undecided", phases=[phase])
    assert describe_phase(report, phase).splitlines() == [
        "buffer phase verify: verdict undecided",
        f"undecided: {why}",
        "  factor = 3.4 (want >= 3, undecided)",
        "  factor_ci_low = 2.33",
    ]
