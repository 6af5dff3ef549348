"""Thin helpers over the official Kubernetes client, shared by steps and providers."""

from __future__ import annotations

import copy
import json
import secrets
import string
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config, dynamic, stream
from kubernetes.client.rest import ApiException

from failure_stories.core import timing
from failure_stories.core.errors import (
    ClusterUnreachableError,
    GuardRefusedError,
    ProviderError,
    RefusedError,
    TransientError,
    WaitTimeout,
)
from failure_stories.core.wait import wait_for
from failure_stories.providers.kubeconfig import KubeConfig, KubeconfigSpec

MANAGED_BY = "app.kubernetes.io/managed-by"
KFS = "kube-failure-stories"
SCENARIO_LABEL = "kfs.dev/scenario"
RUN_LABEL = "kfs.dev/run"
FIELD_MANAGER = "kfs"
# Waiting reasons after which a container never starts unless the cluster changes:
# an image that is not on the node and may not be pulled, or a malformed name.
# Other pull errors can pass (a registry's hiccup), so they are left to the wait.
NEVER_STARTS = frozenset({"ErrImageNeverPull", "InvalidImageName"})


def render(text: str, variables: dict[str, str]) -> list[dict[str, Any]]:
    """Fill ${VARS} in a manifest and parse every document in it."""
    filled = string.Template(text).substitute(variables)
    return [d for d in yaml.safe_load_all(filled) if d]


def namespace_name(scenario_id: str) -> str:
    """A new run's namespace name: kfs-<id>-<random suffix>."""
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6))
    return f"kfs-{scenario_id}"[:55] + f"-{suffix}"


def is_transient(exc: ApiException) -> bool:
    return exc.status in (429, 500, 502, 503, 504) or exc.status == 0


def refusal(exc: BaseException) -> str | None:
    """The API server's reason if ``exc`` is it refusing a change (an admission
    webhook or policy, Pod Security, RBAC's Forbidden, validation), else None."""
    if isinstance(exc, RefusedError):
        return str(exc)
    if isinstance(exc, ApiException) and exc.status in (400, 403, 422):
        try:
            return str(json.loads(exc.body)["message"])
        except (TypeError, ValueError, KeyError):
            return f"{exc.status} {exc.reason}"
    cause = exc.__cause__
    return refusal(cause) if cause is not None and cause is not exc else None


def refuse_unstartable(pod: client.V1Pod) -> None:
    """ProviderError if one of the pod's containers waits for an image it cannot get."""
    status = pod.status
    if status is None:
        return
    for cs in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        waiting = cs.state.waiting if cs.state else None
        if waiting is not None and waiting.reason in NEVER_STARTS:
            raise ProviderError(
                f"pod {pod.metadata.namespace}/{pod.metadata.name} cannot start on node "
                f"{pod.spec.node_name}: {waiting.reason} for image {cs.image}: import it "
                "into every node's container runtime first (`make setup` builds kfs's "
                "images as archives under $KFS_CACHE/images)"
            )


