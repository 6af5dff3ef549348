"""The real kind (v0.30.0) makes a real 1+3 cluster here, offline, from the
project's node image: every node Ready, pods reach each other across nodes
and through a ClusterIP Service, egress to an outside host is SNATed by the
node (and is not when the masquerade ConfigMap excludes that range), and
deleting the cluster leaves nothing behind. One cluster for the module.

Test pods run the CNI agent's image (Debian's python3 and curl), which every
node holds from the start, so no `kind load` is needed here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failure_stories.core.wait import wait_for
from failure_stories.host import commands, docker_engine, netns
from failure_stories.images.kind_node import CNI_IMAGE
from failure_stories.tools import kind_bench

NAME = "kfs-e2e-kind"
WORKERS = [f"{NAME}-worker", f"{NAME}-worker2", f"{NAME}-worker3"]


class Cluster:
    def __init__(self, kubeconfig: Path, ready_seconds: float) -> None:
        self.kubeconfig = kubeconfig
        self.ready_seconds = ready_seconds

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return kind_bench.kubectl(self.kubeconfig, *args, check=check, timeout=timeout)

    def pod(self, name: str, node: str, *command: str) -> str:
        """A pod pinned to ``node``; returns its IP once it runs."""
        spec = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "main",
                        "image": CNI_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": list(command or ("sleep", "infinity")),
                    }
                ],
            },
        }
        commands.run(
            [
                str(kind_bench.binaries.path("kubectl")),
                f"--kubeconfig={self.kubeconfig}",
                "apply",
                "-f",
                "-",
            ],
            input=json.dumps(spec),
        )

        def running() -> str | None:
            out = self.kubectl("get", "pod", name, "-o", "json", check=False)
            status = json.loads(out)["status"] if out else {}
            return status.get("podIP") if status.get("phase") == "Running" else None

        return wait_for(running, what=f"pod {name} running", timeout=90)

    def curl(self, pod: str, url: str, timeout: float = 5) -> str:
        return self.kubectl(
            "exec", pod, "--", "curl", "-sS", "-m", f"{timeout:g}", url, check=False
        ).strip()


def _volumes() -> set[str]:
    return set(commands.run([docker_engine.docker(), "volume", "ls", "-q"]).split())


def _host_rules() -> list[str]:
    return [
        line
        for table in ("filter", "nat")
        for line in commands.run(["iptables", "-w", "-t", table, "-S"]).splitlines()
    ]


def _node_ips() -> list[str]:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    out = commands.run(
        [docker_engine.docker(), "inspect", "--format", fmt, *kind_bench.containers(NAME)]
    )
    return out.split()


def _assert_nothing_left(volumes_before: set[str], node_ips: list[str]) -> None:
    assert kind_bench.containers(NAME) == []
    assert _volumes() - volumes_before == set()
    assert [r for r in _host_rules() if any(f"{ip}/32" in r for ip in node_ips)] == []
    docker = docker_engine.docker()
    bridge = (
        "br-"
        + commands.run([docker, "network", "inspect", "--format", "{{.Id}}", "kind"]).strip()[:12]
    )
    # Another kind cluster may share kind's network; only an unused one goes.
    if commands.succeeds([docker, "network", "rm", "kind"]):
        assert [r for r in _host_rules() if bridge in r] == []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    docker_engine.ensure_engine()
    if kind_bench.containers(NAME):
        kind_bench.delete(NAME)  # a crashed earlier run's
    volumes_before = _volumes()
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    node_ips: list[str] = []
    try:
        ready = kind_bench.create(NAME, kubeconfig)
        node_ips = _node_ips()
        yield Cluster(kubeconfig, ready)
    finally:
        kind_bench.delete(NAME)
    _assert_nothing_left(volumes_before, node_ips)


def test_dockerd_leaves_the_hosts_forward_policy_alone(cluster: Cluster) -> None:
    # A DROP policy would silently cut the local cluster's pods on this same host.
    policy = commands.run(["iptables", "-w", "-S", "FORWARD"]).splitlines()[0]
    assert policy == "-P FORWARD ACCEPT"


def test_all_four_nodes_ready_quickly(cluster: Cluster) -> None:
    ready = kind_bench.nodes_ready(cluster.kubeconfig)
    assert sorted(ready) == sorted([f"{NAME}-control-plane", *WORKERS])
    assert all(ready.values())
    print(f"kind create to 4 Ready nodes: {cluster.ready_seconds:.1f}s")
    # The goal is 90 s on 2 cores; 180 s leaves room for a machine shared by others.
    assert cluster.ready_seconds < 180


def test_pod_to_pod_across_workers_and_service(cluster: Cluster) -> None:
    server_ip = cluster.pod("server", WORKERS[0], "python3", "-m", "http.server", "8080")
    cluster.pod("client", WORKERS[1])
    cluster.pod("client3", WORKERS[2])
    assert server_ip.startswith("10.250.")

    def listing() -> str | None:
        out = cluster.curl("client", f"http://{server_ip}:8080/")
        return out if "Directory listing" in out else None

    wait_for(listing, what="pod-to-pod HTTP across workers", timeout=30)
    cluster.kubectl("expose", "pod", "server", "--port", "80", "--target-port", "8080")
    svc_ip = cluster.kubectl("get", "svc", "server", "-o", "jsonpath={.spec.clusterIP}")

    def via_service() -> str | None:
        out = cluster.curl("client3", f"http://{svc_ip}/")
        return out if "Directory listing" in out else None

    wait_for(via_service, what="ClusterIP Service from a third node", timeout=30)


@pytest.fixture
def outside() -> Iterator[netns.OutsideHost]:
    host = netns.create("203.0.113.0/24")
    try:
        host.serve_http(80, body="outside")
        yield host
    finally:
        host.delete()


def _masquerade(cluster: Cluster, non_masquerade: list[str]) -> None:
    config = json.dumps(
        {"nonMasqueradeCIDRs": non_masquerade, "masqLinkLocal": False, "resyncInterval": "1s"}
    )
    patch = json.dumps({"data": {"config": config}})
    cluster.kubectl("-n", "kube-system", "patch", "configmap", "kfs-masq-agent", "-p", patch)


def test_egress_is_snated_by_the_node(cluster: Cluster, outside: netns.OutsideHost) -> None:
    cluster.pod("egress", WORKERS[0])
    url = f"http://{outside.address}/"
    started = time.monotonic()
    wait_for(lambda: cluster.curl("egress", url) == "outside", what="egress via SNAT", timeout=30)
    print(f"egress answered after {time.monotonic() - started:.1f}s")
    rules = commands.run(
        [docker_engine.docker(), "exec", WORKERS[0], "iptables", "-t", "nat", "-S"]
    ).splitlines()
    chain = [r for r in rules if r.startswith("-A KIND-MASQ-AGENT ")]
    assert chain and chain[-1].endswith("-j MASQUERADE"), chain


def test_egress_without_snat_when_the_configmap_excludes_it(
    cluster: Cluster, outside: netns.OutsideHost
) -> None:
    cluster.pod("nosnat", WORKERS[1])
    url = f"http://{outside.address}/"
    wait_for(lambda: cluster.curl("nosnat", url) == "outside", what="egress via SNAT", timeout=30)
    _masquerade(cluster, [outside.subnet])
    try:
        # Replies to a pod address have no route back from the outside host.
        wait_for(
            lambda: cluster.curl("nosnat", url, timeout=2) != "outside",
            what="egress to fail without SNAT",
            timeout=30,
        )
        assert cluster.curl("nosnat", url, timeout=3) != "outside"
    finally:
        _masquerade(cluster, [])
    wait_for(lambda: cluster.curl("nosnat", url) == "outside", what="SNAT restored", timeout=30)
