"""`kfs run --pushgateway URL` against a real Pushgateway, built from its Go module
(build/pushgateway, cached under $KFS_CACHE) and started on 127.0.0.1; what it
holds is read back from its own /metrics."""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from failure_stories.cli import main as cli_main
from failure_stories.cli.options import ClusterOptions
from failure_stories.core import paths
from failure_stories.core.wait import wait_for
from failure_stories.providers.local.binaries import cache_dir

MODULE = paths.BUILD / "pushgateway"

STEPS = """
def steady_state(ctx):
    return {{"errors": 0}}

def symptom(ctx):
    ctx.record("errors", {symptom})
    return {{"errors": {symptom}}}

def verify(ctx):
    return {{"errors": {verify}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pushgateway_binary() -> Path:
    """Built once per version (the one build/pushgateway/go.mod pins)."""
    pin = re.search(r"github.com/prometheus/pushgateway (v\S+)", (MODULE / "go.mod").read_text())
    assert pin, "build/pushgateway/go.mod pins no pushgateway"
    binary = cache_dir() / f"pushgateway-{pin.group(1)}" / "pushgateway"
    if not binary.is_file():
        subprocess.run([str(MODULE / "build.sh"), str(binary.parent)], check=True, timeout=1200)
    return binary


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(pushgateway_binary()), f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: get(f"{url}/-/ready"),
            what="the pushgateway to be ready",
            timeout=30,
            interval=0.2,
            retry_on=(OSError,),
        )
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (our own http on loopback)
        return bytes(resp.read())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(metric, sorted labels): value} of what the pushgateway serves for job kfs."""
    text = get(f"{url}/metrics").decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("job") == "kfs" and s.name.startswith("kfs_"):
                assert s.labels["run"] == "story"
                labels = {k: v for k, v in s.labels.items() if k not in ("job", "instance", "run")}
                out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def lbl(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"provider": "stub", **labels}.items()))


@pytest.fixture
def run_cli(make_scenario: Any, provider: Any, tmp_path: Path, monkeypatch) -> Any:
    make_scenario(STEPS.format(symptom=9, verify=0), "good-story")
    make_scenario(STEPS.format(symptom=9, verify=4), "bad-story")
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(tmp_path / "scenarios"))
    monkeypatch.setattr(ClusterOptions, "get", lambda self, keep_cluster=False: provider)

    def run(*args: str) -> Any:
        return CliRunner().invoke(
            cli_main.cli, ["run", *args, "--report-dir", str(tmp_path / "reports")]
        )

    return run


def test_each_run_pushes_its_verdict_and_measurements(gateway: str, run_cli: Any):
    out = run_cli("good-story", "bad-story", "--pushgateway", gateway)
    assert out.exit_code == 1, out.output  # bad-story is not-fixed
    assert f"pushed 2 stories' results to {gateway}" in out.output
    got = scrape(gateway)
    for story, verdict in (("good-story", "passed"), ("bad-story", "not-fixed")):
        for v in ("passed", "not-reproduced", "not-fixed", "error"):
            assert got[("kfs_verdict", lbl(scenario=story, verdict=v))] == (v == verdict)
        assert got[("kfs_run_seconds", lbl(scenario=story))] >= 0
        key = lbl(scenario=story, phase="symptom", measurement="errors")
        assert got[("kfs_measurement", key)] == 9
        assert got[("kfs_measurement_ok", key)] == 1
        assert got[("kfs_measurement_margin", key)] == 4  # >= 5
    bad = lbl(scenario="bad-story", phase="verify", measurement="errors")
    assert got[("kfs_measurement", bad)] == 4
    assert got[("kfs_measurement_ok", bad)] == 0
    assert got[("kfs_measurement_margin", bad)] == -3  # <= 1
    good = lbl(scenario="good-story", phase="verify", measurement="errors")
    assert got[("kfs_measurement_margin", good)] == 1


def test_a_later_run_replaces_only_its_own_story(gateway: str, run_cli: Any, tmp_path: Path):
    assert run_cli("good-story", "bad-story", "--pushgateway", gateway).exit_code == 1
    # On a platform where bad-story's fix holds, its group is replaced; good-story's stays.
    (tmp_path / "scenarios/bad-story/steps.py").write_text(STEPS.format(symptom=9, verify=1))
    out = run_cli("bad-story", "--pushgateway", gateway)
    assert out.exit_code == 0, out.output
    got = scrape(gateway)
    assert got[("kfs_verdict", lbl(scenario="bad-story", verdict="passed"))] == 1
    assert got[("kfs_verdict", lbl(scenario="bad-story", verdict="not-fixed"))] == 0
    key = lbl(scenario="bad-story", phase="verify", measurement="errors")
    assert got[("kfs_measurement_margin", key)] == 0
    assert got[("kfs_verdict", lbl(scenario="good-story", verdict="passed"))] == 1


def test_a_pushgateway_that_is_not_there_is_one_line_after_the_run(run_cli: Any, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    out = run_cli("good-story", "--pushgateway", url)
    assert out.exit_code == 3, out.output
    assert out.output.splitlines()[-1] == (
        f"kfs: error: cannot push results to the Pushgateway at {url} ([Errno 111] "
        "Connection refused): check that it runs there; the JSON reports are written "
        "all the same"
    )
    assert (tmp_path / "reports" / "good-story.json").is_file()


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:9091", "http://", "http://127.0.0.1:99999"])
def test_a_bad_pushgateway_address_is_refused_before_anything_runs(
    run_cli: Any, tmp_path, url: str
):
    out = run_cli("good-story", "--pushgateway", url)
    assert out.exit_code == 2, out.output
    assert out.output.strip() == (
        f"kfs: error: --pushgateway {url!r} is not an address: give http://HOST:PORT "
        "(a Pushgateway listens on 9091 by default)"
    )
    assert not (tmp_path / "reports").exists()
