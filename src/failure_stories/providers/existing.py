"""The `existing` provider: a cluster the user already has, by kubeconfig context.

The kubeconfig is --kubeconfig, else $KUBECONFIG, else ~/.kube/config, and may
be a list of files merged as kubectl merges them (providers.kubeconfig).
Scenarios inject real faults, so anything that changes the cluster is refused
unless the context is named a second time with --allow-context (a typo or a
wrong current-context cannot turn into a game day on production). kfs never
deletes this cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from failure_stories.core.errors import ClusterUnreachableError, GuardRefusedError, ProviderError
from failure_stories.providers import fit, node_cgroups, snat
from failure_stories.providers.agent import NodeAgent, revert
from failure_stories.providers.base import ClusterStatus, Provider
from failure_stories.providers.kube import Kube
from failure_stories.providers.kubeconfig import KubeConfig, KubeconfigSpec

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario
    from failure_stories.host.netns import OutsideHost

# Abilities that reach a node: on this provider, through the node agent.
NODE_ABILITIES = ("node-shell", "node-failure", "cgroup-read", "outside-network")


class ExistingProvider(Provider):
    name = "existing"
    owns_cluster = False

    def __init__(
        self,
        context: str | None = None,
        allow: str | None = None,
        kubeconfig: KubeconfigSpec = None,
    ) -> None:
        # Read (and merged) at once, so a missing file or an unknown context is
        # one line before anything else happens; nothing is contacted yet.
        self.kubeconfig = KubeConfig(kubeconfig)
        self.context = self.kubeconfig.resolve(context)
        self.path = self.kubeconfig.file_of(self.context)
        self.allow = allow
        self._kube: Kube | None = None
        self._agent: NodeAgent | None = None

    def check_allowed(self) -> None:
        if self.allow != self.context:
            named = f" (--allow-context names {self.allow!r})" if self.allow else ""
            raise GuardRefusedError(
                f"refusing to inject faults into context {self.context!r}{named}: "
                f"pass --allow-context {self.context} if this cluster is meant for it"
            )

    def up(self) -> None:
        self.kube().ping()

    def down(self) -> None:
        """Never deletes a cluster it did not create."""

    def prepare(self, scenario: Scenario) -> Kube:
        self.check_allowed()
        kube = self.kube()
        kube.ping()
        fit.check(kube, scenario, self.context, NODE_ABILITIES)
        return kube

    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube(self.kubeconfig, self.context)
        return self._kube

    def status(self) -> ClusterStatus:
        try:
            version = self.kube().ping()
        except ClusterUnreachableError as exc:
            return ClusterStatus(self.name, False, None, detail=str(exc))
        st = ClusterStatus(self.name, True, self.path, detail=f"context {self.context}, {version}")
        st.nodes = self.kube().node_summaries(lambda _n: "existing")
        return st

    def info(self) -> dict[str, Any]:
        return {"context": self.context, "node_access": "node agent"}

    # -- node-level abilities, through one node agent per run (providers.agent) ------
    @contextlib.contextmanager
    def run_scope(
        self, namespace: str, scenario: Scenario, log: Callable[[str], None]
    ) -> Iterator[None]:
        agent = NodeAgent(self.kube(), namespace, self.manifest_variables()["TOOLBOX_IMAGE"], log)
        if any(n in NODE_ABILITIES for n in scenario.meta.needs):
            agent.set_up()  # a cluster that forbids the agent is refused before any step
        self._agent = agent
        try:
            yield
        finally:
            self._agent = None
            agent.tear_down()

    @property
    def agent(self) -> NodeAgent:
        if self._agent is None:
            raise ProviderError("node-level actions on an existing cluster happen inside a run")
        return self._agent

    def node_exec(self, node: str, argv: list[str], check: bool = True) -> str:
        return self.agent.node_exec(node, argv, check=check)

    def sweep_node_changes(self, runs: Collection[str] | None = None) -> list[str]:
        """What the agents of dead runs journalled, undone from wherever kfs runs."""
        return revert(self.kube(), active=self.locks().run_active, only=runs)

    def snat_owner(self) -> snat.SnatOwner | None:
        return snat.find(self.kube())

    def stop_node(self, node: str) -> None:
        self.agent.freeze_kubelet(node)

    def start_node(self, node: str) -> None:
        self.agent.thaw_kubelet(node)

    def read_cgroup(self, pod: Any, container: str, controller: str, filename: str) -> str:
        cid = node_cgroups.container_id(pod, container)
        return self.agent.read_cgroup(pod.spec.node_name, cid, controller, filename)

    def outside_host(self, subnet: str, node: str) -> OutsideHost:
        return self.agent.outside_host(node, subnet)
