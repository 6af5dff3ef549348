"""Every story can fail: both negative controls of all six stories on the real
cluster, and a mitigation the real API server refuses ends `not-fixed`.

The twelve control runs go as a user starts them, `kfs run --all --control
no-fault --control no-fix --jobs 3`, in one process tree: the runner's locks
decide what overlaps (Buffer's timed CPU periods and JW Player's miner, the
outside network and the simulated nodes: one run at a time each)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.contract.controls import CONTROLS
from failure_stories.core.wait import wait_for
from failure_stories.providers.base import Provider
from failure_stories.providers.kube import Kube
from failure_stories.reporting.model import ScenarioReport, report_path
from failure_stories.run.runner import Runner

STORIES = sorted(scenarios.discover())
JOBS = 3


@pytest.fixture(scope="module")
def control_runs(kfs_provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run both controls of every story once; the reports' directory."""
    out = tmp_path_factory.mktemp("controls")
    started = time.monotonic()
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("kfs")),
            "run",
            "--all",
            *(arg for c in CONTROLS for arg in ("--control", c)),
            "--jobs",
            str(JOBS),
            "--report-dir",
            str(out),
            "--provider",
            kfs_provider.name,
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    (out / "kfs-run.log").write_text(done.stdout + done.stderr)
    (out / "wall-seconds").write_text(f"{time.monotonic() - started:.1f}\n")
    return out


def _numbers(report: ScenarioReport) -> str:
    parts = []
    for phase in ("symptom", "verify"):
        p = report.phase(phase)
        if p and p.measurements:
            judged = {k: m.value for k, m in p.measurements.items() if m.threshold}
            parts.append(f"{phase}: {judged}")
    return "; ".join(parts) or (report.reason or report.error or "no measurements")


@pytest.mark.parametrize("control", list(CONTROLS))
@pytest.mark.parametrize("story", STORIES)
def test_each_control_ends_with_the_verdict_it_must(
    control_runs: Path, story: str, control: str
) -> None:
    path = report_path(control_runs, story, control)
    assert path.exists(), f"no report for {story} {control}; see {control_runs}/kfs-run.log"
    report = ScenarioReport.from_json(json.loads(path.read_text()))
    withheld = report.phase(CONTROLS[control].withholds)
    assert withheld is not None and withheld.withheld == control
    assert report.verdict == CONTROLS[control].expects, (
        f"{story} {control}: {report.verdict}, must be {CONTROLS[control].expects}; "
        f"{_numbers(report)} (error: {report.error})"
    )


# A story whose fix the platform refuses: the fault sets a ConfigMap's retries to 1
# (the symptom reads it); the fix sets them back to 3, which the cluster refuses.
REFUSED_YAML = """\
id: {id}
title: A fix the platform refuses
company: ExampleCo
year: 2026
source: https://example.invalid/refused
kind_config: default
story: A platform policy forbids the documented fix.
fault: retries lowered to 1.
symptom: errors.
mitigation: {mitigation}
measured:
  errors: errors the settings cause
checks:
  steady-state:
    errors: "== 0"
  symptom:
    errors: ">= 1"
  verify:
    errors: "== 0"
"""

REFUSED_STEPS = """
from failure_stories import RunContext

def _settings(ctx, retries):
    return {{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "settings"}},
             "data": {{"retries": retries}}}}

def _errors(ctx):
    cm = ctx.kube.core.read_namespaced_config_map("settings", ctx.namespace)
    return {{"errors": 9 if cm.data["retries"] == "1" else 0}}

def setup(ctx):
    ctx.kube.apply([_settings(ctx, "3")], ctx.namespace)

def steady_state(ctx):
    return _errors(ctx)

def inject(ctx):
    ctx.kube.apply([_settings(ctx, "1")], ctx.namespace)

def symptom(ctx):
    return _errors(ctx)

def mitigate(ctx):
    {mitigate}

def verify(ctx):
    return _errors(ctx)
"""

# The fix as a ConfigMap update, refused by a ValidatingAdmissionPolicy bound to
# the run's namespace only (by a label the test gives it).
BY_POLICY = 'ctx.kube.apply([_settings(ctx, "3")], ctx.namespace)'
# The fix as a Deployment whose pods Pod Security ("restricted") will not admit:
# the Deployment is accepted, its ReplicaSet may not create the pods.
BY_POD_SECURITY = """ctx.kube.apply([_settings(ctx, "3")], ctx.namespace)
    ctx.kube.apply([{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "fixer"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "fixer"}},
                 "template": {"metadata": {"labels": {"app": "fixer"}},
                              "spec": {"containers": [{"name": "fixer", "image": "x",
                                       "securityContext": {"privileged": True}}]}}}}],
        ctx.namespace)
    ctx.kube.wait_rollout(ctx.namespace, "fixer", timeout=60)"""


def _policy(name: str, label: str, token: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["UPDATE"],
                            "resources": ["configmaps"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "object.metadata.name != 'settings' || "
                        "object.data.retries != '3'",
                        "message": "change freeze: settings may not be changed back",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {label: token}}},
            },
        },
    ]


def _wait_enforced(kube: Kube, namespace: str) -> None:
    """A new policy is enforced once the API server has loaded it: wait until a
    dry run of the refused update is refused in a namespace it selects."""

    def settings(retries: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"retries": retries},
        }

    kube.apply([settings("1")], namespace)
    wait_for(
        lambda: kube.dry_run_admission(settings("3"), namespace) is not None,
        what="the change-freeze policy enforced",
        timeout=30,
    )


@pytest.mark.parametrize("refusal", ["admission-policy", "pod-security"])
def test_a_fix_the_real_platform_refuses_is_not_fixed(
    kfs_provider: Provider, tmp_path: Path, refusal: str
) -> None:
    token = secrets.token_hex(4)
    story_id = f"refused-{refusal}"
    folder = tmp_path / "scenarios" / story_id
    (folder / "manifests").mkdir(parents=True)
    mitigate = BY_POLICY if refusal == "admission-policy" else BY_POD_SECURITY
    (folder / "scenario.yaml").write_text(REFUSED_YAML.format(id=story_id, mitigation=refusal))
    (folder / "steps.py").write_text(textwrap.dedent(REFUSED_STEPS.format(mitigate=mitigate)))
    kube = kfs_provider.kube()
    label = "kfs.dev/e2e-refuse"
    labels = {label: token}
    policy = _policy(f"kfs-e2e-refuse-{token}", label, token)
    probe = kube.create_namespace("e2e", labels=labels)
    try:
        if refusal == "admission-policy":
            kube.apply(policy, None)
            _wait_enforced(kube, probe)
        else:
            labels["pod-security.kubernetes.io/enforce"] = "restricted"
        story = scenarios.get(story_id, folder.parent)
        report = Runner(kfs_provider, tmp_path / "reports", namespace_labels=labels).run(story)
    finally:
        kube.delete_namespace(probe)
        if refusal == "admission-policy":
            for obj in reversed(policy):
                kube.delete(obj, None)
    assert report.verdict == "not-fixed", (report.verdict, report.error, report.reason)
    mitigate_phase = report.phase("mitigate")
    assert mitigate_phase is not None and mitigate_phase.refused
    expected = (
        "change freeze: settings may not be changed back"
        if refusal == "admission-policy"
        else "violates PodSecurity"
    )
    assert expected in str(report.reason)
    verify, teardown = report.phase("verify"), report.phase("teardown")
    assert verify is not None and verify.skipped
    assert teardown is not None and teardown.ok
