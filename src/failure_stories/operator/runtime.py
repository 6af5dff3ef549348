"""Install and run the kfs operator (kopf): GameDays, and the system under test of
operator stories (RedisFailover).

Three ways to run it:

* :class:`HostOperator` - ``kopf run`` as a supervised process on this host
  (the local provider: the host reaches pod IPs over the node's bridge). A
  scenario run scopes it to its own namespace with only the system under test
  (:data:`SUT_HANDLER_FILES`), so parallel runs never manage each other's
  objects; it logs to a file in the report directory. Tests use it too.
* :class:`LocalPodOperator` - `kfs operator install` on the local provider:
  ``operator/local-deployment.yaml``, a pod on the real node that runs this
  checkout's operator in the host's namespaces (GameDay runs change the node).
* :class:`InClusterOperator` - ``operator/rbac.yaml`` and
  ``operator/deployment.yaml`` applied to a cluster (kind or existing), from
  the image :mod:`failure_stories.operator.image` builds offline.

The handler files live in ``operator/``; :data:`HANDLER_FILES` lists the ones
an installed operator loads (one ``kopf run`` takes several files).

CRDs are cluster-scoped and shared: :func:`ensure_crds` installs or updates
them and nothing removes them while objects of their kinds exist anywhere,
since deleting a CRD deletes every such object in every namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from failure_stories.core import paths
from failure_stories.core.errors import ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host.processes import Supervisor
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.operator import image as operator_image
from failure_stories.operator.image import OPERATOR_IMAGE
from failure_stories.providers.capabilities import ImageLoader, OperatorHost
from failure_stories.providers.kube import Kube, render

if TYPE_CHECKING:
    from failure_stories.providers.base import Provider
    from failure_stories.run.context import RunContext

OPERATOR_DIR = paths.OPERATOR
# Every operator loads these; a scenario's own operator only the system under test.
HANDLER_FILES: tuple[str, ...] = ("redisfailover.py", "gameday.py")
SUT_HANDLER_FILES: tuple[str, ...] = ("redisfailover.py",)
SYSTEM_NAMESPACE = "kfs-system"
DEPLOYMENT = "kfs-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/name=kfs-operator"
# `kfs operator install` on the local provider: GameDay metrics and kopf's
# liveness endpoint, on the host's loopback.
METRICS_PORT = 9808
LIVENESS_PORT = 9809
# A cluster-wide operator installed on the local cluster leaves scenario and
# test namespaces (kfs-<id>-<suffix>) to the operators those runs start.
LOCAL_INSTALL_SCOPE = "!kfs-*"

Log = Any  # a callable taking one string


def load_client_config() -> str:
    """Configure the kubernetes client for a handler file; say where from.

    In a pod: its service account. On a host: $KUBECONFIG (set by HostOperator)."""
    try:
        config.load_incluster_config()
        return "in-cluster service account"
    except config.ConfigException:
        config.load_kube_config()
        return f"kubeconfig {os.environ.get('KUBECONFIG', '~/.kube/config')}"


def crd_manifests() -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for path in sorted((OPERATOR_DIR / "crds").glob("*.yaml")):
        objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return objs


def ensure_crds(kube: Kube, timeout: float = 60) -> list[str]:
    """Create or update the operator's CRDs (server-side apply) and wait until served."""
    objs = crd_manifests()
    kube.apply(objs, None)
    ext = client.ApiextensionsV1Api(kube.api)
    names = [o["metadata"]["name"] for o in objs]

    def established() -> bool:
        for name in names:
            crd = ext.read_custom_resource_definition(name)
            conds = crd.status.conditions or [] if crd.status else []
            if not any(c.type == "Established" and c.status == "True" for c in conds):
                return False
        return True

    wait_for(established, what=f"CRDs {', '.join(names)} established", timeout=timeout)
    return names


