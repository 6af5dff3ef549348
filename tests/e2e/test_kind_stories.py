"""Every story on the real kind, offline: one suite cluster (kind-configs/default.yaml,
a control plane and four workers from the node image built here) made by the
kind provider as `kfs run --all --provider kind` makes it, each story run
through it as a user runs them, and `kfs cluster down --provider kind` leaving no
container, network, volume or iptables rule of it, and no dockerd kfs started.

Node access goes through the node containers (docker exec, docker pause); the
outside hosts of JW Player and MindTickle are network namespaces on this host,
which the kind nodes reach through Docker's bridge.

Then the same cluster as a user's own: the `existing` provider pointed at the
kind context, every story through the node agent, with no command run on this
host (no docker exec, no netns here)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.host import commands, docker_engine, iptables, netns
from failure_stories.host.iptables import SCENARIO_CHAIN
from failure_stories.providers.agent import agent_namespaces
from failure_stories.providers.existing import ExistingProvider
from failure_stories.providers.kind import CLUSTER_LABEL, KindProvider
from failure_stories.providers.kube import KFS, MANAGED_BY
from failure_stories.run.session import Session

STORIES = sorted(scenarios.discover())


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
        provider.up()
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


@pytest.mark.parametrize("story", STORIES)
def test_story_passes_on_kind(kind: KindProvider, tmp_path: Path, story: str) -> None:
    session = Session(kind, tmp_path)
    with session:
        report = session.run(scenarios.get(story))
    assert report.verdict == "passed", (report.error, [p.error for p in report.phases if p.error])
    assert report.provider == "kind" and report.info["kind_cluster"] == "kfs-default"
    judged = [m for p in report.phases for m in p.measurements.values() if m.ok is not None]
    assert judged and all(m.ok for m in judged)
    print(f"{story} on kind: {report.seconds:.1f}s")
    # Nothing of the run is left on the cluster, on the nodes or on this host.
    kube = kind.kube()
    assert not kube.core.list_namespace(label_selector=f"{MANAGED_BY}={KFS}").items
    assert netns.leftovers() == []
    states = commands.run(
        [
            docker_engine.docker(),
            "ps",
            "--filter",
            f"label={CLUSTER_LABEL}={kind.cluster_name}",
            "--format",
            "{{.State}}",
        ]
    ).split()
    assert states == ["running"] * 5
    for node in kind.node_containers():
        on_node = lambda argv, check=False, node=node: kind.node_exec(node, argv, check=check)  # noqa: E731
        assert iptables.chains(SCENARIO_CHAIN, on_node) == {t: [] for t in iptables.TABLES}


@pytest.fixture(scope="module")
def kind_context(kind: KindProvider) -> ExistingProvider:
    """The kind cluster as a cluster kfs did not build: its context, allowed, and
    the images a user's registry would serve already on its nodes."""
    from failure_stories.images import redis_operator

    kind.load_images(redis_operator.build_image())
    context = f"kind-{kind.cluster_name}"
    return ExistingProvider(context=context, allow=context, kubeconfig=str(kind.kubeconfig))


@pytest.mark.parametrize("story", STORIES)
def test_story_through_the_node_agent_on_kind(
    kind_context: ExistingProvider,
    kind: KindProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    story: str,
) -> None:
    seen: list[Any] = []
    real = subprocess.Popen.__init__

    def spy(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        seen.append(args)
        real(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    session = Session(kind_context, tmp_path)
    with session:
        report = session.run(scenarios.get(story))
    monkeypatch.undo()
    assert report.verdict == "passed", (report.error, [p.error for p in report.phases if p.error])
    assert report.info["node_access"] == "node agent"
    judged = [m for p in report.phases for m in p.measurements.values() if m.ok is not None]
    assert judged and all(m.ok for m in judged)
    assert seen == [], f"kfs ran commands on this host: {seen}"
    print(f"{story} on kind through the node agent: {report.seconds:.1f}s")
    kube = kind.kube()
    assert agent_namespaces(kube) == {}
    assert not kube.core.list_namespace(label_selector=f"{MANAGED_BY}={KFS}").items
    for node in kind.node_containers():
        on_node = lambda argv, check=False, node=node: kind.node_exec(node, argv, check=check)  # noqa: E731
        assert iptables.chains(SCENARIO_CHAIN, on_node) == {t: [] for t in iptables.TABLES}
