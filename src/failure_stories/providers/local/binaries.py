"""Where the embedded cluster's binaries come from: built here from Go modules,
cached under a directory keyed by version so that only the first build is slow."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from failure_stories.errors import MissingToolError, ProviderError

KUBERNETES_VERSION = "v1.34.4"
KWOK_VERSION = "v0.7.0"
CRICTL_VERSION = "v1.34.0"
K8S_COMMANDS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
REPO = Path(__file__).resolve().parents[4]


def cache_dir() -> Path:
    return Path(os.environ.get("KFS_CACHE", "~/.cache/kfs")).expanduser()


def k8s_dir() -> Path:
    return cache_dir() / f"k8s-{KUBERNETES_VERSION}"


# Small tools that install with a plain `go install`: command -> (module path, version).
GO_INSTALLS = {
    "kwok": ("sigs.k8s.io/kwok/cmd/kwok", KWOK_VERSION),
    "crictl": ("sigs.k8s.io/cri-tools/cmd/crictl", CRICTL_VERSION),
}


def path(command: str) -> Path:
    if command in GO_INSTALLS:
        return cache_dir() / f"{command}-{GO_INSTALLS[command][1]}" / command
    return k8s_dir() / command


def missing() -> list[str]:
    return [c for c in (*K8S_COMMANDS, *GO_INSTALLS) if not os.access(path(c), os.X_OK)]


def ensure(build: bool = True) -> None:
    """Build what is missing (slow, once) or say how to get it."""
    todo = missing()
    if not todo:
        return
    if not build:
        raise MissingToolError(
            ", ".join(todo), "run `make setup` to build the embedded cluster's binaries"
        )
    if shutil.which("go") is None:
        raise MissingToolError(
            "go", "install Go 1.24 or newer (the embedded cluster builds from source)"
        )
    if any(c in K8S_COMMANDS for c in todo):
        script = REPO / "build" / "k8s" / "build.sh"
        _run([str(script), str(k8s_dir())], "build Kubernetes components")
    for command, (module, version) in GO_INSTALLS.items():
        if command in todo:
            _run(
                ["go", "install", f"{module}@{version}"],
                f"install {command}",
                env={"GOBIN": str(path(command).parent)},
            )


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(
        argv, env={**os.environ, **(env or {})}, check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise ProviderError(f"could not {what}: {last[-1] if last else done.returncode}")
