"""The CLI: bad input gets one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from failure_stories.cli.main import cli


def write_kubeconfig(path: Path, *contexts: str, current: str | None = None) -> Path:
    """A kubeconfig whose contexts all point at a port where nothing listens."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": current or contexts[0],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [
                    {"name": c, "context": {"cluster": "c", "user": "u"}} for c in contexts
                ],
            }
        )
    )
    return path


def one_line(out: Any) -> str:
    """The single line a refused command prints, with no traceback."""
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    return str(lines[0])


def kfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "failure_stories", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_list_json_names_every_scenario():
    out = CliRunner().invoke(cli, ["list", "--json"])
    assert out.exit_code == 0
    rows = {r["id"]: r for r in json.loads(out.output)}
    moon = rows["moonlight-anti-affinity"]
    assert moon["company"] == "Moonlight"
    assert moon["year"] == "2019"
    assert moon["source"].startswith("https://")


def test_describe_tells_fault_symptom_fix_and_measurements():
    out = CliRunner().invoke(cli, ["describe", "moonlight-anti-affinity"])
    assert out.exit_code == 0
    for word in ("Story", "Fault", "Symptom", "Mitigation", "outage_seconds", "== 0"):
        assert word in out.output


def test_unknown_scenario_is_one_line_with_suggestions():
    done = kfs("run", "moonlite", "--provider", "existing")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown scenario 'moonlite'" in lines[0]
    assert "moonlight-anti-affinity" in lines[0]


def test_run_without_ids_is_a_usage_error():
    done = kfs("run")
    assert done.returncode == 2
    assert "name at least one scenario" in done.stderr
    assert "Traceback" not in done.stderr


def test_existing_provider_refuses_a_context_not_allowed(tmp_path, monkeypatch, make_scenario):
    # A story that needs no node ability, so the context guard is what decides.
    story = make_scenario("def symptom(ctx): return {}\ndef verify(ctx): return {}\n")
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(story.parent))
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config", "prod")))
    out = CliRunner().invoke(
        cli,
        [
            "run",
            "test-story",
            "--provider",
            "existing",
            "--report-dir",
            str(tmp_path / "r"),
        ],
    )
    assert out.exit_code == 2  # refused before anything ran
    assert one_line(out) == (
        "kfs: error: refusing to inject faults into context 'prod': "
        "pass --allow-context prod if this cluster is meant for it"
    )
    assert not (tmp_path / "r").exists()


def test_unknown_context_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    done = subprocess.run(
        [sys.executable, "-m", "failure_stories", "cluster", "status", "--provider", "existing"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"KUBECONFIG": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "no usable kubeconfig" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_docker_says_what_to_install(monkeypatch):
    # kind itself is built by `make setup`; the Docker CLI is the tool a user can lack.
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "docker" else real(t) or t)
    out = CliRunner().invoke(cli, ["cluster", "up", "--provider", "kind"])
    assert out.exit_code == 3  # infrastructure
    assert "docker is not installed" in out.output
    assert "make setup" in out.output


def test_help_lists_the_commands():
    out = CliRunner().invoke(cli, ["--help"])
    for cmd in ("list", "describe", "run", "cluster"):
        assert cmd in out.output
    assert Path("scenarios").is_dir()


def test_operator_image_is_not_an_option_of_the_local_install():
    done = kfs("operator", "install", "--image", "localhost:5000/kfs/operator:v1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--image is for kind and existing" in done.stderr


def test_gamedays_opt_in_is_for_the_in_cluster_install():
    done = kfs("operator", "install", "--gamedays")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--gamedays is for kind and existing" in done.stderr


def test_a_provider_without_an_ability_a_story_needs_is_refused_at_once(
    tmp_path, monkeypatch, make_scenario
):
    # kind has every ability a bundled story needs; only a host-side operator is
    # beyond it, so a story that needs one is refused before any cluster exists.
    steps = "def symptom(ctx): return {}\ndef verify(ctx): return {}\n"
    story = make_scenario(steps)
    yaml_path = story / "scenario.yaml"
    yaml_path.write_text("needs: [operator-host, node-shell]\n" + yaml_path.read_text())
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(story.parent))
    out = CliRunner().invoke(
        cli,
        ["run", "test-story", "--provider", "kind", "--report-dir", str(tmp_path / "r")],
    )
    assert out.exit_code == 2
    assert one_line(out) == (
        "kfs: error: the kind provider cannot run test-story needs operator-host: "
        "choose another provider (`kfs describe ID` says what a story needs)"
    )
    assert not (tmp_path / "r").exists()  # refused before anything ran


def test_a_report_dir_that_cannot_be_written_is_one_line_before_any_cluster(tmp_path):
    done = kfs("run", "moonlight-anti-affinity", "--report-dir", "/proc/kfs-reports")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        "cannot write reports to /proc/kfs-reports (No such file or directory): "
        "pass --report-dir a directory you can write" in done.stderr
    )


def test_kind_without_its_tools_deletes_no_cluster_it_never_made(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "failure_stories",
            "run",
            "moonlight-anti-affinity",
            "--provider",
            "kind",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": str(tmp_path), "COLUMNS": "200"},  # neither docker nor kind
    )
    assert done.returncode == 3  # infrastructure, no story failed
    assert "deleting the kind cluster" not in done.stdout
    # Refused in one line before any story started, so no report was written.
    assert done.stderr.strip().splitlines() == [
        "kfs: error: docker is not installed: run `make setup` (installs Debian's docker.io)"
    ]
    assert not (tmp_path / "moonlight-anti-affinity.json").exists()
