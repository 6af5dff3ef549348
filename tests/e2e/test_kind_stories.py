"""Every story on the real kind, offline, as a CI job runs them: one suite cluster
(kind-configs/default.yaml, a control plane and four workers from the node image
built here) made by the kind provider, `kfs run --all --provider kind --jobs 3`,
and `kfs cluster down --provider kind` leaving no container, volume or iptables
rule of it, and no dockerd kfs started.

Node access goes through the node containers (docker exec, docker pause); the
outside hosts of JW Player and MindTickle are network namespaces on this host,
which the kind nodes reach through Docker's bridge.

Then the same cluster as a user's own: `kfs run --provider existing` with the
kind context, stories through the node agent (privileged pods on the nodes).

A latency verdict that the machine's noise left open ends `undecided` (its window
at the maximum, its interval across the threshold): the test prints it and
accepts it, but every other check of that run must still hold. And a run that
fails on kind keeps `kind export logs` of every node in its artifacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.host import commands, docker_engine, iptables, netns, netns_dir
from failure_stories.host.iptables import SCENARIO_CHAIN
from failure_stories.providers.agent import agent_namespaces
from failure_stories.providers.kind import CLUSTER_LABEL, KindProvider
from failure_stories.providers.kube import KFS, MANAGED_BY
from failure_stories.reporting.model import ScenarioReport
from failure_stories.run.session import Session

JOBS = 3  # as the README's CI example runs them
# Through the agent on kind, within CI's time: Moonlight, which the embedded
# cluster's one real node cannot give the agent (tests/e2e/test_existing_provider.py
# runs the other five through it there), and the two whose outside host the agent
# makes inside a kind node. All six passed this way too (524 s, README "Tests").
THROUGH_THE_AGENT = [
    "jwplayer-exposed-dashboard",
    "mindtickle-external-snat",
    "moonlight-anti-affinity",
]


def _docker(*args: str) -> list[str]:
    return commands.run([docker_engine.docker(), *args], check=False).split()


def _host_rules() -> set[str]:
    return {
        line
        for table in ("filter", "nat")
        for line in commands.run(["iptables", "-w", "-t", table, "-S"]).splitlines()
    }


@pytest.fixture(scope="module")
def kind() -> Iterator[KindProvider]:
    provider = KindProvider()
    engine_before = docker_engine.engine_answers()
    rules_before = _host_rules()
    volumes_before = set(_docker("volume", "ls", "-q")) if engine_before else set()
    try:
        t0 = time.monotonic()
        provider.up()
        print(f"kind suite cluster up in {time.monotonic() - t0:.1f}s")
        yield provider
    finally:
        provider.down()
    if engine_before:
        label = f"label={CLUSTER_LABEL}={provider.cluster_name}"
        assert _docker("ps", "-aq", "--filter", label) == []
        assert set(_docker("volume", "ls", "-q")) - volumes_before == set()
    else:
        assert not docker_engine.engine_answers(), "kfs left the dockerd it started running"
    assert _host_rules() - rules_before == set()


def _suite(
    provider: KindProvider,
    session_provider: object,
    report_dir: Path,
    child_args: list[str],
    only: list[str] | None = None,
) -> list[ScenarioReport]:
    stories = [s for s in scenarios.discover().values() if only is None or s.id in only]
    lines: list[str] = []
    t0 = time.monotonic()
    with Session(session_provider, report_dir, keep=True) as session:  # type: ignore[arg-type]
        session.check(stories)
        reports = session.run_parallel(
            stories, JOBS, child_args, lambda k, line: lines.append(f"{k} | {line}")
        )
    print(f"{child_args}: {len(stories)} stories in {time.monotonic() - t0:.1f}s")
    for r in reports:
        print(f"  {r.scenario}: {r.verdict} in {r.seconds:.1f}s")
    undecided = [r for r in reports if _left_undecided_by_noise(r)]
    for r in undecided:
        print(f"  {r.scenario}: {r.verdict}, but its window never settled: {_intervals(r)}")
    failed = [r for r in reports if r.verdict != "passed" and r not in undecided]
    said = [line for line in lines if any(line.startswith(f"{r.scenario} |") for r in failed)]
    assert len(reports) == len(stories) and not failed, "\n".join(
        [
            *(
                f"{r.scenario}: {r.verdict} {r.error} {[p.error for p in r.phases if p.error]}"
                for r in failed
            ),
            *said[-120:],
        ]
    )
    for r in reports:
        judged = [m for p in r.phases for m in p.measurements.values() if m.ok is not None]
        assert judged and all(m.ok or m.undecided for m in judged), r.scenario
    # Nothing of the runs is left on the cluster, on the nodes or on this host.
    kube = provider.kube()
    assert not kube.core.list_namespace(label_selector=f"{MANAGED_BY}={KFS}").items
    assert agent_namespaces(kube) == {}
    assert netns.leftovers() == []
    # Nor a hold on /run/netns by an outside host (its self-bind is undone with the last).
    assert {h for h in netns_dir.holders() if h.startswith(netns.PREFIX)} == set()
    states = _docker(
        "ps", "--filter", f"label={CLUSTER_LABEL}={provider.cluster_name}", "--format", "{{.State}}"
    )
    assert states == ["running"] * 5
    for node in provider.node_containers():
        on_node = lambda argv, check=False, node=node: provider.node_exec(node, argv, check=check)  # noqa: E731
        assert iptables.chains(SCENARIO_CHAIN, on_node) == {t: [] for t in iptables.TABLES}
    return reports


def _intervals(r: ScenarioReport) -> dict[str, float]:
    return {
        k: m.value
        for p in r.phases
        for k, m in p.measurements.items()
        if "_ci_" in k or k == "window_settled"
    }


def _left_undecided_by_noise(r: ScenarioReport) -> bool:
    """kfs's own "undecided", and only the noise's doing: the checks left open are
    those whose windows ran to their maximum with the confidence interval still
    across the threshold, and every other check of the run holds, including the
    kind node's cgroup showing the throttling and then none. (Buffer's latency
    improvement on kind while it compared p95s, with five kind nodes and the
    embedded cluster on 2 cores: 3.4 in [2.33, 4.1] and 2.5 in [1.28, 3.39]
    against 3. On medians, three suite runs in a row all settled.)"""
    if r.verdict != "undecided" or r.error:
        return False
    for p in r.phases:
        spans = [k for k, m in p.measurements.items() if m.undecided]
        if spans and p.measurements["window_settled"].value != 0.0:
            return False
        if any(m.ok is False and not m.undecided for m in p.measurements.values()):
            return False
    return True


def test_every_story_passes_on_kind(kind: KindProvider, tmp_path: Path) -> None:
    reports = _suite(kind, kind, tmp_path, ["--provider", "kind"])
    for r in reports:
        assert r.provider == "kind" and r.info["kind_cluster"] == "kfs-default"


def test_stories_pass_through_the_node_agent_on_the_kind_context(
    kind: KindProvider, tmp_path: Path
) -> None:
    """The kind cluster as a cluster kfs did not build: its context, allowed, and
    the images a user's registry would serve already on its nodes."""
    from failure_stories.images import redis_operator
    from failure_stories.providers.existing import ExistingProvider

    kind.load_images(redis_operator.build_image())
    context = f"kind-{kind.cluster_name}"
    existing = ExistingProvider(context=context, allow=context, kubeconfig=str(kind.kubeconfig))
    outside_before = netns.leftovers()
    args = [
        "--provider",
        "existing",
        "--kubeconfig",
        str(kind.kubeconfig),
        "--context",
        context,
        "--allow-context",
        context,
    ]
    reports = _suite(kind, existing, tmp_path, args, only=THROUGH_THE_AGENT)
    for r in reports:
        assert r.provider == "existing" and r.info["node_access"] == "node agent", r.scenario
    # The agent makes its outside hosts on the nodes: none was left on this host.
    assert outside_before == netns.leftovers() == []


