"""Kubeconfig files, found and merged the way kubectl does.

A kubeconfig may be a list of files (``--kubeconfig a:b`` or ``KUBECONFIG=a:b``,
os.pathsep-separated). As with kubectl, files that do not exist are skipped, the
first file that names a cluster, user or context wins for that name, and the
current context is the one of the first file that sets it. The merge itself is
the official client's (KubeConfigMerger keeps each entry's file, so relative
certificate paths resolve next to the file they came from).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import KubeConfigLoader, KubeConfigMerger

from failure_stories.core.errors import KubeconfigError

DEFAULT_KUBECONFIG = "~/.kube/config"

PathLike = str | os.PathLike[str]
KubeconfigSpec = PathLike | Sequence[PathLike] | None

# What a file that is not a kubeconfig raises while it is read and merged.
_UNREADABLE = (ConfigException, OSError, yaml.YAMLError, AttributeError, KeyError, TypeError)


def kubeconfig_files(spec: KubeconfigSpec = None) -> list[Path]:
    """The files ``spec`` names: an os.pathsep-separated string, one path, a
    sequence of paths, or (None) $KUBECONFIG, else ~/.kube/config."""
    if spec is None:
        spec = os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    if isinstance(spec, str):
        parts: list[str] = spec.split(os.pathsep)
    elif isinstance(spec, os.PathLike):
        parts = [os.fspath(spec)]
    else:
        parts = [os.fspath(p) for p in spec]
    files: list[Path] = []
    for part in parts:
        path = Path(part).expanduser()
        if part and path not in files:
            files.append(path)
    return files


def describe(spec: KubeconfigSpec = None) -> str:
    """The kubeconfig list as a user would write it, for messages."""
    return os.pathsep.join(str(f) for f in kubeconfig_files(spec))


class KubeConfig:
    """The merged view of a kubeconfig list; every failure is one
    KubeconfigError line that says what to do."""

    def __init__(self, spec: KubeconfigSpec = None) -> None:
        self.files = kubeconfig_files(spec)
        self.present = [f for f in self.files if f.is_file()]
        if not self.present:
            raise KubeconfigError(
                f"no usable kubeconfig: {'none of ' if len(self.files) > 1 else ''}"
                f"{self} exists; pass --kubeconfig PATH or set KUBECONFIG"
            )
        try:
            for f in self.present:
                doc = yaml.safe_load(f.read_text())
                if doc is not None and not isinstance(doc, dict):
                    raise TypeError(f"{f} holds a YAML {type(doc).__name__}, not a mapping")
            self._merger = KubeConfigMerger(os.pathsep.join(str(f) for f in self.present))
            merged = self._merger.config.value
            docs = [self._merger.config_files[str(f)] for f in self.present]
            # kubectl: the first file that sets current-context wins (the client's
            # merger lets the last one win).
            current = next((d["current-context"] for d in docs if d.get("current-context")), None)
            self.current: str | None = str(current) if current else None
            merged["current-context"] = self.current or ""
            self.contexts: list[str] = [str(c.value["name"]) for c in merged["contexts"]]
            self.origin: dict[str, Path] = {}
            for path, doc in zip(self.present, docs, strict=True):
                for ctx in doc.get("contexts") or []:
                    self.origin.setdefault(str(ctx["name"]), path)
        except _UNREADABLE as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise KubeconfigError(
                f"no usable kubeconfig at {self} ({reason}): it must be a kubeconfig YAML "
                "file as `kubectl config view --raw` prints one; pass --kubeconfig PATH or fix "
                "KUBECONFIG"
            ) from exc

    def __str__(self) -> str:
        return os.pathsep.join(str(f) for f in self.files)

    def known(self) -> str:
        return ", ".join(self.contexts) or "none"

    def resolve(self, context: str | None = None) -> str:
        """``context``, or the current one; refused if the files do not define it."""
        name = context or self.current
        if not name:
            raise KubeconfigError(
                f"{self} sets no current context: pass --context NAME (known: {self.known()})"
            )
        if name not in self.contexts:
            raise KubeconfigError(
                f"unknown kube context {name!r} in {self} (known: {self.known()})"
            )
        return name

    def file_of(self, context: str | None = None) -> Path:
        """The file that defines ``context`` (the current one by default)."""
        return self.origin.get(self.resolve(context), self.present[0])

    def api_client(self, context: str | None = None) -> client.ApiClient:
        """A client for ``context`` (default: the current one) of the merged files."""
        name = self.resolve(context)
        loader = KubeConfigLoader(
            config_dict=self._merger.config,
            config_base_path=None,
            active_context=name,
            config_persister=self._merger.save_changes,
        )
        configuration: Any = type.__call__(client.Configuration)
        loader.load_and_set(configuration)
        return client.ApiClient(configuration=configuration)


# Inside a pod: the ServiceAccount kubelet mounts, and the Service address it sets.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_CONTEXT = "in-cluster"


def write_in_cluster(path: Path, account: Path | None = None) -> Path:
    """A kubeconfig at ``path`` for the pod's own cluster and ServiceAccount, with
    context ``in-cluster``, so code that takes a kubeconfig (the existing provider)
    runs unchanged inside the cluster. The token is named by its file (tokenFile),
    which kubelet keeps fresh; each client reads it when it is made."""
    account = account or SERVICE_ACCOUNT
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (account / "token").is_file():
        raise KubeconfigError(
            "not inside a pod (no KUBERNETES_SERVICE_HOST or ServiceAccount token): "
            "set KUBECONFIG and KFS_GAMEDAY_CONTEXT instead"
        )
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": IN_CLUSTER_CONTEXT,
                "cluster": {"server": server, "certificate-authority": str(account / "ca.crt")},
            }
        ],
        "users": [{"name": IN_CLUSTER_CONTEXT, "user": {"tokenFile": str(account / "token")}}],
        "contexts": [
            {
                "name": IN_CLUSTER_CONTEXT,
                "context": {"cluster": IN_CLUSTER_CONTEXT, "user": IN_CLUSTER_CONTEXT},
            }
        ],
        "current-context": IN_CLUSTER_CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path
