"""The `existing` provider: a cluster the user already has, by kubeconfig context.

The kubeconfig is --kubeconfig, else $KUBECONFIG, else ~/.kube/config, and may
be a list of files merged as kubectl merges them (providers.kubeconfig).
Scenarios inject real faults, so anything that changes the cluster is refused
unless the context is named a second time with --allow-context (a typo or a
wrong current-context cannot turn into a game day on production). kfs never
deletes this cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from failure_stories.core.errors import ClusterUnreachableError, GuardRefusedError
from failure_stories.providers.base import ClusterStatus, Provider
from failure_stories.providers.kube import Kube
from failure_stories.providers.kubeconfig import KubeConfig, KubeconfigSpec

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario


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
        return {"context": self.context}
