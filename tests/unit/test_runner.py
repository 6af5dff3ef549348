"""The runner decides verdicts from measurements and always tears down."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.contract.scenario import PHASES
from failure_stories.core.errors import Interrupted
from failure_stories.run.runner import Runner

from .conftest import SCENARIO_YAML

STEPS = """
from pathlib import Path
LOG = Path({log!r})

def note(ctx, what):
    with LOG.open("a") as f:
        f.write(what + "\\n")

def setup(ctx):
    note(ctx, "setup")
    ctx.defer("undo setup", lambda: note(ctx, "undo-setup"))

def steady_state(ctx):
    return {{"errors": 0}}

def inject(ctx):
    note(ctx, "inject")
    ctx.defer("revert fault", lambda: note(ctx, "revert-fault"))
    {inject_extra}

def symptom(ctx):
    ctx.record("errors", {symptom})
    return {{"errors": {symptom}}}

def mitigate(ctx):
    note(ctx, "mitigate")

def verify(ctx):
    return {{"errors": {verify}}}
"""


def run(make_scenario: Any, provider: Any, tmp_path: Path, **kw: Any) -> Any:
    log = tmp_path / "log.txt"
    params = {"symptom": 9, "verify": 0, "inject_extra": "pass", "log": str(log)} | kw
    folder = make_scenario(STEPS.format(**params))
    s = scenarios.get("test-story", folder.parent)
    report = Runner(provider, tmp_path / "reports").run(s)
    lines = log.read_text().split() if log.exists() else []
    return report, lines


def test_passed_when_symptom_reproduces_and_fix_holds(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path)
    assert report.verdict == "passed"
    assert [p.name for p in report.phases] == list(PHASES)
    assert report.phase("symptom").measurements["errors"].value == 9
    assert report.phase("symptom").measurements["errors"].threshold == ">= 5"
    assert report.phase("verify").measurements["errors"].ok is True
    # cleanups run newest first, then the namespace goes
    assert log == ["setup", "inject", "mitigate", "revert-fault", "undo-setup"]
    assert provider.kube_.deleted == provider.kube_.namespaces
    assert report.artifacts is None  # artifacts only on failure


def test_not_reproduced_stops_before_mitigation(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path, symptom=2)
    assert report.verdict == "not-reproduced"
    assert "mitigate" not in log
    assert report.phase("mitigate").skipped
    assert report.phase("symptom").measurements["errors"].ok is False
    assert log[-2:] == ["revert-fault", "undo-setup"]
    assert Path(report.artifacts, "events.txt").exists()


def test_not_fixed_when_verify_fails(make_scenario, provider, tmp_path):
    report, _ = run(make_scenario, provider, tmp_path, verify=7)
    assert report.verdict == "not-fixed"
    assert not report.phase("verify").ok
    assert report.phase("teardown").ok


def _with_interval(value: float, low: float, high: float) -> str:
    """A verify return value with its confidence interval (STEPS formats it in)."""
    return f'{value}, "errors_ci_low": {low}, "errors_ci_high": {high}'


def test_an_interval_across_the_threshold_is_undecided_not_passed(
    make_scenario, provider, tmp_path
):
    # "<= 1" holds for the point estimate 1, but the interval [0, 3] spans it.
    report, log = run(make_scenario, provider, tmp_path, verify=_with_interval(1, 0, 3))
    assert report.verdict == "undecided"
    verify = report.phase("verify")
    assert not verify.ok and verify.error is None
    assert verify.measurements["errors"].undecided and verify.measurements["errors"].ok
    assert report.reason == verify.undecided
    assert report.reason.startswith("errors 1, interval [0, 3] spans <= 1 when its window ended")
    assert log[-2:] == ["revert-fault", "undo-setup"]  # teardown as for any verdict
    data = json.loads((tmp_path / "reports" / "test-story.json").read_text())
    assert data["verdict"] == "undecided"
    assert data["phases"][5]["measurements"]["errors"]["undecided"] is True


@pytest.mark.parametrize(
    ("interval", "verdict"), [((0.5, 0, 0.9), "passed"), ((4, 2, 6), "not-fixed")]
)
def test_an_interval_clear_of_the_threshold_decides(
    make_scenario, provider, tmp_path, interval, verdict
):
    report, _ = run(make_scenario, provider, tmp_path, verify=_with_interval(*interval))
    assert report.verdict == verdict
    assert not report.phase("verify").measurements["errors"].undecided
    assert report.phase("verify").undecided is None


def test_a_check_failed_for_sure_outweighs_an_undecided_one(make_scenario, provider, tmp_path):
    yaml = SCENARIO_YAML.format(id="test-story").replace(
        'verify:\n    errors: "<= 1"', 'verify:\n    errors: "<= 1"\n    errors_ci_low: "<= -1"'
    )
    steps = STEPS.format(
        symptom=9, verify=_with_interval(1, 0, 3), inject_extra="pass", log=str(tmp_path / "l")
    )
    folder = make_scenario(steps, yaml_text=yaml)
    report = Runner(provider, tmp_path / "reports").run(scenarios.get("test-story", folder.parent))
    # errors is undecided, but errors_ci_low (0) fails "<= -1" with no interval of its own.
    assert report.verdict == "not-fixed"
    assert report.phase("verify").undecided is None


def test_error_on_exception_still_tears_down(make_scenario, provider, tmp_path):
    report, log = run(make_scenario, provider, tmp_path, inject_extra="raise RuntimeError('boom')")
    assert report.verdict == "error"
    assert "RuntimeError: boom" in report.phase("inject").error
    assert log[-2:] == ["revert-fault", "undo-setup"]
    assert provider.kube_.deleted == provider.kube_.namespaces
    tracebacks = Path(report.artifacts, "tracebacks.txt").read_text()
    assert "boom" in tracebacks


def test_sigint_in_a_phase_runs_teardown_then_reraises(make_scenario, provider, tmp_path):
    extra = "import os, signal; os.kill(os.getpid(), signal.SIGINT)"
    with pytest.raises(Interrupted):
        run(make_scenario, provider, tmp_path, inject_extra=extra)
    log = (tmp_path / "log.txt").read_text().split()
    assert log == ["setup", "inject", "revert-fault", "undo-setup"]
    data = json.loads((tmp_path / "reports" / "test-story.json").read_text())
    assert data["verdict"] == "error"
    assert data["error"] == "interrupted by SIGINT"
    assert provider.kube_.deleted == provider.kube_.namespaces


def test_sigterm_is_handled_like_ctrl_c(make_scenario, provider, tmp_path):
    extra = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"

    def before(_signum: int, _frame: object) -> None:  # the caller's own handler
        raise AssertionError("the runner's handler should have caught SIGTERM")

    previous = signal.signal(signal.SIGTERM, before)
    try:
        with pytest.raises(Interrupted, match="SIGTERM"):
            run(make_scenario, provider, tmp_path, inject_extra=extra)
        assert (tmp_path / "log.txt").read_text().split()[-1] == "undo-setup"
        # Teardown ran, and the handler the caller had is back in place.
        assert signal.getsignal(signal.SIGTERM) is before
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_missing_measurement_is_an_error_not_a_pass(make_scenario, provider, tmp_path):
    steps = STEPS.format(symptom=9, verify=0, inject_extra="pass", log=str(tmp_path / "l"))
    steps = steps.replace('return {"errors": 0}', "return {}")
    folder = make_scenario(steps)
    report = Runner(provider, tmp_path / "r").run(scenarios.get("test-story", folder.parent))
    assert report.verdict == "error"
    assert "did not report errors" in report.phase("steady-state").error


def test_json_report_follows_the_contract(make_scenario, provider, tmp_path):
    report, _ = run(make_scenario, provider, tmp_path)
    data = json.loads((tmp_path / "reports" / "test-story.json").read_text())
    assert set(data) >= {"scenario", "verdict", "provider", "started_at", "seconds", "phases"}
    assert data["provider"] == "stub"
    symptom = next(p for p in data["phases"] if p["name"] == "symptom")
    assert symptom["measurements"]["errors"] == {"value": 9.0, "threshold": ">= 5", "ok": True}
    assert data["series"]["errors"][0][1] == 9.0
    assert data["seconds"] == pytest.approx(report.seconds, abs=0.01)


PER_PHASE = """
import os, signal
from pathlib import Path
LOG = Path({log!r})

