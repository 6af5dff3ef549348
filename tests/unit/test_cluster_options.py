"""--kubeconfig, --context and --allow-context: one spelling on every command that
reaches a cluster, kubeconfig lists merged as kubectl merges them, the guard on
every command that changes an existing cluster, and one line for every refusal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from click.testing import CliRunner

from failure_stories.cli import audit as audit_cli
from failure_stories.cli.main import cli
from failure_stories.cli.options import ClusterOptions
from failure_stories.core.errors import ClusterUnreachableError, DefinitionError
from failure_stories.providers import get_provider
from failure_stories.providers.existing import ExistingProvider
from failure_stories.providers.kube import Kube
from failure_stories.providers.kubeconfig import KubeConfig


def kubeconfig(path: Path, contexts: dict[str, str], current: str | None = None) -> Path:
    """A kubeconfig file: context name -> server (nothing listens on these ports)."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": f"{path.name}-{c}", "cluster": {"server": server}}
            for c, server in contexts.items()
        ],
        "users": [{"name": "u", "user": {"token": path.name}}],
        "contexts": [
            {"name": c, "context": {"cluster": f"{path.name}-{c}", "user": "u"}} for c in contexts
        ],
    }
    if current:
        doc["current-context"] = current
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def two_files(tmp_path: Path) -> str:
    """KUBECONFIG-style list: lab in the first file, staging (and a second lab) in the second."""
    first = kubeconfig(tmp_path / "first", {"lab": "https://127.0.0.1:1"}, current="lab")
    second = kubeconfig(
        tmp_path / "second",
        {"staging": "https://127.0.0.2:1", "lab": "https://127.0.0.3:1"},
        current="staging",
    )
    return os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)])


