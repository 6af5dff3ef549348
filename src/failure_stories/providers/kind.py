"""The `kind` provider: the real kind, offline, on a Docker engine on this host.

kind (built by `make setup` from its module) creates the cluster from the node
image built here (providers.kind_image); kfs starts dockerd itself when none
answers (host.docker_engine) and stops it again at `kfs cluster down`.

Each story names the kind config it runs on (``kind_config``); the stories
here all name ``default``, one control plane and four workers with the union
of what they need, so one cluster serves the whole suite and runs may share it:
the first worker runs the one-node stories, the other three are the machines
Moonlight spreads its replicas over and fails.

Node access is the node containers': ``docker exec`` for a node shell and for
cgroup reads (inside the node's own cgroup namespace), ``docker pause`` for a
node failure. An outside host is a network namespace on the Docker host: the
nodes reach it through Docker's bridge, and its replies find their way back
only to the nodes' own addresses, so a pod's egress works only when its node
SNATs it (the masq agent of the node image's CNI, chain KIND-MASQ-AGENT).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from failure_stories.core import atomic, paths, timing
from failure_stories.core.errors import (
    ClusterUnreachableError,
    DefinitionError,
    MissingToolError,
    ProviderError,
)
from failure_stories.core.wait import wait_for
from failure_stories.host import commands, docker_engine, iptables, locks, netns
from failure_stories.host.iptables import SCENARIO_CHAIN
from failure_stories.host.netns import OutsideHost
from failure_stories.images.load import import_into_nodes
from failure_stories.providers import node_cgroups, snat
from failure_stories.providers.base import (
    REAL_NODE_LABEL,
    SIMULATED_NODE_LABEL,
    ClusterStatus,
    Provider,
)
from failure_stories.providers.kind_image import ensure_node_image
from failure_stories.providers.kube import Kube
from failure_stories.providers.local import binaries

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario

CONFIG_DIR = paths.KIND_CONFIGS
PREFIX = "kfs-"
CLUSTER_LABEL = "io.x-k8s.kind.cluster"
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
LOCK = "kind-cluster"
# A node image of the user's (kindest/node from a registry) instead of the one built here.
IMAGE_ENV = "KFS_KIND_NODE_IMAGE"


def _state_dir() -> Path:
    return Path(os.environ.get("KFS_STATE_KIND", "~/.local/state/kfs/kind")).expanduser()


class KindProvider(Provider):
    name = "kind"
    # Every story here names the same config, so one cluster serves them all.
    shared_cluster = True
    # Four node containers and the control plane on one host's CPUs: measured on
    # 2 cores, Buffer's windows saw 7-44% idle beside Flant and PrometheusKube.
    nodes_share_cpus = True

    def __init__(self, keep: bool = False, config: str = "default") -> None:
        self.keep = keep
        self.config = config
        self._kube: Kube | None = None

    @staticmethod
    def require_tools() -> None:
        """One line naming what is missing, before anything is started or built
        (kind itself is built with the Kubernetes binaries, as the local cluster's)."""
        docker_engine.docker()

    @property
    def cluster_name(self) -> str:
        return PREFIX + self.config

    @property
    def kubeconfig(self) -> Path:
        return _state_dir() / f"{self.cluster_name}.kubeconfig"

    def config_file(self) -> Path:
        path = CONFIG_DIR / f"{self.config}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise DefinitionError(f"no kind config {path.name} in {CONFIG_DIR} (have: {known})")
        return path

    @property
    def pod_cidr(self) -> str:  # type: ignore[override]
        config = yaml.safe_load(self.config_file().read_text()) or {}
        return str((config.get("networking") or {}).get("podSubnet", "10.244.0.0/16"))

    @staticmethod
    def _kind(*args: str, timeout: float = 120, what: str | None = None) -> str:
        return commands.run([str(binaries.path("kind")), *args], timeout=timeout, what=what)

    def clusters(self) -> list[str]:
        """kfs's kind clusters (none before kind was built or while no engine runs)."""
        self.require_tools()
        if not os.access(binaries.path("kind"), os.X_OK) or not docker_engine.engine_answers():
            return []
        return [c for c in self._kind("get", "clusters").split() if c.startswith(PREFIX)]

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        # One process creates, reuses or deletes the cluster at a time: parallel
        # runs (--jobs) all start by making sure it is up.
        return locks.held(LOCK, "another kfs process creating or deleting a kind cluster")

    # -- lifecycle ----------------------------------------------------------------
    def up(self) -> None:
        self.require_tools()
        binaries.ensure()  # kind, kubectl and the node image's binaries
        with self._lock():
            docker_engine.ensure_engine()
            created = self.cluster_name not in self.clusters()
            if created:
                self._create()
            elif not self.kubeconfig.exists():
                _state_dir().mkdir(parents=True, exist_ok=True)
                text = self._kind("get", "kubeconfig", "--name", self.cluster_name)
                atomic.write_text(self.kubeconfig, text, mode=0o600)
            kube = self.kube()
            self._ready(kube, every_node=created)
            self._label_nodes(kube)
            self._load_images()

    def _create(self) -> None:
        image = os.environ.get(IMAGE_ENV) or ensure_node_image()
        _state_dir().mkdir(parents=True, exist_ok=True)
        self._kind(
            "create",
            "cluster",
            "--name",
            self.cluster_name,
            "--image",
            image,
            "--config",
            str(self.config_file()),
            "--kubeconfig",
            str(self.kubeconfig),
            timeout=600,
            what=f"kind create cluster {self.cluster_name}",
        )
        self._kube = None

    def _ready(self, kube: Kube, every_node: bool) -> None:
        """The nodes Ready and the node's SNAT owner in place, before any run's pods.

        On a cluster that was there already, a NotReady node Moonlight fails is
        another run's fault (that run holds its lock and waits for it itself):
        waiting for it here would make every run queue behind it."""

        def ready() -> bool:
            nodes = [
                n
                for n in kube.core.list_node().items
                if every_node or SIMULATED_NODE_LABEL not in (n.metadata.labels or {})
            ]
            return bool(nodes) and all(kube.node_ready(n.metadata.name) for n in nodes)

        wait_for(ready, what=f"the nodes of {self.cluster_name} Ready", timeout=180)
        if os.environ.get(IMAGE_ENV):
            return  # kindnetd's masquerade is no masq agent: egress-snat stories refuse
        wait_for(
            lambda: snat.find(kube) is not None,
            what=f"the masq agent DaemonSet of {self.cluster_name}",
            timeout=60,
        )

    def _label_nodes(self, kube: Kube) -> None:
        """The embedded cluster's shape: the first worker is where the one-node
        stories run (REAL_NODE_LABEL), the others are the several machines the
        scheduling story spreads over and fails (SIMULATED_NODE_LABEL), so a
        node failure never lands on a node another run uses."""
        workers = sorted(
            n.metadata.name
            for n in kube.core.list_node().items
            if CONTROL_PLANE_LABEL not in (n.metadata.labels or {})
        )
        for i, name in enumerate(workers):
            label = REAL_NODE_LABEL if i == 0 else SIMULATED_NODE_LABEL
            kube.patch_node_labels(name, {label: "true"})

    def _load_images(self) -> None:
        from failure_stories import images

        self.load_images(images.build_images())

    def node_states(self) -> dict[str, str]:
        """Each node container's state (running, paused, exited...), by name."""
        out = commands.run(
            [
                docker_engine.docker(),
                "ps",
                "-a",
                "--filter",
                f"label={CLUSTER_LABEL}={self.cluster_name}",
                "--format",
                "{{.Names}} {{.State}}",
            ],
            what="docker ps",
        )
        pairs = (line.partition(" ") for line in out.splitlines())
        return {name: state.strip() for name, _, state in sorted(pairs) if name}

    def node_containers(self) -> list[str]:
        return list(self.node_states())

    def load_images(self, archives: dict[str, Path]) -> None:
        # Straight into each node's containerd, skipping what it already holds
        # (`kind load` would first load the image into Docker and export it again).
        # Not into a node another run has paused (Moonlight's failure): `docker
        # exec` is refused there. It got the suite's images when it was created.
        running = [n for n, state in self.node_states().items() if state == "running"]
        import_into_nodes(archives, running, docker_engine.docker())

    def prepare(self, scenario: Scenario) -> Kube:
        if scenario.meta.kind_config != self.config:
            self.config = scenario.meta.kind_config
            self._kube = None
        self.up()
        return self.kube()

    def down(self) -> None:
        with self._lock():
            for name in self.clusters():
                self._kind(
                    "delete", "cluster", "--name", name, timeout=300, what=f"kind delete {name}"
                )
                (_state_dir() / f"{name}.kubeconfig").unlink(missing_ok=True)
            self._kube = None
            docker_engine.stop_engine_if_ours()

    def kube(self) -> Kube:
        if self._kube is None:
            if not self.kubeconfig.exists():
                raise ClusterUnreachableError(
                    f"kind cluster {self.cluster_name} is not running: "
                    "`kfs cluster up --provider kind`"
                )
            self._kube = Kube(self.kubeconfig)
        return self._kube

    def status(self) -> ClusterStatus:
        try:
            running = self.cluster_name in self.clusters()
        except MissingToolError as exc:
            return ClusterStatus(self.name, False, None, detail=str(exc))
        st = ClusterStatus(self.name, running, self.kubeconfig if running else None)
        if running:
            st.nodes = self.kube().node_summaries(lambda _n: "kind")
        elif not docker_engine.engine_answers():
            st.detail = "no Docker engine runs (kfs starts one at `kfs cluster up`)"
        return st

    def info(self) -> dict[str, Any]:
        return {
            "kind_cluster": self.cluster_name,
            "kind_config": self.config,
            "kind": binaries.KIND_VERSION,
            "kubernetes": binaries.KUBERNETES_VERSION,
        }

    def export_logs(self, target: Path) -> None:
        commands.run(
            [
                str(binaries.path("kind")),
                "export",
                "logs",
                str(target),
                "--name",
                self.cluster_name,
            ],
            check=False,
            timeout=300,
        )

    # -- node-level abilities, through the node containers ------------------------
    def stop_node(self, node: str) -> None:
        # A paused container stops its kubelet's heartbeats, as a hung machine would.
        commands.run([docker_engine.docker(), "pause", node], what=f"docker pause {node}")

    def start_node(self, node: str) -> None:
        # Idempotent, as the other providers' (a story's teardown restores a node
        # its own phase may already have brought back).
        state = commands.run(
            [docker_engine.docker(), "inspect", "--format", "{{.State.Status}}", node],
            what=f"docker inspect {node}",
        ).strip()
        if state == "paused":
            commands.run([docker_engine.docker(), "unpause", node], what=f"docker unpause {node}")

    @timing.timed(timing.EXEC)
    def node_exec(self, node: str, argv: list[str], check: bool = True) -> str:
        return commands.run([docker_engine.docker(), "exec", node, *argv], check=check)

    def read_cgroup(self, pod: Any, container: str, controller: str, filename: str) -> str:
        node = pod.spec.node_name
        cid = node_cgroups.container_id(pod, container)
        return node_cgroups.read(
            lambda argv: self.node_exec(node, argv), node, cid, controller, filename
        )

    def outside_host(self, subnet: str, node: str) -> OutsideHost:
        """A network namespace on the Docker host. Every node reaches it through
        Docker's bridge; it reaches back only the nodes' own network (a route
        through the host), never the pods' range, so a pod's egress answers only
        when its node SNATs it, and the outside finds NodePorts at the node's address."""
        host = netns.create(subnet)
        try:
            host.exec(["ip", "route", "add", self._node_network(), "via", host.gateway])
            host.node_address = self._node_ip(node)
        except Exception:
            host.delete()
            raise
        return host

    @staticmethod
    def _node_network() -> str:
        """The IPv4 subnet of kind's Docker network, where the node containers live."""
        out = commands.run(
            [
                docker_engine.docker(),
                "network",
                "inspect",
                "kind",
                "--format",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            ],
            what="docker network inspect kind",
        )
        v4 = [s for s in out.split() if ":" not in s]
        if not v4:
            raise ProviderError(f"kind's Docker network has no IPv4 subnet ({out.strip()!r})")
        return v4[0]

    def _node_ip(self, node: str) -> str:
        for addr in self.kube().core.read_node(node).status.addresses or []:
            if addr.type == "InternalIP" and ":" not in addr.address:
                return str(addr.address)
        raise ProviderError(f"node {node} has no IPv4 InternalIP")

    def snat_owner(self) -> snat.SnatOwner | None:
        """The node image CNI's masq agent (chain KIND-MASQ-AGENT)."""
        return snat.find(self.kube())

    def sweep_node_changes(self, runs: Collection[str] | None = None) -> list[str]:
        removed = [f"outside host {name}" for name in netns.sweep()]
        if self.cluster_name not in self.clusters():
            return removed
        for node, state in self.node_states().items():
            if state == "paused":  # a run killed mid-failure leaves its node paused
                self.start_node(node)
                removed.append(f"the failure of node {node} (its container was paused)")

            # A run's KFS-* chains inside a node (the CNI's own chains are not KFS-).
            def on_node(argv: list[str], check: bool = False, node: str = node) -> str:
                return self.node_exec(node, argv, check=check)

            removed += [f"{c} on {node}" for c in iptables.sweep(SCENARIO_CHAIN, on_node)]
        return removed
