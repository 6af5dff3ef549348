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