FAILING_STORY = """\
id: fails-on-kind
title: A story whose fix never works
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


def test_a_run_that_fails_on_kind_keeps_every_nodes_logs(
    kind: KindProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verdict other than the expected one leaves its artifacts: the namespace's
    objects, and `kind export logs` of every node (kubelet, containerd, journal)."""
    folder = tmp_path / "stories" / "fails-on-kind"
    folder.mkdir(parents=True)
    (folder / "scenario.yaml").write_text(FAILING_STORY)
    steps = "def symptom(ctx):\n    return {'errors': 9}\n\n\ndef verify(ctx):\n"
    (folder / "steps.py").write_text(steps + "    return {'errors': 7}\n")
    (folder / "README.md").write_text("# fails on kind\n")
    monkeypatch.setenv("KFS_SCENARIOS_DIR", str(folder.parent))  # for the child `kfs run`
    story = scenarios.get("fails-on-kind", folder.parent)
    with Session(kind, tmp_path / "r", keep=True) as session:
        (report,) = session.run_parallel([story], 1, ["--provider", "kind"], lambda *_: None)
    assert (report.provider, report.verdict) == ("kind", "not-fixed")
    artifacts = Path(str(report.artifacts))
    assert (artifacts / "index.json").is_file()
    cluster = artifacts / "cluster"
    assert (cluster / "kind-version.txt").read_text().strip().startswith("kind v0.30.0")
    nodes = {p.name for p in cluster.iterdir() if p.is_dir()}
    assert nodes == set(kind.node_containers())
    for node in nodes:
        assert (cluster / node / "kubelet.log").stat().st_size > 0, node
    # and the suite cluster outlived the run (a run that did not create it keeps it)
    assert set(kind.node_states().values()) == {"running"}


def test_kfs_gameday_on_kind(kind: KindProvider, tmp_path: Path) -> None:
    """A GameDay on the suite's kind cluster: the fault held until the reveal,
    then the fix proven, as on the embedded cluster; the cluster outlives it."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("kfs")),
            "gameday",
            "mindtickle-external-snat",
            "--provider",
            "kind",
            "--reveal-after",
            "1",
            "--report-dir",
            str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    report = json.loads((tmp_path / "mindtickle-external-snat.json").read_text())
    assert (report["provider"], report["verdict"]) == ("kind", "passed")
    assert report["info"]["kind_cluster"] == kind.cluster_name
    assert report["info"]["time_to_diagnosis_seconds"] >= 1
    assert set(kind.node_states().values()) == {"running"}
