"""The documented exit codes, as a table: 0 passed, 1 a story's verdict failed,
2 usage error, 3 infrastructure error, 130 interrupted. Each row runs the real
CLI; runs go through a real Session on the stub provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from failure_stories.cli import main as cli_main
from failure_stories.cli.options import ClusterOptions
from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import MissingToolError
from failure_stories.reporting.model import ScenarioReport
from tests.unit.conftest import StubProvider
from tests.unit.test_cli import write_kubeconfig

STEPS = """
def steady_state(ctx):
    return {{"errors": 0}}

def inject(ctx):
    {inject}

def symptom(ctx):
    return {{"errors": {symptom}}}

def verify(ctx):
    return {{"errors": {verify}}}
"""
FINE = {"inject": "pass", "symptom": 9, "verify": 0}
STORIES = {
    "passes": FINE,
    "not-fixed": FINE | {"verify": 7},
    "not-reproduced": FINE | {"symptom": 1},
    "errs": FINE | {"inject": "raise RuntimeError('the API server went away')"},
    "interrupted": FINE | {"inject": "raise KeyboardInterrupt"},
}


@pytest.fixture
def stories(make_scenario: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for sid, params in STORIES.items():
        folder = make_scenario(STEPS.format(**params), scenario_id=sid)
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(folder.parent))
    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(ClusterOptions, "get", lambda self, keep_cluster=False: StubProvider())
    return tmp_path


def _missing_tool(*_: Any) -> Any:
    raise MissingToolError("go", "install Go 1.24 or newer")


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["list"], 0),
        (["run", "passes"], 0),
        (["run", "passes", "not-fixed"], 1),
        (["run", "not-reproduced"], 1),
        (["run", "errs", "not-fixed"], 1),  # a failed verdict outranks an error
        (["run", "errs"], 3),
        (["run", "interrupted"], 130),
        (["run"], 2),
        (["run", "passes", "--all"], 2),
        (["run", "no-such-story"], 2),
        (["list", "-o", "xml"], 2),
        (["run", "passes", "--provider", "nowhere"], 2),
        (["describe"], 2),
        (["frobnicate"], 2),
        (["cluster", "up", "MISSING-TOOL"], 3),
    ],
)
def test_exit_codes(stories: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int):
    refused = code in (2, 130) or argv[-1] == "MISSING-TOOL"  # else a verdict decided
    if argv[-1] == "MISSING-TOOL":
        argv = argv[:-1]
        monkeypatch.setattr(StubProvider, "up", _missing_tool)
    if argv[0] == "run":
        argv = [*argv, "--report-dir", str(stories / "r")]
    out = CliRunner().invoke(cli_main.cli, argv)
    assert out.exit_code == code, out.output
    assert "Traceback" not in out.output
    if refused:
        assert out.output.strip().splitlines()[-1].startswith("kfs: error: "), out.output


def test_unreachable_and_unreadable_kubeconfigs(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("{{{ not yaml")
    unreachable = write_kubeconfig(tmp_path / "config", "lab")
    status = ["cluster", "status", "--provider", "existing", "--kubeconfig"]
    bad_input = CliRunner().invoke(cli_main.cli, [*status, str(garbage)])
    assert bad_input.exit_code == 2, bad_input.output  # the file given is wrong
    down = CliRunner().invoke(cli_main.cli, [*status, str(unreachable)])
    assert down.exit_code == 3, down.output  # nothing answers there


@pytest.mark.parametrize(
    ("verdicts", "code"),
    [
        ((), 0),
        (("passed",), 0),
        (("passed", "not-fixed"), 1),
        (("not-reproduced",), 1),
        (("error", "not-fixed"), 1),
        (("error",), 3),
        (("passed", "error"), 3),
        (("undecided",), 3),  # too noisy to judge: not a failed verdict
        (("undecided", "not-fixed"), 1),
    ],
)
def test_a_runs_exit_code_follows_its_verdicts(verdicts: tuple[str, ...], code: int) -> None:
    reports = [ScenarioReport(f"s{i}", "stub", "now", verdict=v) for i, v in enumerate(verdicts)]
    assert cli_main.exit_code(reports) == code


def test_help_documents_the_exit_codes() -> None:
    for argv in (["--help"], ["run", "--help"]):
        text = CliRunner().invoke(cli_main.cli, argv).output
        for line in (
            "0    every story passed",
            "1    a story's verdict failed",
            "130  interrupted",
        ):
            assert line in text, argv
        assert "2    usage error" in text and "3    infrastructure error" in text


def test_story_folders_are_discovered(stories: Path) -> None:
    assert set(STORIES) <= set(scenarios.discover())
