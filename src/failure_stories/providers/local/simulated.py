"""Simulated nodes: Node objects whose heartbeats and pods kwok fakes, so the
real scheduler and node-lifecycle controller have several machines to work with."""

from __future__ import annotations

from typing import Any

from kubernetes.client.rest import ApiException

from failure_stories.core.wait import wait_for
from failure_stories.providers.base import SIMULATED_NODE_LABEL
from failure_stories.providers.kube import Kube
from failure_stories.providers.local import layout as L

CPU = "4"
MEMORY = "16Gi"
PODS = "110"


def node_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {L.KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "kfs-sim-4cpu-16gi",
                "topology.kubernetes.io/zone": "kfs-zone-a",
                SIMULATED_NODE_LABEL: "true",
                "type": "kwok",
            },
        },
        "spec": {},
    }


def node_status() -> dict[str, Any]:
    resources = {"cpu": CPU, "memory": MEMORY, "pods": PODS}
    return {
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "kwok-simulated",
                "containerRuntimeVersion": "kwok-simulated",
            },
        }
    }


def ensure(kube: Kube) -> None:
    for name in L.SIMULATED_NODES:
        try:
            kube.core.read_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            kube.core.create_node(node_manifest(name))
            kube.core.patch_node_status(name, node_status())


def ensure_capacity(kube: Kube) -> None:
    """Re-assert the nodes' size once kwok has initialised them.

    kwok's node-initialize stage writes its own defaults (1k CPUs) into a new
    node's status and may do so after our first patch; the scheduling stories
    depend on the size, so patch again until it sticks.
    """
    want = node_status()["status"]

    def sized() -> bool:
        ok = True
        for name in L.SIMULATED_NODES:
            node = kube.core.read_node(name)
            have = node.status.allocatable or {}
            if any(have.get(k) != v for k, v in want["allocatable"].items()):
                kube.core.patch_node_status(name, {"status": want})
                ok = False
        return ok

    wait_for(sized, what="simulated nodes to keep their 4 CPU / 16Gi size", timeout=60)
