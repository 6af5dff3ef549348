"""A real kind cluster of 1 control plane and 3 workers, made and measured:
the node image's build time, `kind create cluster` until every node is Ready,
and the cluster's memory at rest. Used by bench.py (``--kind``) and by
tests/e2e/test_kind_cluster.py."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from failure_stories.core.wait import sample, wait_for
from failure_stories.host import commands, docker_engine
from failure_stories.providers.kind_image import ensure_node_image, kind_binary
from failure_stories.providers.local import binaries

# The local provider's pods use 10.244.0.0/16 on this host, and the host's nat
# rules for them match by source address: a kind pod on the same range would
# be masqueraded by the host as well, and a missing SNAT on the kind node
# would go unseen.
POD_SUBNET = "10.250.0.0/16"
CONFIG_1_3 = f"""\
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  podSubnet: "{POD_SUBNET}"
nodes:
  - role: control-plane
  - role: worker
  - role: worker
  - role: worker
"""
CLUSTER_LABEL = "io.x-k8s.kind.cluster"


def kubectl(kubeconfig: Path, *args: str, check: bool = True, timeout: float = 60) -> str:
    argv = [str(binaries.path("kubectl")), f"--kubeconfig={kubeconfig}", *args]
    return commands.run(argv, check=check, timeout=timeout, what=f"kubectl {' '.join(args[:3])}")


def nodes_ready(kubeconfig: Path) -> dict[str, bool]:
    out = kubectl(kubeconfig, "get", "nodes", "-o", "json", check=False)
    if not out.strip():
        return {}
    ready: dict[str, bool] = {}
    for node in json.loads(out)["items"]:
        conditions = node["status"].get("conditions", [])
        ready[node["metadata"]["name"]] = any(
            c["type"] == "Ready" and c["status"] == "True" for c in conditions
        )
    return ready


def create(name: str, kubeconfig: Path, config: str = CONFIG_1_3, nodes: int = 4) -> float:
    """`kind create cluster`; seconds from its start until ``nodes`` nodes are Ready."""
    image = ensure_node_image()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="kfs-kind-") as fh:
        fh.write(config)
        fh.flush()
        started = time.monotonic()
        commands.run(
            [
                str(kind_binary()),
                "create",
                "cluster",
                "--name",
                name,
                "--image",
                image,
                "--config",
                fh.name,
                "--kubeconfig",
                str(kubeconfig),
            ],
            what=f"kind create cluster {name}",
            timeout=600,
        )

    def all_ready() -> bool:
        ready = nodes_ready(kubeconfig)
        return len(ready) == nodes and all(ready.values())

    wait_for(all_ready, what=f"{nodes} Ready nodes in {name}", timeout=180, interval=0.5)
    return time.monotonic() - started


def containers(name: str) -> list[str]:
    out = commands.run(
        [docker_engine.docker(), "ps", "-aq", "--filter", f"label={CLUSTER_LABEL}={name}"],
        check=False,
    )
    return out.split()


def memory_at_rest(name: str) -> dict[str, float]:
    """MiB charged to the cluster's node containers (their cgroups hold every
    process of the node: systemd, containerd, kubelet, the pods)."""
    usage = rss = 0
    for cid in containers(name):
        full = commands.run(
            [docker_engine.docker(), "inspect", "--format", "{{.Id}}", cid], check=False
        ).strip()
        memcg = Path("/sys/fs/cgroup/memory/docker") / full
        usage += int((memcg / "memory.usage_in_bytes").read_text())
        stats = dict(line.split() for line in (memcg / "memory.stat").read_text().splitlines())
        rss += int(stats.get("total_rss", 0))
    return {"usage_mib": round(usage / 2**20, 1), "rss_mib": round(rss / 2**20, 1)}


def delete(name: str) -> None:
    commands.run(
        [str(kind_binary()), "delete", "cluster", "--name", name],
        what=f"kind delete cluster {name}",
        timeout=300,
    )


def numbers(name: str = "kfs-bench-kind", rest_seconds: float = 30) -> dict[str, Any]:
    docker_engine.ensure_engine()
    started = time.monotonic()
    ensure_node_image()
    image_seconds = time.monotonic() - started
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        try:
            ready = create(name, kubeconfig)
            seen: list[dict[str, float]] = []
            # At rest: sampled while nothing is deployed; the last sample counts.
            sample(lambda: seen.append(memory_at_rest(name)), every=5, duration=rest_seconds)
            memory = seen[-1]
        finally:
            delete(name)
    return {
        "kind": {
            "node_image_seconds_this_run": round(image_seconds, 1),
            "create_to_all_ready_seconds": round(ready, 1),
            "nodes": 4,
            "memory_at_rest": memory,
        }
    }