@pytest.fixture(autouse=True)
def no_built_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests must never reach the local or kind cluster (others use them)."""

    class Untouchable:
        def __init__(self, *_a: object, **_k: object) -> None:
            raise AssertionError("a refused command reached a provider that builds clusters")

    from failure_stories.providers import kind, local

    monkeypatch.setattr(local, "LocalProvider", Untouchable)
    monkeypatch.setattr(kind, "KindProvider", Untouchable)


def one_line(out: Any) -> str:
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    lines = out.output.strip().splitlines()
    assert len(lines) == 1, out.output
    return str(lines[0])


# -- the kubeconfig list ------------------------------------------------------


def test_a_context_only_in_the_second_file_of_kubeconfig_works(two_files, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", two_files)
    prov = ExistingProvider(context="staging", allow="staging")
    assert prov.path.name == "second"
    kube = prov.kube()
    assert kube.api.configuration.host == "https://127.0.0.2:1"
    assert kube.kubeconfig.name == "second"


def test_the_first_file_wins_for_a_name_and_for_the_current_context(two_files):
    merged = KubeConfig(two_files)
    assert merged.contexts == ["lab", "staging"]
    assert merged.current == "lab"  # kubectl: the first file that sets it
    assert Kube(two_files).api.configuration.host == "https://127.0.0.1:1"
    # The user "u" is in both files: the first file's token is used.
    staging = Kube(two_files, "staging").api.configuration
    assert staging.api_key == {"BearerToken": "Bearer first"}


def test_an_unknown_context_lists_the_known_ones_of_every_file(two_files):
    with pytest.raises(ClusterUnreachableError) as caught:
        ExistingProvider(context="prod", kubeconfig=two_files)
    assert str(caught.value) == (
        f"unknown kube context 'prod' in {two_files} (known: lab, staging)"
    )


def test_a_kubeconfig_list_of_missing_files_is_one_line(tmp_path):
    names = os.pathsep.join(str(tmp_path / n) for n in ("a", "b"))
    with pytest.raises(ClusterUnreachableError) as caught:
        get_provider("existing", kubeconfig=names)
    assert str(caught.value) == (
        f"no usable kubeconfig: none of {names} exists; pass --kubeconfig PATH or set KUBECONFIG"
    )


def test_a_file_that_is_not_a_kubeconfig_is_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ClusterUnreachableError, match=r"^no usable kubeconfig at .*bad \("):
        KubeConfig(str(bad))


@pytest.mark.parametrize("option", ["kubeconfig", "context", "allow_context"])
@pytest.mark.parametrize("name", ["local", "kind"])
def test_existing_only_options_are_refused_by_providers_that_build_their_cluster(name, option):
    flag = "--" + option.replace("_", "-")
    with pytest.raises(DefinitionError, match=f"^{flag} is for --provider existing"):
        get_provider(name, **{option: "x"})


def test_child_processes_get_the_same_cluster_options():
    opts = ClusterOptions("existing", "a:b", "lab", "lab")
    assert opts.argv() == [
        "--provider",
        "existing",
        "--kubeconfig",
        "a:b",
        "--context",
        "lab",
        "--allow-context",
        "lab",
    ]
    assert ClusterOptions("local").argv() == ["--provider", "local"]


# -- every command ------------------------------------------------------------


@pytest.fixture
def story(make_scenario, monkeypatch) -> str:
    folder = make_scenario("def symptom(ctx): return {}\ndef verify(ctx): return {}\n")
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(folder.parent))
    return "test-story"


CHANGING = [
    ["run", "test-story"],
    ["gameday", "test-story", "--reveal-after", "0"],
    ["cleanup"],
    ["operator", "install"],
    ["operator", "uninstall"],
]
ALL = [*CHANGING, ["cluster", "up"], ["cluster", "down"], ["cluster", "reset"]]
ALL += [["cluster", "status"]]


@pytest.mark.parametrize("command", CHANGING, ids=" ".join)
def test_changing_commands_refuse_an_allow_context_that_does_not_match(
    command, story, two_files, tmp_path
):
    out = CliRunner().invoke(
        cli,
        [
            *command,
            "--provider",
            "existing",
            "--kubeconfig",
            two_files,
            "--context",
            "staging",
            "--allow-context",
            "lab",
        ],
    )
    assert out.exit_code == 2
    assert one_line(out) == (
        "kfs: error: refusing to inject faults into context 'staging' (--allow-context "
        "names 'lab'): pass --allow-context staging if this cluster is meant for it"
    )


@pytest.mark.parametrize("command", CHANGING, ids=" ".join)
def test_changing_commands_refuse_the_current_context_without_allow_context(
    command, story, two_files, monkeypatch
):
    monkeypatch.setenv("KUBECONFIG", two_files)
    out = CliRunner().invoke(cli, [*command, "--provider", "existing"])
    assert out.exit_code == 2
    assert "refusing to inject faults into context 'lab'" in one_line(out)


@pytest.mark.parametrize("command", ALL, ids=" ".join)
@pytest.mark.parametrize("provider", ["local", "kind"])
def test_context_with_a_provider_that_builds_its_cluster_is_refused(command, provider, story):
    out = CliRunner().invoke(cli, [*command, "--provider", provider, "--context", "lab"])
    assert out.exit_code == 2
    assert one_line(out) == (
        f"kfs: error: --context is for --provider existing; the {provider} provider "
        "builds its own cluster and kubeconfig"
    )


@pytest.mark.parametrize("command", ALL, ids=" ".join)
def test_kubeconfig_with_the_local_provider_is_refused(command, story, two_files):
    out = CliRunner().invoke(cli, [*command, "--kubeconfig", two_files])
    assert out.exit_code == 2
    assert "--kubeconfig is for --provider existing" in one_line(out)


@pytest.mark.parametrize("verb", ["down", "reset"])
def test_cluster_down_and_reset_never_delete_an_existing_cluster(verb, two_files):
    out = CliRunner().invoke(
        cli,
        ["cluster", verb, "--provider", "existing", "--kubeconfig", two_files],
        catch_exceptions=False,
    )
    assert out.exit_code == 2
    line = one_line(out)
    assert f"refusing to {verb.replace('down', 'delete')} the existing cluster" in line
    assert "kfs never deletes a cluster it did not build" in line
    assert f"kfs cleanup --provider existing --kubeconfig {two_files} --context lab" in line


def test_cluster_status_reads_a_context_of_the_second_file_without_allow_context(two_files):
    out = CliRunner().invoke(
        cli,
        ["cluster", "status", "--provider", "existing", "--kubeconfig", two_files],
        catch_exceptions=False,
    )
    # Read-only: no guard; nothing listens there, so the cluster is "not running".
    assert out.exit_code == 3
    assert "existing cluster: not running" in out.output
    assert "does not answer" in out.output


def test_cluster_up_on_an_unknown_context_lists_the_known_ones(two_files):
    out = CliRunner().invoke(
        cli,
        ["cluster", "up", "--provider", "existing", "--kubeconfig", two_files, "--context", "x"],
    )
    assert out.exit_code == 2
    assert one_line(out) == (
        f"kfs: error: unknown kube context 'x' in {two_files} (known: lab, staging)"
    )


def test_audit_reads_a_context_of_the_second_file_of_kubeconfig(two_files, monkeypatch):
    monkeypatch.setattr(audit_cli, "_local_kubeconfig", lambda: None)
    kube, target = audit_cli.connect(two_files, "staging")
    assert kube.api.configuration.host == "https://127.0.0.2:1"
    assert target == f"{two_files} context staging"
    monkeypatch.setenv("KUBECONFIG", two_files)
    kube, _ = audit_cli.connect(None, "staging")
    assert kube.api.configuration.host == "https://127.0.0.2:1"


def test_audit_takes_the_cluster_options_and_needs_no_allow_context(two_files, monkeypatch):
    monkeypatch.setattr(audit_cli, "_local_kubeconfig", lambda: None)
    out = CliRunner().invoke(
        cli, ["audit", "--kubeconfig", two_files, "--context", "prod", "--allow-context", "x"]
    )
    assert out.exit_code == 2
    assert one_line(out) == (
        f"kfs: error: unknown kube context 'prod' in {two_files} (known: lab, staging)"
    )
    out = CliRunner().invoke(cli, ["audit", "--kubeconfig", two_files, "--context", "staging"])
    assert out.exit_code == 3  # read-only, so not refused: nothing answers there
    assert one_line(out).startswith("kfs: error: the API server of staging does not answer")


def test_every_api_request_is_timed_for_the_overhead_accounting(two_files):
    from failure_stories.core import timing

    timing.LEDGER.reset()
    # Port 1 refuses: the request fails, and still took its time.
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        Kube(two_files).core.list_node(_request_timeout=2)
    assert set(timing.LEDGER.seconds) == {"cluster_calls"}
