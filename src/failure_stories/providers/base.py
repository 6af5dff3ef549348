"""The Provider interface: where a scenario's cluster comes from.

One small interface, one module per implementation (local, kind, existing).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario
    from failure_stories.host.locks import LockBackend
    from failure_stories.providers.kube import Kube

# Label every provider puts on nodes that really run containers, so manifests
# can pin real-runtime workloads the same way on local, kind and existing clusters.
REAL_NODE_LABEL = "kfs.dev/real-node"
SIMULATED_NODE_LABEL = "kfs.dev/simulated-node"


def toolbox_pod(
    name: str, container: str = "main", *, grace_seconds: int = 1, ready_probe: bool = False
) -> dict[str, Any]:
    """A pod of the toolbox image that sleeps on a real node until deleted: a place
    inside the cluster to run commands from (the bench, end-to-end tests). Pinned
    to a real node because a simulated one has no address to exec through."""
    from failure_stories.images import TOOLBOX_IMAGE

    main: dict[str, Any] = {
        "name": container,
        "image": TOOLBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": ["sleep", "infinity"],
    }
    if ready_probe:
        main["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {REAL_NODE_LABEL: "true"},
            "terminationGracePeriodSeconds": grace_seconds,
            "containers": [main],
        },
    }


@dataclass
class ClusterStatus:
    provider: str
    running: bool
    kubeconfig: Path | None
    nodes: list[dict[str, str]] = field(default_factory=list)
    detail: str = ""


class Provider(abc.ABC):
    name: str = ""
    # kfs may delete a cluster this provider created (never one it was given).
    owns_cluster = True
    # One cluster serves every story, so runs may share it side by side.
    shared_cluster = True
    # Every node is a container on the same host CPUs as the other nodes and the
    # control plane, so a story that judges spare CPU (node.min_idle_cpu) runs
    # with the node to itself (NodeUse.exclusive).
    nodes_share_cpus = False

    @abc.abstractmethod
    def up(self) -> None:
        """Create or reuse the cluster; idempotent."""

    @abc.abstractmethod
    def down(self) -> None:
        """Delete the cluster and everything it created (caches stay)."""

    @abc.abstractmethod
    def status(self) -> ClusterStatus: ...

    @abc.abstractmethod
    def kube(self) -> Kube:
        """A client for the running cluster."""

    def locks(self) -> LockBackend:
        """Where runs and `kfs cleanup` keep their run and node locks: Leases on the
        cluster, which every machine using it sees. A provider whose cluster only
        this machine uses may keep them in flock() files instead."""
        from failure_stories.providers.leases import LeaseLocks

        return LeaseLocks(self.kube())

    def prepare(self, scenario: Scenario) -> Kube:
        """Make the cluster fit for ``scenario`` and return a client for it."""
        self.up()
        return self.kube()

    def info(self) -> dict[str, Any]:
        """Facts worth recording in every report (versions, kernel...)."""
        return {}

    def check_allowed(self) -> None:  # noqa: B027 - optional guard
        """Refuse (GuardRefusedError) if this cluster is not meant for faults.
        Clusters kfs builds always are; an existing one must be allowed."""

    # The pod network, for node-level rules that must match pod traffic.
    pod_cidr = "10.244.0.0/16"

    def manifest_variables(self) -> dict[str, str]:
        from failure_stories.images import OTELCOL_IMAGE, PAUSE_IMAGE, TOOLBOX_IMAGE

        return {
            "TOOLBOX_IMAGE": TOOLBOX_IMAGE,
            "PAUSE_IMAGE": PAUSE_IMAGE,
            "OTELCOL_IMAGE": OTELCOL_IMAGE,
            "POD_CIDR": self.pod_cidr,
        }

    def export_logs(self, target: Path) -> None:  # noqa: B027 - optional hook
        """Copy cluster component logs into ``target`` (on failure)."""

    # Node-level abilities (a node shell, node failure, cgroup reads, an outside
    # network, image loading) are interfaces in providers.capabilities: a
    # provider implements the ones it has.
    def sweep_node_changes(self, runs: Collection[str] | None = None) -> list[str]:
        """Undo node-level faults that interrupted runs left (KFS-* chains...):
        of the runs named in ``runs`` where the provider can tell them apart."""
        return []

    @contextlib.contextmanager
    def run_scope(
        self, namespace: str, scenario: Scenario, log: Callable[[str], None]
    ) -> Iterator[None]:
        """Held around one run, after its namespace exists and until its teardown
        is done: a provider that reaches nodes through the cluster (the node agent)
        sets up and removes that access here."""
        yield