def note(what):
    with LOG.open("a") as f:
        f.write(what + "\\n")

def maybe_kill(phase):
    if phase == {phase!r}:
        os.kill(os.getpid(), signal.{sig})

def setup(ctx):
    ctx.defer("undo setup", lambda: note("undo-setup"))
    maybe_kill("setup")

def steady_state(ctx):
    maybe_kill("steady-state")
    return {{"errors": 0}}

def inject(ctx):
    ctx.defer("revert fault", lambda: note("revert-fault"))
    maybe_kill("inject")

def symptom(ctx):
    maybe_kill("symptom")
    return {{"errors": 9}}

def mitigate(ctx):
    maybe_kill("mitigate")

def verify(ctx):
    maybe_kill("verify")
    return {{"errors": 0}}
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    "phase", ["setup", "steady-state", "inject", "symptom", "mitigate", "verify"]
)
def test_a_signal_in_any_phase_reverts_and_cleans_up(make_scenario, provider, tmp_path, phase, sig):
    log = tmp_path / "log.txt"
    folder = make_scenario(PER_PHASE.format(log=str(log), phase=phase, sig=sig))
    with pytest.raises(Interrupted, match=sig):
        Runner(provider, tmp_path / "r").run(scenarios.get("test-story", folder.parent))
    undone = log.read_text().split()
    expected = (
        ["undo-setup"] if phase in ("setup", "steady-state") else ["revert-fault", "undo-setup"]
    )
    assert undone == expected
    assert provider.kube_.deleted == provider.kube_.namespaces
    data = json.loads((tmp_path / "r" / "test-story.json").read_text())
    failed = next(p for p in data["phases"] if p["name"] == phase)
    assert failed["ok"] is False and sig in failed["error"]
    assert data["verdict"] == "error"


