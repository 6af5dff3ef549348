"""The `local` provider: a real control plane built on this machine, a real node
(kubelet, containerd, CNI, kube-proxy) and simulated kwok nodes. No Docker."""

from __future__ import annotations

import contextlib
import platform
import shutil
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from failure_stories.core import timing
from failure_stories.core.errors import ClusterUnreachableError, KfsError, ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import iptables, locks, netns
from failure_stories.host.commands import run
from failure_stories.host.netns import OutsideHost
from failure_stories.host.processes import Supervisor
from failure_stories.providers import node_cgroups, snat
from failure_stories.providers.base import ClusterStatus, Provider
from failure_stories.providers.kube import Kube
from failure_stories.providers.local import (
    binaries,
    controlplane,
    hostnet,
    masq_addon,
    simulated,
)
from failure_stories.providers.local import layout as L
from failure_stories.providers.local.node import CGROUP_ROOT, RealNode

CLUSTER_LOCK = "local-cluster"
# A down waits for GameDay runs to revert (up to 120 s each) and a cold up
# for the control plane and nodes: the other process waits at most this long.
CLUSTER_LOCK_TIMEOUT = 900


class LocalProvider(Provider):
    name = "local"

    def __init__(self, paths: L.Paths | None = None) -> None:
        self.paths = paths or L.Paths.default()
        self.sup = Supervisor(self.paths.root)
        self.node = RealNode(self.paths, self.sup)
        self._kube: Kube | None = None
        self._kube_stamp = 0

    @property
    def kubeconfig(self) -> Path:
        return self.paths.admin_kubeconfig

    @property
    def operator_state(self) -> Path:
        return self.paths.root

    def is_up(self) -> bool:
        return self.sup.alive("kube-apiserver") and self.kubeconfig.exists()

    def _warm(self) -> bool:
        return all(
            self.sup.alive(n) for n in (*controlplane.component_names(), *RealNode.COMPONENTS)
        )

    def locks(self) -> locks.LockBackend:
        # The cluster lives on this machine and only its processes use it.
        return locks.FileLocks()

    def _cluster_lock(self, shared: bool = False) -> contextlib.AbstractContextManager[None]:
        # Runs on a warm cluster check it together (shared); creating or deleting
        # it is one process's job at a time: two downs raced in rmtree before.
        return locks.held(
            CLUSTER_LOCK,
            "another kfs process creating or deleting the local cluster",
            timeout=CLUSTER_LOCK_TIMEOUT,
            shared=shared,
            # A wait of minutes must not look hung (as the builds say what they do).
            on_wait=lambda m: print(f"kfs: {m}", file=sys.stderr, flush=True),
        )

    def up(self) -> None:
        binaries.ensure()
        with self._cluster_lock(shared=True):
            if self._warm():
                self._up(warm=True)
                return
        with self._cluster_lock():
            self._up(warm=self._warm())

    def _up(self, warm: bool) -> None:
        if self.paths.root.exists() and not self.sup.alive("kube-apiserver"):
            # A crashed run or a rebooted session left state but no control plane:
            # sweep its mounts, chains and processes before starting afresh.
            self._down()
        self.paths.root.mkdir(parents=True, exist_ok=True)
        # The bridge carries the API server's advertised address, so it comes first.
        self.node.prepare_host()
        controlplane.start(self.paths, self.sup)
        self.node.start()
        kube = self.kube()
        wait_for(
            lambda: kube.core.list_namespaced_service_account("default").items,
            what="the default service account",
            timeout=60,
        )
        simulated.ensure(kube)
        # On a warm cluster a NotReady simulated node is another run's fault (a
        # story that fails nodes holds their lock and waits for them itself):
        # waiting here would make every run queue behind it.
        nodes = (L.REAL_NODE,) if warm else (L.REAL_NODE, *L.SIMULATED_NODES)
        wait_for(
            lambda: all(kube.node_ready(n) for n in nodes),
            what=f"nodes {', '.join(nodes)} Ready",
            timeout=90,
        )
        simulated.ensure_capacity(kube)
        self._ensure_masq_agent(kube)

    def _ensure_masq_agent(self, kube: Kube) -> None:
        """The node's pod-egress SNAT owner, its rules in place before any run's pods."""
        from failure_stories.images import TOOLBOX_IMAGE

        masq_addon.ensure(kube, TOOLBOX_IMAGE)
        wait_for(
            lambda: masq_addon.CHAIN in hostnet.our_chains().get("nat", []),
            what=f"the masq agent's chain {masq_addon.CHAIN}",
            timeout=30,
            interval=0.5,
        )

    def down(self) -> None:
        with self._cluster_lock():
            self._down()
        # Lock records of runs and of the cluster itself: a new machine has none.
        locks.remove_all(strict=False)

    def _down(self) -> None:
        # GameDay runs and host processes others started (an operator) first,
        # while the API server is still there for their teardown to revert
        # what they changed; SIGTERM makes a run tear down.
        workers = Supervisor(self.paths.operator)
        for name in workers.names():
            workers.stop(name, timeout=120)
        for name in self.sup.names():
            if name not in (*controlplane.component_names(), *RealNode.COMPONENTS):
                self.sup.stop(name)
        # No run outlives its cluster: outside hosts a killed run left go too,
        # before the node sweeps /run/netns, where they are pinned.
        netns.sweep()
        self.node.stop()
        controlplane.stop(self.sup)
        for name in self.sup.names():  # anything a newer version of us started
            self.sup.stop(name)
        self._kube = None
        if self.paths.root.exists():
            shutil.rmtree(self.paths.root)
        if self.paths.root == L.DEFAULT_STATE:
            # /var/lib/kfs was ours too: a new machine has none.
            with contextlib.suppress(OSError):
                self.paths.root.parent.rmdir()

    def load_images(self, archives: dict[str, Path]) -> None:
        self.node.import_images(archives)

    def kube(self) -> Kube:
        try:
            stamp = self.kubeconfig.stat().st_mtime_ns
        except FileNotFoundError:
            raise ClusterUnreachableError(
                "the local cluster is not running: start it with `kfs cluster up`"
            ) from None
        # Another process may have recreated the cluster (new CA, new kubeconfig).
        if self._kube is None or self._kube_stamp != stamp:
            self._kube = Kube(self.kubeconfig)
            self._kube_stamp = stamp
        return self._kube

    def status(self) -> ClusterStatus:
        running = self.is_up()
        st = ClusterStatus(self.name, running, self.kubeconfig if running else None)
        components = {n: self.sup.alive(n) for n in self.sup.names()}
        st.detail = ", ".join(f"{n} {'up' if ok else 'DOWN'}" for n, ok in components.items())
        if running:
            st.nodes = self.kube().node_summaries(
                lambda n: "simulated" if n.metadata.name in L.SIMULATED_NODES else "real"
            )
        return st

    def info(self) -> dict[str, Any]:
        return {"kubernetes": binaries.KUBERNETES_VERSION, "kernel": platform.release()}

    def export_logs(self, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for log in self.paths.logs.glob("*.log"):
            text = log.read_text(errors="replace").splitlines()[-3000:]
            (target / log.name).write_text("\n".join(text) + "\n")

    # -- the real node, as scenarios measure and change it --------------------------
    def container_cgroup(self, pod: Any, container: str, controller: str) -> Path:
        """Host path of a container's cgroup (cgroup v1, cgroupfs driver)."""
        cid = node_cgroups.container_id(pod, container)
        uid = pod.metadata.uid
        base = Path("/sys/fs/cgroup") / controller / CGROUP_ROOT / "kubepods"
        for pattern in (f"pod{uid}/{cid}", f"*/pod{uid}/{cid}"):
            found = list(base.glob(pattern))
            if found:
                return found[0]
        raise ProviderError(f"no {controller} cgroup for {pod.metadata.name}/{container}")

    def read_cgroup(self, pod: Any, container: str, controller: str, filename: str) -> str:
        return (self.container_cgroup(pod, container, controller) / filename).read_text()

    pod_cidr = L.CLUSTER_CIDR

    def sweep_node_changes(self, runs: Collection[str] | None = None) -> list[str]:
        # The masq agent's chain is the cluster's, not a run's: it is swept only
        # once the agent is gone (while it runs, pod egress depends on it).
        keep = () if self._masq_agent_gone() else (masq_addon.CHAIN,)
        removed = hostnet.sweep_iptables(iptables.excluding(hostnet.SCENARIO_CHAIN, keep))
        removed += [f"outside host {name}" for name in netns.sweep()]
        for node in L.SIMULATED_NODES:  # a run killed mid-failure leaves a node frozen
            if self.sup.thaw(controlplane.kwok_component(node)):
                removed.append(f"the failure of node {node} (its kwok agent was frozen)")
        return removed

    def snat_owner(self) -> snat.SnatOwner | None:
        return snat.find(self.kube())

    def _masq_agent_gone(self) -> bool:
        try:
            self.kube().apps.read_namespaced_daemon_set(masq_addon.NAME, masq_addon.NAMESPACE)
        except ApiException as exc:
            return bool(exc.status == 404)
        except KfsError:
            return False  # cannot tell: keep it
        return False

    def outside_host(self, subnet: str, node: str = L.REAL_NODE) -> OutsideHost:
        if node != L.REAL_NODE:
            raise ProviderError(f"outside hosts are reached from {L.REAL_NODE}, not {node}")
        return netns.create(subnet)

    @timing.timed(timing.EXEC)
    def node_exec(self, node: str, argv: list[str], check: bool = True) -> str:
        if node != L.REAL_NODE:
            raise ProviderError(f"node {node} is simulated: it has no shell ({L.REAL_NODE} has)")
        return run(argv, check=check)

    # -- node failure, as the node-lifecycle controller sees it --------------------
    def stop_node(self, node: str) -> None:
        if node in L.SIMULATED_NODES:
            self.sup.freeze(controlplane.kwok_component(node))
            return
        raise ProviderError(f"only the simulated nodes can fail here, not {node}")

    def start_node(self, node: str) -> None:
        if node in L.SIMULATED_NODES:
            self.sup.thaw(controlplane.kwok_component(node))
            return
        raise ProviderError(f"only the simulated nodes can fail here, not {node}")
