"""The `kind` provider: clusters in Docker containers, for users who have Docker.

Each scenario names its config in kind-configs/; one cluster per config is
created (or reused) and the locally built toolbox image is loaded into it,
since scenario manifests never pull from a registry.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from failure_stories.core import paths
from failure_stories.core.errors import ClusterUnreachableError, DefinitionError, MissingToolError
from failure_stories.host.commands import run
from failure_stories.providers import snat
from failure_stories.providers.base import (
    REAL_NODE_LABEL,
    SIMULATED_NODE_LABEL,
    ClusterStatus,
    Provider,
)
from failure_stories.providers.kube import Kube

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario

CONFIG_DIR = paths.KIND_CONFIGS
PREFIX = "kfs-"


def _state_dir() -> Path:
    return Path(os.environ.get("KFS_STATE_KIND", "~/.local/state/kfs/kind")).expanduser()


class KindProvider(Provider):
    name = "kind"
    shared_cluster = False  # one cluster per story's kind config

    def __init__(self, keep: bool = False, config: str = "default") -> None:
        self.keep = keep
        self.config = config
        self._kube: Kube | None = None

    # -- tools ------------------------------------------------------------------
    @staticmethod
    def require_tools() -> None:
        if shutil.which("docker") is None:
            raise MissingToolError("docker", "install Docker (Debian: apt-get install docker.io)")
        if shutil.which("kind") is None:
            raise MissingToolError(
                "kind", "go install sigs.k8s.io/kind@v0.30.0 (and put $(go env GOPATH)/bin on PATH)"
            )

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

    def clusters(self) -> list[str]:
        self.require_tools()
        return [c for c in run(["kind", "get", "clusters"]).split() if c.startswith(PREFIX)]

    # -- lifecycle ----------------------------------------------------------------
    def up(self) -> None:
        self.require_tools()
        if self.cluster_name not in self.clusters():
            _state_dir().mkdir(parents=True, exist_ok=True)
            run(
                [
                    "kind",
                    "create",
                    "cluster",
                    "--name",
                    self.cluster_name,
                    "--config",
                    str(self.config_file()),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--wait",
                    "120s",
                ],
                timeout=600,
            )
        elif not self.kubeconfig.exists():
            _state_dir().mkdir(parents=True, exist_ok=True)
            self.kubeconfig.write_text(
                run(["kind", "get", "kubeconfig", "--name", self.cluster_name])
            )
        self._label_nodes()
        self._load_images()

    def _label_nodes(self) -> None:
        kube = self.kube()
        for node in kube.core.list_node().items:
            labels = node.metadata.labels or {}
            if "node-role.kubernetes.io/control-plane" in labels:
                continue
            # On kind every worker really runs containers; scheduling stories use
            # them as their "several machines" too.
            kube.patch_node_labels(
                node.metadata.name, {REAL_NODE_LABEL: "true", SIMULATED_NODE_LABEL: "true"}
            )

    def _load_images(self) -> None:
        from failure_stories import images

        self.load_images(images.build_images())

    def load_images(self, archives: dict[str, Path]) -> None:
        from failure_stories import images

        images.load_into_docker(archives)
        for ref in archives:
            run(["kind", "load", "docker-image", ref, "--name", self.cluster_name], timeout=600)

    def prepare(self, scenario: Scenario) -> Kube:
        if scenario.meta.kind_config != self.config:
            self.config = scenario.meta.kind_config
            self._kube = None
        self.up()
        return self.kube()

    def down(self) -> None:
        for name in self.clusters():
            run(["kind", "delete", "cluster", "--name", name], timeout=300)
            (_state_dir() / f"{name}.kubeconfig").unlink(missing_ok=True)
        self._kube = None

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
        return st

    def info(self) -> dict[str, Any]:
        return {"kind_cluster": self.cluster_name, "kind_config": self.config}

    def export_logs(self, target: Path) -> None:
        run(
            ["kind", "export", "logs", str(target), "--name", self.cluster_name],
            check=False,
            timeout=300,
        )

    # -- node-level actions -------------------------------------------------------
    def stop_node(self, node: str) -> None:
        # A paused container stops its kubelet's heartbeats, as a hung machine would.
        run(["docker", "pause", node])

    def start_node(self, node: str) -> None:
        run(["docker", "unpause", node])

    def node_exec(self, node: str, argv: list[str], check: bool = True) -> str:
        return run(["docker", "exec", node, *argv], check=check)

    def snat_owner(self) -> snat.SnatOwner | None:
        """The kind CNI DaemonSet's masq agent container (chain KIND-MASQ-AGENT)."""
        return snat.find(self.kube())
