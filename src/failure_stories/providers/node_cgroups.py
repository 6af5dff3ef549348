"""A container's cgroup files, read on a node that is reached by a command
(``docker exec`` into a kind node, or the node agent on an existing cluster).

The layout under a node's cgroupfs depends on its kubelet (cgroupfs or systemd
driver, QoS class, a kind node's own cgroup namespace), so the directory is
found by the container's id rather than built from a template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from failure_stories.core.errors import ProviderError

NodeExec = Callable[[list[str]], str]


def container_id(pod: Any, container: str) -> str:
    """The runtime's id of ``container`` in ``pod`` (without the ``containerd://``)."""
    status = next((c for c in pod.status.container_statuses or [] if c.name == container), None)
    if status is None or not status.container_id:
        raise ProviderError(f"container {container} of {pod.metadata.name} is not running")
    return str(status.container_id.split("://", 1)[1])


def read(node_exec: NodeExec, node: str, cid: str, controller: str, filename: str) -> str:
    """``filename`` of the ``controller`` cgroup of container ``cid`` on ``node``."""
    found = node_exec(
        [
            "find",
            f"/sys/fs/cgroup/{controller}/",
            "-type",
            "d",
            "-name",
            f"*{cid}*",
            "-print",
            "-quit",
        ]
    ).strip()
    if not found:
        raise ProviderError(
            f"no {controller} cgroup for container {cid[:12]} on {node} "
            "(cgroup v1 controllers are read; is this node on cgroup v2?)"
        )
    return node_exec(["cat", f"{found}/{filename}"])