class Kube:
    """A connection to one cluster, from a kubeconfig and optional context.

    The kubeconfig may be a list of files, merged as kubectl merges them (see
    providers.kubeconfig); ``kubeconfig`` is then the file that defines the context."""

    def __init__(self, kubeconfig: KubeconfigSpec | KubeConfig, context: str | None = None) -> None:
        merged = kubeconfig if isinstance(kubeconfig, KubeConfig) else KubeConfig(kubeconfig)
        self.kubeconfig = merged.file_of(context)
        self.context = context
        try:
            self.api = merged.api_client(context)
        except (config.ConfigException, OSError, ValueError) as exc:
            raise ClusterUnreachableError(
                f"cannot load kube context {context or '(current)'} from {merged}: {exc}"
            ) from exc
        # Every REST request is timed for the run's overhead accounting (an exec
        # swaps call_api for its websocket while it runs and is timed as exec).
        self.api.call_api = timing.LEDGER.timed(timing.CLUSTER_CALLS, self.api.call_api)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self._dynamic: dynamic.DynamicClient | None = None

    @property
    def dynamic(self) -> dynamic.DynamicClient:
        if self._dynamic is None:
            self._dynamic = dynamic.DynamicClient(self.api)
        return self._dynamic

    def ping(self, timeout: float = 5.0) -> str:
        """Return the server's version, or raise ClusterUnreachableError."""
        try:
            info = client.VersionApi(self.api).get_code(_request_timeout=timeout)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            server = self.api.configuration.host
            raise ClusterUnreachableError(
                f"the API server of {self.context or self.kubeconfig} does not answer: "
                f"{type(exc).__name__} at {server}: check that the cluster runs and that "
                "the kubeconfig's server address is right"
            ) from exc
        return str(info.git_version)

    # -- namespaces -------------------------------------------------------------
    def create_namespace(
        self, scenario_id: str, labels: dict[str, str] | None = None, name: str | None = None
    ) -> str:
        """Create the run's namespace: ``name``, or kfs-<id>-<random suffix>.

        A given name must not exist yet: the run deletes its namespace at the end,
        so it never adopts one it did not create."""
        if name is None:
            name = namespace_name(scenario_id)
        body = client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={MANAGED_BY: KFS, SCENARIO_LABEL: scenario_id, **(labels or {})},
            )
        )
        try:
            self.core.create_namespace(body)
        except ApiException as exc:
            if exc.status == 409:
                raise GuardRefusedError(
                    f"namespace {name} already exists; name one that does not (the run "
                    "creates its namespace and deletes it at the end)"
                ) from None
            raise
        return name

    def delete_namespace(self, name: str, timeout: float = 120) -> None:
        """Delete a namespace and wait until it is gone.

        The namespace controller only starts on a deleted namespace after a fixed
        5 s delay, and then re-checks pods still terminating after half their grace
        period. Deleting the pods ourselves right away lets them terminate during
        that delay (a terminating namespace admits no new pods, so no controller
        replaces them): the controller then finds nothing left to wait for.
        """
        try:
            self.core.delete_namespace(name, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        try:
            self.core.delete_collection_namespaced_pod(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        wait_for(
            lambda: self.namespace_gone(name),
            what=f"namespace {name} to be deleted",
            timeout=timeout,
            interval=0.25,
        )

    def namespace_gone(self, name: str) -> bool:
        try:
            self.core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    # -- objects ----------------------------------------------------------------
    def _resource(self, obj: dict[str, Any]) -> Any:
        return self.dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    def _server_side_apply(
        self, obj: dict[str, Any], namespace: str | None, what: str, **extra: Any
    ) -> Any:
        """One server-side apply (namespaced objects into ``namespace``); a retryable
        API failure becomes a TransientError, anything else propagates."""
        resource = self._resource(obj)
        ns = namespace if resource.namespaced else None
        if ns:
            obj.setdefault("metadata", {})["namespace"] = ns
        elif namespace:
            # A cluster-scoped object applied for a run names that run, so a
            # crashed run's leftovers can be found without touching live runs'.
            labels = obj.setdefault("metadata", {}).setdefault("labels", {}) or {}
            obj["metadata"]["labels"] = {**labels, RUN_LABEL: namespace}
        try:
            return resource.server_side_apply(
                body=obj,
                name=obj["metadata"]["name"],
                namespace=ns,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                **extra,
            )
        except ApiException as exc:
            if is_transient(exc):
                raise TransientError(
                    f"{what} {obj['kind']}/{obj['metadata']['name']}: {exc.status}"
                ) from exc
            raise

    def apply(self, objs: Iterable[dict[str, Any]], namespace: str | None) -> list[Any]:
        """Server-side apply each object (namespaced ones into ``namespace``)."""
        return [self._server_side_apply(obj, namespace, "apply") for obj in objs]

    def dry_run_admission(self, obj: dict[str, Any], namespace: str | None) -> str | None:
        """Would the API server accept ``obj``? None if yes, else its refusal message.

        A server-side apply with dryRun=All: the request goes through defaulting,
        validation and every admission plugin (Pod Security, ValidatingAdmissionPolicies,
        webhooks) as a real create or update would, but nothing is stored.
        """
        try:
            self._server_side_apply(copy.deepcopy(obj), namespace, "dry-run", dry_run="All")
        except ApiException as exc:
            refused = refusal(exc)  # by validation or admission
            if refused is not None:
                return refused
            raise
        return None

    def delete(self, obj: dict[str, Any], namespace: str | None) -> None:
        resource = self._resource(obj)
        try:
            resource.delete(
                name=obj["metadata"]["name"], namespace=namespace if resource.namespaced else None
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_node_labels(self, node: str, labels: dict[str, str | None]) -> None:
        self.core.patch_node(node, {"metadata": {"labels": labels}})

    def patch_node_annotations(self, node: str, annotations: dict[str, str | None]) -> None:
        self.core.patch_node(node, {"metadata": {"annotations": annotations}})

    # -- reads ------------------------------------------------------------------
    def pods(self, namespace: str, selector: str = "") -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def refuse_unstartable(self, namespace: str, selector: str = "") -> None:
        """Raise at once if a pod waits for an image its node will never have.

        On a cluster kfs did not build, the images kfs makes (the toolbox, the log
        shipper, the Redis operator) must already be on the nodes; without one a
        rollout would otherwise only time out, minutes later, with nothing said."""
        for pod in self.pods(namespace, selector):
            refuse_unstartable(pod)

    def ready_pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        return [p for p in self.pods(namespace, selector) if pod_ready(p)]

    def ready_endpoints(self, namespace: str, service: str) -> int:
        """Ready addresses behind a Service, as kube-proxy would route to them."""
        disc = client.DiscoveryV1Api(self.api)
        slices = disc.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}"
        ).items
        return sum(
            1
            for s in slices
            for ep in s.endpoints or []
            if ep.conditions is None or ep.conditions.ready is not False
        )

    def node_ready(self, node: Any) -> bool:
        """Ready condition of a node, given by name or as a V1Node."""
        if isinstance(node, str):
            try:
                node = self.core.read_node(node)
            except ApiException as exc:
                if exc.status == 404:  # not registered (yet)
                    return False
                raise
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

    def node_summaries(self, kind_of: Callable[[Any], str]) -> list[dict[str, str]]:
        """One row per node for `kfs cluster status`."""
        return [
            {
                "name": n.metadata.name,
                "ready": "Ready" if self.node_ready(n) else "NotReady",
                "kind": kind_of(n),
                "kubelet": n.status.node_info.kubelet_version,
            }
            for n in self.core.list_node().items
        ]

    def wait_rollout(self, namespace: str, deployment: str, timeout: float = 120) -> None:
        def done() -> bool:
            d = self.apps.read_namespaced_deployment(deployment, namespace)
            want = d.spec.replicas or 0
            st = d.status
            # Pods the platform will not create (Pod Security, a policy, a webhook)
            # never come: say so now, as a refusal, instead of timing out.
            for c in st.conditions or []:
                text = (c.message or "").lower()
                if c.type == "ReplicaFailure" and c.status == "True" and "forbidden" in text:
                    raise RefusedError(f"deployment {namespace}/{deployment}: {c.message}")
            labels = (d.spec.selector.match_labels or {}) if d.spec.selector else {}
            self.refuse_unstartable(namespace, ",".join(f"{k}={v}" for k, v in labels.items()))
            return bool(
                (st.observed_generation or 0) >= (d.metadata.generation or 0)
                and (st.updated_replicas or 0) == want
                and (st.ready_replicas or 0) == want
                and (st.replicas or 0) == want
            )

        wait_for(done, what=f"deployment {namespace}/{deployment} rolled out", timeout=timeout)

    def wait_pod_running(self, namespace: str, pod: str, timeout: float = 60) -> None:
        def running() -> bool:
            found = self.core.read_namespaced_pod(pod, namespace)
            refuse_unstartable(found)
            return bool(found.status.phase == "Running")

        wait_for(
            running,
            what=f"pod {namespace}/{pod} running",
            timeout=timeout,
        )

    def wait_service_answers(
        self,
        namespace: str,
        service: str,
        from_pod: str,
        path: str = "/healthz",
        timeout: float = 30,
        in_a_row: int = 3,
    ) -> str:
        """Wait until ``from_pod`` gets an HTTP 2xx from the Service; return its ClusterIP.

        A new Service is routable only once kube-proxy has programmed it, which can
        lag its endpoints becoming ready by a sync period.
        """
        ip = str(self.core.read_namespaced_service(service, namespace).spec.cluster_ip)
        # Several answers in a row from one exec: after a pod is replaced, kube-proxy
        # may still route some connections to the old endpoint for a moment.
        probe = [
            "sh",
            "-c",
            f"for i in $(seq {in_a_row}); do "
            f"curl -sf -o /dev/null -m 2 http://{ip}{path} || exit 1; done",
        ]
        wait_for(
            lambda: self.exec(namespace, from_pod, probe)[0] == 0,
            what=f"service {namespace}/{service} to answer from {from_pod}",
            timeout=timeout,
        )
        return ip

    @timing.timed(timing.EXEC)
    def exec(
        self,
        namespace: str,
        pod: str,
        argv: list[str],
        timeout: float = 120,
        container: str | None = None,
    ) -> tuple[int, str, str]:
        """Run a command in a container through the API server (like kubectl exec)."""
        resp = stream.stream(
            self.core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=argv,
            container=container,
            stderr=True,
            stdin=False,
            stdout=True,
            tty=False,
            _preload_content=False,
            # Bound the websocket handshake too, not only the command's output.
            _request_timeout=min(timeout, 30),
        )
        out: list[str] = []
        err: list[str] = []
        deadline = time.monotonic() + timeout
        try:
            while resp.is_open():
                if time.monotonic() > deadline:
                    raise WaitTimeout(f"exec {' '.join(argv)} in {pod} ran over {timeout:g}s")
                resp.update(timeout=1)
                if resp.peek_stdout():
                    out.append(resp.read_stdout())
                if resp.peek_stderr():
                    err.append(resp.read_stderr())
            code = resp.returncode
        finally:
            resp.close()
        return (code if code is not None else -1), "".join(out), "".join(err)

    # -- artifacts --------------------------------------------------------------
    def dump_namespace(self, namespace: str, target: Path) -> None:
        """Write what an SRE would look at after a failure: objects, events, logs."""
        target.mkdir(parents=True, exist_ok=True)
        serialize = self.api.sanitize_for_serialization
        listings = {
            "pods": self.core.list_namespaced_pod(namespace),
            "services": self.core.list_namespaced_service(namespace),
            "endpointslices": client.DiscoveryV1Api(self.api).list_namespaced_endpoint_slice(
                namespace
            ),
            "deployments": self.apps.list_namespaced_deployment(namespace),
            "events": self.core.list_namespaced_event(namespace),
        }
        for name, listing in listings.items():
            (target / f"{name}.yaml").write_text(yaml.safe_dump(serialize(listing)))
        nodes = self.core.list_node()
        (target / "nodes.yaml").write_text(yaml.safe_dump(serialize(nodes)))
        events = sorted(
            listings["events"].items,
            key=lambda e: str(e.last_timestamp or e.event_time or ""),
        )
        (target / "events.txt").write_text(
            "".join(
                f"{e.last_timestamp or e.event_time} {e.type} {e.reason} "
                f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}\n"
                for e in events
            )
        )
        for pod in listings["pods"].items:
            for c in pod.spec.containers:
                try:
                    text = self.core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, container=c.name, tail_lines=2000
                    )
                except ApiException as exc:
                    text = f"(no log: {exc.status} {exc.reason})"
                (target / f"{pod.metadata.name}.{c.name}.log").write_text(str(text))
        (target / "index.json").write_text(json.dumps(sorted(p.name for p in target.iterdir())))


def pod_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
