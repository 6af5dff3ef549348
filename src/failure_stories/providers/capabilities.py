"""What a provider can do beyond giving a cluster: each ability is a small
interface a provider implements or lacks, never a check of its name.

A story names the abilities it needs in scenario.yaml (``needs: [node-shell,
outside-network]``); `kfs run` and the runner refuse at once, in one line, a
provider that lacks one, instead of failing half-way through a fault.

    name             interface        local                kind                existing
    node-shell       NodeShell        the host             docker exec         the node agent
    node-failure     NodeFailure      kwok nodes frozen    docker pause        kubelet frozen
    cgroup-read      CgroupReader     the host's cgroupfs  docker exec         the node agent
    outside-network  OutsideNetwork   netns on the host    netns, Docker host  netns in the agent
    image-loading    ImageLoader      containerd import    ctr in each node    -
    operator-host    OperatorHost     this checkout        -                   -
    egress-snat      EgressSnat       the masq addon       the kind CNI's      the user's masq agent

The node agent (providers.agent) is how a cluster kfs did not build is reached:
a privileged pod per node and run, every change journalled on the cluster.

Two facts about the cluster itself are flags on the Provider, not abilities:
``owns_cluster`` (kfs may delete what it created; never an existing cluster)
and ``shared_cluster`` (one cluster for every story, so runs may go side by side).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from failure_stories.host.netns import OutsideHost
    from failure_stories.providers.snat import SnatOwner


@runtime_checkable
class NodeShell(Protocol):
    def node_exec(self, node: str, argv: list[str], check: bool = True) -> str:
        """Run a command in the node's host context; return stdout."""


@runtime_checkable
class NodeFailure(Protocol):
    def stop_node(self, node: str) -> None:
        """Make ``node`` stop heartbeating, as a crashed machine would."""

    def start_node(self, node: str) -> None:
        """Undo stop_node."""


@runtime_checkable
class CgroupReader(Protocol):
    def read_cgroup(self, pod: Any, container: str, controller: str, filename: str) -> str:
        """Read a cgroup file of a running container, as seen from its node."""


@runtime_checkable
class OutsideNetwork(Protocol):
    def outside_host(self, subnet: str, node: str) -> OutsideHost:
        """A host outside the cluster on ``subnet``, reachable from ``node`` (see netns)."""


@runtime_checkable
class ImageLoader(Protocol):
    def load_images(self, archives: dict[str, Path]) -> None:
        """Make locally built images (ref -> archive) available to the cluster's nodes."""


@runtime_checkable
class OperatorHost(Protocol):
    """Runs the kfs operator from this checkout, beside kfs (the local host),
    instead of the in-cluster Deployment of the operator image."""

    @property
    def operator_state(self) -> Path:
        """Where the operator's state directory lives (KFS_STATE of its process)."""


@runtime_checkable
class EgressSnat(Protocol):
    """Pod egress SNAT is owned by kfs's masq agent (providers.snat), whose
    ConfigMap a story may change."""

    def snat_owner(self) -> SnatOwner | None:
        """The masq agent DaemonSet of the cluster, or None if it runs none."""


# One interface per ability a story may name (contract.abilities), same order.
CAPABILITIES: dict[str, type] = {
    "node-shell": NodeShell,
    "node-failure": NodeFailure,
    "cgroup-read": CgroupReader,
    "outside-network": OutsideNetwork,
    "image-loading": ImageLoader,
    "operator-host": OperatorHost,
    "egress-snat": EgressSnat,
}


def has(provider: object, capability: str) -> bool:
    return isinstance(provider, CAPABILITIES[capability])


def lacking(provider: object, needs: tuple[str, ...]) -> list[str]:
    """The abilities in ``needs`` that ``provider`` does not have."""
    return [c for c in needs if not has(provider, c)]
