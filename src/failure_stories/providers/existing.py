"""The `existing` provider: a cluster the user already has, by kubeconfig context.

Scenarios inject real faults, so a run is refused unless the context is named a
second time with --allow-context (a typo or a wrong current-context cannot turn
into a game day on production)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import config

from failure_stories.core.errors import ClusterUnreachableError, GuardRefusedError
from failure_stories.providers.base import ClusterStatus, Provider
from failure_stories.providers.kube import Kube

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario


def _kubeconfig_path() -> Path:
    first = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
    return Path(first).expanduser()


class ExistingProvider(Provider):
    name = "existing"
    owns_cluster = False

    def __init__(self, context: str | None = None, allow: str | None = None) -> None:
        self.path = _kubeconfig_path()
        self.context = context or self._current_context()
        self.allow = allow
        self._kube: Kube | None = None

    def _current_context(self) -> str:
        try:
            _, current = config.list_kube_config_contexts(str(self.path))
        except (config.ConfigException, OSError) as exc:
            raise ClusterUnreachableError(
                f"no usable kubeconfig at {self.path}: set KUBECONFIG or pass --context"
            ) from exc
        if not current:
            raise ClusterUnreachableError(f"{self.path} has no current context: pass --context")
        return str(current["name"])

    def check_allowed(self) -> None:
        if self.allow != self.context:
            raise GuardRefusedError(
                f"refusing to inject faults into context {self.context!r}: "
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
            try:
                contexts, _ = config.list_kube_config_contexts(str(self.path))
            except (config.ConfigException, OSError) as exc:
                raise ClusterUnreachableError(f"no usable kubeconfig at {self.path}") from exc
            names = [c["name"] for c in contexts]
            if self.context not in names:
                raise ClusterUnreachableError(
                    f"unknown kube context {self.context!r} in {self.path} "
                    f"(known: {', '.join(names) or 'none'})"
                )
            self._kube = Kube(self.path, self.context)
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