def test_dry_run_prints_the_plan_and_touches_nothing(monkeypatch):
    from click.testing import CliRunner

    from failure_stories.cli import main as cli_module
    from failure_stories.cli import options

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("a dry run must not reach a provider")

    monkeypatch.setattr(options, "get_provider", boom)
    out = CliRunner().invoke(cli_module.cli, ["run", "--dry-run", "--all"])
    assert out.exit_code == 0, out.output
    for s in scenarios.discover().values():
        assert f"{s.id} (dry run: nothing is changed)" in out.output
    assert "Deployment/web" in out.output
    assert "ConfigMap/${MASQ_CONFIGMAP}" in out.output  # MindTickle's fault, a config edit


def test_the_report_carries_step_info_and_the_framework_ledger(make_scenario, provider, tmp_path):
    extra = "ctx.info['windows'] = {'with_limit': {'stop': 'settled'}}; " + (
        "__import__('failure_stories').wait_for(lambda: True, what='x', timeout=1)"
    )
    report, _ = run(make_scenario, provider, tmp_path, inject_extra=extra)
    assert report.info["windows"] == {"with_limit": {"stop": "settled"}}
    ledger = report.info["framework_seconds"]
    assert "waits" in ledger and "lock_wait" in ledger  # the node lock, even uncontended
    assert all(v >= 0 for v in ledger.values())
    assert sum(ledger.values()) <= report.seconds


@pytest.mark.parametrize(("share_cpus", "shared"), [(False, True), (True, False)])
def test_an_idle_judged_story_holds_the_node_alone_where_nodes_share_cpus(
    make_scenario: Any,
    provider: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    share_cpus: bool,
    shared: bool,
) -> None:
    yaml_text = (
        SCENARIO_YAML.format(id="test-story") + "node:\n  changes: true\n  min_idle_cpu: 0.5\n"
    )
    folder = make_scenario(
        STEPS.format(symptom=9, verify=0, inject_extra="pass", log=str(tmp_path / "l")),
        yaml_text=yaml_text,
    )
    held: list[tuple[str, bool, str]] = []
    original = Runner._hold_locks

    def spy(self: Runner, scenario: Any, wanted: list[tuple[str, bool, str]], locks: Any) -> None:
        held.extend(wanted)
        original(self, scenario, wanted, locks)

    monkeypatch.setattr(Runner, "_hold_locks", spy)
    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(provider, "nodes_share_cpus", share_cpus)
    report = Runner(provider, tmp_path / "reports").run(scenarios.get("test-story", folder.parent))
    assert report.verdict == "passed"
    assert [(name, s) for name, s, _ in held] == [("node", shared)]