def objects_left(kube: Kube) -> dict[str, int]:
    """How many objects of each operator kind exist, in all namespaces."""
    custom = client.CustomObjectsApi(kube.api)
    counts: dict[str, int] = {}
    for crd in crd_manifests():
        spec = crd["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("storage"))
        try:
            listed = custom.list_cluster_custom_object(
                spec["group"], version, spec["names"]["plural"]
            )
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        counts[crd["metadata"]["name"]] = len(listed.get("items", []))
    return counts


def remove_crds(kube: Kube) -> list[str]:
    """Delete the CRDs if no object of theirs is left anywhere; say what was done."""
    left = {name: n for name, n in objects_left(kube).items() if n}
    if left:
        return [f"kept CRD {name}: {n} object(s) still use it" for name, n in left.items()]
    done = []
    ext = client.ApiextensionsV1Api(kube.api)
    for crd in crd_manifests():
        name = crd["metadata"]["name"]
        try:
            ext.delete_custom_resource_definition(name)
            done.append(f"deleted CRD {name}")
        except ApiException as exc:
            if exc.status != 404:
                raise
    return done


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HostOperator:
    """``kopf run`` on this host, under a Supervisor (pid and log files in ``state_dir``)."""

    def __init__(
        self,
        kubeconfig: Path,
        state_dir: Path,
        *,
        name: str = DEPLOYMENT,
        namespaces: Sequence[str] = (),
        handler_files: Sequence[str] = HANDLER_FILES,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.sup = Supervisor(state_dir)
        self.name = name
        self.namespaces = tuple(namespaces)
        self.files = tuple(str(OPERATOR_DIR / f) for f in handler_files)
        self.env = {
            "KUBECONFIG": str(kubeconfig),
            "KFS_REDIS_IMAGE": TOOLBOX_IMAGE,
            # GameDay workers are supervised beside the operator, so whoever
            # stops this operator's processes (`kfs cluster down`) finds them.
            "KFS_GAMEDAY_STATE": str(state_dir),
            **(env or {}),
        }
        self.port = 0

    @property
    def log_path(self) -> Path:
        return self.sup.log_path(self.name)

    def argv(self) -> list[str]:
        scope = [f"--namespace={ns}" for ns in self.namespaces] or ["--all-namespaces"]
        return [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            f"--liveness=http://127.0.0.1:{self.port}/healthz",
            *scope,
            *self.files,
        ]

    def alive(self) -> bool:
        return self.sup.alive(self.name)

    def start(self, timeout: float = 90) -> None:
        """Start kopf and wait until its liveness endpoint answers (startup done)."""
        self.port = _free_port()
        self.sup.start(self.name, self.argv(), env=self.env)
        url = f"http://127.0.0.1:{self.port}/healthz"

        def healthy() -> bool:
            if not self.alive():
                raise ProviderError(f"kopf exited during startup: {self.sup.tail(self.name)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_for(healthy, what=f"operator {self.name} healthy ({url})", timeout=timeout)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (GameDay runs in progress are reverted), SIGKILL after ``timeout``."""
        self.sup.stop(self.name, timeout=timeout)

    def crash(self) -> None:
        """SIGKILL, as an OOM kill or a node loss would end it: no cleanup runs."""
        rec = self.sup.record(self.name)
        if rec is None or not self.alive():
            raise ProviderError(f"operator {self.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, signal.SIGKILL)
        wait_for(lambda: not self.alive(), what=f"{self.name} to die", timeout=10, interval=0.1)
        self.sup.stop(self.name)  # forgets the record


class InClusterOperator:
    """The operator Deployment (cluster-wide) from ``operator/*.yaml``: the image
    built by :mod:`failure_stories.operator.image` (or ``operator/Dockerfile``)
    and the least-privilege ServiceAccount."""

    def __init__(
        self,
        kube: Kube,
        image: str = OPERATOR_IMAGE,
        node_selector: dict[str, str] | None = None,
        gamedays: bool = False,
    ) -> None:
        self.kube = kube
        self.image = image
        # Where the pod may run, when not every node runs containers (the local
        # provider's simulated nodes do not).
        self.node_selector = dict(node_selector or {})
        # GameDays change the cluster: their rights are granted only when asked for.
        self.gamedays = gamedays
        self.files: tuple[str, ...] = ("rbac.yaml", "deployment.yaml")
        if gamedays:
            self.files += ("gameday-rbac.yaml",)

    def variables(self) -> dict[str, str]:
        return {
            "OPERATOR_IMAGE": self.image,
            "TOOLBOX_IMAGE": TOOLBOX_IMAGE,
            "GAMEDAY_PROVIDER": "in-cluster" if self.gamedays else "none",
        }

    def manifests(self) -> list[dict[str, Any]]:
        objs: list[dict[str, Any]] = []
        for name in self.files:
            objs += render((OPERATOR_DIR / name).read_text(), self.variables())
        if self.node_selector:
            for obj in objs:
                if obj["kind"] == "Deployment":
                    obj["spec"]["template"]["spec"]["nodeSelector"] = self.node_selector
        return objs

    def removable(self) -> list[dict[str, Any]]:
        """What uninstall deletes: also the GameDay rights of an earlier --gamedays."""
        with_gamedays = InClusterOperator(self.kube, self.image, self.node_selector, gamedays=True)
        return with_gamedays.manifests()

    def installed(self) -> bool:
        try:
            self.kube.apps.read_namespaced_deployment(DEPLOYMENT, SYSTEM_NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def not_ready_hint(self) -> str:
        return (
            f"can the nodes pull {self.image}? `kfs operator install --provider kind` builds "
            "and loads it; for another cluster push it to a registry (`kfs operator image` "
            "writes its archive) and pass --image"
        )

    def _namespace_terminating(self) -> bool:
        try:
            ns = self.kube.core.read_namespace(SYSTEM_NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return ns.status is not None and ns.status.phase == "Terminating"

    def install(self, timeout: float = 120) -> None:
        ensure_crds(self.kube)
        # Right after an uninstall the namespace may still be going away.
        wait_for(
            lambda: not self._namespace_terminating(),
            what=f"namespace {SYSTEM_NAMESPACE} to finish terminating",
            timeout=timeout,
            interval=1,
        )
        self.kube.apply(self.manifests(), SYSTEM_NAMESPACE)
        try:
            self.kube.wait_rollout(SYSTEM_NAMESPACE, DEPLOYMENT, timeout=timeout)
        except Exception as exc:
            raise ProviderError(
                f"the operator Deployment did not become ready ({exc}); {self.not_ready_hint()}"
            ) from exc

    def uninstall(self, timeout: float = 330) -> list[str]:
        done = []
        for obj in reversed(self.removable()):
            if obj["kind"] == "Namespace":
                self.kube.delete_namespace(obj["metadata"]["name"], timeout=timeout)
            else:
                self.kube.delete(obj, SYSTEM_NAMESPACE)
            done.append(f"deleted {obj['kind']} {obj['metadata']['name']}")
            if obj["kind"] == "Deployment":
                # Its pod reverts GameDay runs in progress on SIGTERM; let it.
                wait_for(
                    lambda: not self.kube.pods(SYSTEM_NAMESPACE, OPERATOR_SELECTOR),
                    what="the operator pod to finish and go",
                    timeout=timeout,
                    interval=1,
                )
        return done + remove_crds(self.kube)


class LocalPodOperator(InClusterOperator):
    """The local provider's install: ``operator/local-deployment.yaml``, a
    privileged pod of the toolbox image on the real node that runs this
    checkout's operator in the host's namespaces (GameDay runs change the node)."""

    def __init__(self, kube: Kube, state_root: Path) -> None:
        super().__init__(kube, TOOLBOX_IMAGE)
        self.state_root = state_root

    def manifests(self) -> list[dict[str, Any]]:
        rbac = render((OPERATOR_DIR / "rbac.yaml").read_text(), self.variables())
        namespace = [o for o in rbac if o["kind"] == "Namespace"]
        text = (OPERATOR_DIR / "local-deployment.yaml").read_text()
        return namespace + render(text, self.variables())

    def removable(self) -> list[dict[str, Any]]:
        return self.manifests()

    def variables(self) -> dict[str, str]:
        from failure_stories.providers.local import binaries
        from failure_stories.providers.local import layout as L

        return {
            "TOOLBOX_IMAGE": TOOLBOX_IMAGE,
            "PYTHON": sys.executable,
            "OPERATOR_DIR": str(OPERATOR_DIR),
            "SCOPE": LOCAL_INSTALL_SCOPE,
            "LIVENESS_PORT": str(LIVENESS_PORT),
            "METRICS_PORT": str(METRICS_PORT),
            "KUBECONFIG": str(self.kube.kubeconfig),
            "KFS_STATE": str(self.state_root),
            "KFS_CACHE": str(binaries.cache_dir()),
            "GAMEDAY_STATE": str(L.Paths(self.state_root).operator),
        }

    def not_ready_hint(self) -> str:
        return (
            f"see `kubectl -n {SYSTEM_NAMESPACE} logs deploy/{DEPLOYMENT}`; "
            f"is {TOOLBOX_IMAGE} imported (`kfs cluster up`)?"
        )


def load_image(provider: Provider) -> None:
    """Nodes that take loaded images get the operator image built offline; an
    operator host runs this checkout instead, and other clusters pull theirs."""
    if isinstance(provider, ImageLoader) and not isinstance(provider, OperatorHost):
        provider.load_images({OPERATOR_IMAGE: operator_image.build()})


def start_for_run(ctx: RunContext) -> HostOperator | InClusterOperator:
    """Give a scenario run an operator for its namespace; teardown is deferred here.

    Local provider: a host process scoped to ``ctx.namespace`` (log:
    ``<report-dir>/<id>-operator/logs/``). Other providers: the in-cluster
    Deployment, installed if missing (and then removed at teardown).
    """
    names = ensure_crds(ctx.kube)
    ctx.log(f"CRDs {', '.join(names)} installed (shared; left installed for other runs)")
    if isinstance(ctx.provider, OperatorHost):
        op = HostOperator(
            ctx.kube.kubeconfig,
            ctx.report_dir / f"{ctx.scenario.id}-operator",
            name=f"kfs-operator-{ctx.namespace}",
            namespaces=(ctx.namespace,),
            handler_files=SUT_HANDLER_FILES,
        )
        # Deferred before starting so a start that fails half-way is cleaned too.
        ctx.defer(f"stop operator process {op.name}", op.stop)
        op.start()
        ctx.log(f"operator {op.name} running, log {op.log_path}")
        return op
    incluster = InClusterOperator(ctx.kube)
    if not incluster.installed():
        load_image(ctx.provider)

        def uninstall() -> None:
            for line in incluster.uninstall():
                ctx.log(line)

        ctx.defer("uninstall the in-cluster operator", uninstall)
        incluster.install()
    return incluster
