"""Acceptance of the local provider's real node: every test runs real pods on the
real kubelet + containerd + runc, through the real API server."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import pytest

from failure_stories.core.errors import ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import netns
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.providers.base import REAL_NODE_LABEL
from failure_stories.providers.kube import Kube, pod_ready
from failure_stories.providers.local import layout as L


def pod(name: str, command: list[str], **spec: object) -> dict:
    container = {
        "name": "main",
        "image": TOOLBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": command,
    }
    container.update(spec.pop("container", {}))  # type: ignore[arg-type]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "true"},
            "containers": [container],
            "terminationGracePeriodSeconds": 1,
            **spec,
        },
    }


def wait_phase(kube: Kube, ns: str, name: str, phases: set[str], timeout: float = 60) -> None:
    wait_for(
        lambda: kube.core.read_namespaced_pod(name, ns).status.phase in phases,
        what=f"pod {name} in {phases}",
        timeout=timeout,
    )


def test_one_real_node_ready_beside_the_simulated_ones(kube: Kube):
    nodes = {n.metadata.name: n for n in kube.core.list_node().items}
    assert set(nodes) == {L.REAL_NODE, *L.SIMULATED_NODES}
    real = nodes[L.REAL_NODE]
    assert kube.node_ready(real)
    info = real.status.node_info
    assert info.kernel_version == platform.release()
    assert info.container_runtime_version.startswith("containerd://1.")
    assert info.kubelet_version == "v1.34.4"
    assert real.metadata.labels[REAL_NODE_LABEL] == "true"
    assert "kwok.x-k8s.io/node" not in (real.metadata.annotations or {})
    for name in L.SIMULATED_NODES:
        assert kube.node_ready(nodes[name])


def test_logs_and_exec_through_the_api_server(kube, namespace, kubectl):
    kube.apply(
        [pod("hello", ["python3", "-c", "print(6 * 7); import time; time.sleep(600)"])], namespace
    )
    wait_phase(kube, namespace, "hello", {"Running"})
    wait_for(
        lambda: "42" in kubectl("logs", "-n", namespace, "hello").stdout,
        what="the pod's output in kubectl logs",
        timeout=30,
    )
    out = kubectl("exec", "-n", namespace, "hello", "--", "redis-server", "--version").stdout
    assert out.startswith("Redis server v=")


def test_readiness_probes_gate_endpoints_and_liveness_restarts(kube, namespace):
    http = pod(
        "web",
        ["python3", "/opt/kfs/workloads/httpbin.py", "--port", "8080"],
        container={
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
        },
    )
    gated = pod(
        "gated",
        ["sh", "-c", "sleep 600"],
        container={
            "readinessProbe": {
                "exec": {"command": ["test", "-f", "/tmp/ready"]},
                "periodSeconds": 1,
            }
        },
    )
    gated["metadata"]["labels"]["app"] = "web"  # behind the same Service
    dying = pod(
        "dying",
        ["sleep", "600"],
        container={
            "livenessProbe": {
                "exec": {"command": ["false"]},
                "periodSeconds": 1,
                "failureThreshold": 1,
            }
        },
    )
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kube.apply([http, gated, dying, svc], namespace)
    wait_for(
        lambda: kube.ready_endpoints(namespace, "web") == 1,
        what="only the httpGet-ready pod behind the Service",
        timeout=60,
    )
    gated_pod = kube.core.read_namespaced_pod("gated", namespace)
    assert gated_pod.status.phase == "Running" and not pod_ready(gated_pod)
    assert kube.exec(namespace, "gated", ["touch", "/tmp/ready"])[0] == 0
    wait_for(
        lambda: kube.ready_endpoints(namespace, "web") == 2,
        what="the exec-probed pod to join the endpoints",
        timeout=30,
    )
    wait_for(
        lambda: (
            (
                kube.core.read_namespaced_pod("dying", namespace)
                .status.container_statuses[0]
                .restart_count
            )
            >= 2
        ),
        what="the kubelet to restart a container whose liveness probe fails",
        timeout=90,
    )


def test_cpu_limit_is_a_real_cfs_quota(kube, namespace, kfs_provider):
    burst = (
        "import os, time\n"
        "while True:\n"
        "    t = time.monotonic()\n"
        "    while time.monotonic() - t < 0.05: pass\n"
        "    time.sleep(0.05)\n"
    )
    spec = pod(
        "bursty",
        ["python3", "-c", burst],
        container={"resources": {"limits": {"cpu": "200m", "memory": "128Mi"}}},
    )
    kube.apply([spec], namespace)
    wait_phase(kube, namespace, "bursty", {"Running"})
    stat = (
        kfs_provider.container_cgroup(
            kube.core.read_namespaced_pod("bursty", namespace), "main", "cpu"
        )
        / "cpu.stat"
    )
    quota = int((stat.parent / "cpu.cfs_quota_us").read_text())
    period = int((stat.parent / "cpu.cfs_period_us").read_text())
    assert quota == period * 200 // 1000  # 200m of a 100 ms period

    def throttled() -> int:
        fields = dict(line.split() for line in stat.read_text().splitlines())
        return int(fields["nr_throttled"])

    first = throttled()
    wait_for(lambda: throttled() > first + 5, what="nr_throttled to grow", timeout=30)


def test_memory_limit_kills_and_restarts(kube, namespace):
    hog = pod(
        "hog",
        ["python3", "-c", "b = bytearray(200 * 1024 * 1024); import time; time.sleep(600)"],
        container={"resources": {"limits": {"memory": "64Mi"}}},
    )
    kube.apply([hog], namespace)

    def oom_restarted() -> bool:
        st = kube.core.read_namespaced_pod("hog", namespace).status.container_statuses
        if not st or st[0].restart_count < 1:
            return False
        last = st[0].last_state.terminated
        return last is not None and last.reason == "OOMKilled"

    wait_for(oom_restarted, what="an OOMKilled container restarted by the kubelet", timeout=90)


def test_clusterip_service_reaches_pods_from_another_pod(kube, namespace, kubectl):
    server = pod(
        "server",
        ["python3", "/opt/kfs/workloads/httpbin.py", "--port", "8080"],
        container={
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
        },
    )
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "server"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    client = pod("client", ["sleep", "600"])
    kube.apply([server, svc, client], namespace)
    wait_for(
        lambda: kube.ready_endpoints(namespace, "server") == 1, what="server ready", timeout=60
    )
    wait_phase(kube, namespace, "client", {"Running"})
    ip = kube.core.read_namespaced_service("server", namespace).spec.cluster_ip

    def reply() -> str:
        code, out, _ = kube.exec(
            namespace, "client", ["curl", "-sS", "-m", "2", f"http://{ip}/healthz"]
        )
        return out.strip() if code == 0 else ""

    # A new Service is routable once kube-proxy has synced its rules.
    assert wait_for(reply, what="the ClusterIP to answer", timeout=30) == "ok"


def test_external_call_needs_the_node_snat(kube, namespace, kubectl):
    outside = netns.create("198.51.100.0/24")
    rule = [
        "-t",
        "nat",
        "-I",
        "POSTROUTING",
        "1",
        "-s",
        L.POD_CIDR,
        "-d",
        outside.subnet,
        "-j",
        "RETURN",
    ]
    try:
        outside.serve_http(80, "hello from outside")
        kube.apply([pod("caller", ["sleep", "600"])], namespace)
        wait_phase(kube, namespace, "caller", {"Running"})
        url = f"http://{outside.address}/"
        ok = kubectl("exec", "-n", namespace, "caller", "--", "curl", "-sS", "-m", "3", url)
        assert ok.stdout == "hello from outside"
        import subprocess

        subprocess.run(["iptables", "-w", *rule], check=True)
        t0 = time.monotonic()
        bad = kubectl(
            "exec", "-n", namespace, "caller", "--", "curl", "-sS", "-m", "3", url, check=False
        )
        assert bad.returncode != 0
        assert "timed out" in bad.stderr.lower()
        assert time.monotonic() - t0 >= 3
    finally:
        import subprocess

        rule[rule.index("-I")] = "-D"
        rule.remove("1")
        subprocess.run(["iptables", "-w", *rule], check=False, capture_output=True)
        outside.delete()
    assert outside.name not in netns.leftovers()
    assert not Path(f"/sys/class/net/{outside.host_veth}").exists()


def test_pod_bridge_keeps_its_mac_as_pods_come_and_go(kube, namespace, kfs_provider):
    """A bridge that took its ports' lowest MAC would change it whenever a pod's
    veth joins or leaves, and every pod's ARP entry for its gateway would go
    stale: the pinned address (addr_assign_type 3, "set") must not move."""
    if kfs_provider.name != "local":
        pytest.skip("the pod bridge kfs0 belongs to the local provider's real node")
    sysfs = Path(f"/sys/class/net/{L.BRIDGE}")
    assert (sysfs / "addr_assign_type").read_text().strip() == "3"
    ports_before = {p.name for p in (sysfs / "brif").iterdir()}
    kube.apply([pod(f"joiner-{i}", ["sleep", "600"]) for i in range(2)], namespace)
    for i in range(2):
        wait_phase(kube, namespace, f"joiner-{i}", {"Running"})
    assert len({p.name for p in (sysfs / "brif").iterdir()} - ports_before) == 2
    assert (sysfs / "address").read_text().strip() == L.BRIDGE_MAC


def test_a_rollout_whose_image_is_not_on_the_node_is_refused_at_once(kube: Kube, namespace: str):
    """A cluster kfs did not build may lack an image kfs makes: the wait says which
    image, on which node, as soon as the kubelet gives up on it, not after its timeout."""
    container = {
        "name": "main",
        "image": "localhost/kfs/not-loaded:v0",
        "imagePullPolicy": "Never",
        "command": ["sleep", "infinity"],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "absent"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "absent"}},
            "template": {
                "metadata": {"labels": {"app": "absent"}},
                "spec": {
                    "nodeSelector": {REAL_NODE_LABEL: "true"},
                    "containers": [container],
                    "terminationGracePeriodSeconds": 1,
                },
            },
        },
    }
    kube.apply([deployment], namespace)
    start = time.monotonic()
    with pytest.raises(ProviderError) as refused:
        kube.wait_rollout(namespace, "absent", timeout=90)
    took = time.monotonic() - start
    message = str(refused.value)
    assert "ErrImageNeverPull for image localhost/kfs/not-loaded:v0" in message
    assert f"on node {L.REAL_NODE}" in message and "\n" not in message
    assert took < 30, f"refused only after {took:.1f}s"
