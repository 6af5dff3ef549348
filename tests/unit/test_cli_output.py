"""kubectl-style output (-o table|json|yaml), `kfs list` at 80 columns, and shell
completion from `kfs completion` (commands, options and scenario ids)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from failure_stories.audit import model as A
from failure_stories.cli import audit as audit_cli
from failure_stories.cli.main import cli
from failure_stories.contract import scenario as scenarios
from tests.unit.test_cli import write_kubeconfig

IDS = sorted(scenarios.discover())


def _document(argv: list[str], output: str) -> Any:
    out = CliRunner().invoke(cli, [*argv, "-o", output])
    text = out.stdout
    return out.exit_code, json.loads(text) if output == "json" else yaml.safe_load(text)


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_list_describe_and_dry_run_print_one_document(output: str) -> None:
    code, rows = _document(["list"], output)
    assert code == 0 and sorted(r["id"] for r in rows) == IDS
    assert all(r["source"].startswith("https://") for r in rows)

    code, story = _document(["describe", "buffer-cpu-throttling"], output)
    assert code == 0
    assert (story["company"], story["year"]) == ("Buffer", 2020)
    assert story["checks"]["verify"]["throttled_period_ratio"] == "<= 0.02"

    code, plans = _document(["run", "moonlight-anti-affinity", "--dry-run"], output)
    assert code == 0
    (plan,) = plans
    assert plan["scenario"] == "moonlight-anti-affinity" and plan["dry_run"] is True
    assert list(plan["phases"]) == list(scenarios.PHASES)
    assert "Deployment/web" in plan["phases"]["setup"][0]["objects"]


def test_the_older_json_flag_still_works() -> None:
    out = CliRunner().invoke(cli, ["list", "--json"])
    assert out.exit_code == 0 and sorted(r["id"] for r in json.loads(out.output)) == IDS


def test_cluster_status_as_a_document(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", "lab")
    argv = ["cluster", "status", "--provider", "existing", "--kubeconfig", str(kubeconfig)]
    code, status = _document(argv, "json")
    assert code == 3  # nothing answers at 127.0.0.1:1
    assert status["provider"] == "existing" and status["running"] is False
    assert "does not answer" in status["detail"]


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_audit_findings_as_a_document(monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    service = {
        "metadata": {"name": "grafana", "namespace": "shop"},
        "spec": {"type": "NodePort", "ports": [{"port": 3000, "nodePort": 30300}]},
    }
    monkeypatch.setattr(audit_cli, "connect", lambda *_: (_Kube(), "fake"))
    monkeypatch.setattr(audit_cli, "collect", lambda *_: A.Snapshot(services=[service]))
    out = CliRunner().invoke(cli, ["audit", "-o", output])
    rows = json.loads(out.stdout) if output == "json" else yaml.safe_load(out.stdout)
    assert out.exit_code == 1  # a high finding
    assert {"story", "check", "object", "severity", "message", "fix"} <= set(rows[0])
    assert "high" in {r["severity"] for r in rows}


class _Kube:
    def ping(self) -> str:
        return "v1.34.4"


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["describe", "buffer-cpu-throttling"],
        ["run", "moonlight-anti-affinity"],
        ["audit"],
        ["cluster", "status"],
    ],
)
def test_an_unknown_output_is_one_usage_line(argv: list[str]) -> None:
    out = CliRunner().invoke(cli, [*argv, "-o", "wide"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "kfs: error: Invalid value for '-o' / '--output': 'wide' is not one of "
        f"'table', 'json', 'yaml'. (see `kfs {' '.join(a for a in argv if a in _COMMANDS)} -h`)"
    ]


_COMMANDS = {"list", "describe", "run", "audit", "cluster", "status"}


def test_list_fits_80_columns_with_ids_whole() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "failure_stories", "list"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    # Every id is on one line of its own row; a title wraps to 3 lines at most.
    starts = [i for i, line in enumerate(lines) if line.split(" ", 1)[0] in IDS]
    assert [lines[i].split()[0] for i in starts] == IDS
    rows = [*starts, len(lines)]
    assert max(b - a for a, b in itertools.pairwise(rows)) <= 3


def _complete(shell: str, words: str) -> str:
    """What the shell's script gets back for the command line ``words``."""
    # bash and zsh pass the index of the word being completed, fish the word itself.
    cword = words.rsplit(maxsplit=1)[-1] if shell == "fish" else str(len(words.split()) - 1)
    env = {**os.environ, "_KFS_COMPLETE": f"{shell}_complete", "COMP_WORDS": words}
    env["COMP_CWORD"] = cword
    done = subprocess.run(
        [sys.executable, "-c", "from failure_stories.cli.main import main; main()"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_scenario_ids_complete_in_every_shell() -> None:
    assert _complete("bash", "kfs describe moon").split() == ["plain,moonlight-anti-affinity"]
    zsh = _complete("zsh", "kfs run m").splitlines()
    assert zsh[0::3] == ["plain", "plain"]
    assert zsh[1::3] == ["mindtickle-external-snat", "moonlight-anti-affinity"]
    assert zsh[2] == scenarios.get("mindtickle-external-snat").meta.title
    fish = _complete("fish", "kfs gameday jw")
    assert fish.startswith("plain,jwplayer-exposed-dashboard\t")
    # commands and choices complete too
    assert "plain,completion" in _complete("bash", "kfs comp").split()
    assert _complete("bash", "kfs list -o y").split() == ["plain,yaml"]


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _kfs_completion kfs"),
        ("zsh", "#compdef kfs"),
        ("fish", "complete --no-files --command kfs"),
    ],
)
def test_completion_prints_each_shells_script(shell: str, marker: str) -> None:
    out = CliRunner().invoke(cli, ["completion", shell])
    assert out.exit_code == 0 and marker in out.output
    assert "_KFS_COMPLETE" in out.output


def test_bash_loads_the_script(tmp_path: Path) -> None:
    script = CliRunner().invoke(cli, ["completion", "bash"]).output
    (tmp_path / "kfs.bash").write_text(script)
    done = subprocess.run(
        ["bash", "-c", f"source {tmp_path / 'kfs.bash'} && complete -p kfs"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "complete -o nosort -F _kfs_completion kfs"


def test_an_unknown_shell_is_one_usage_line() -> None:
    out = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1
