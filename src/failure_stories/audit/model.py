"""The audit's model: findings, the snapshot of a cluster that checks read, and
the helpers they share to read it; `collect()` is the only part that talks to a
cluster. Each story's own checks live in `scenarios/<id>/audit.py`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils import parse_quantity

Obj = dict[str, Any]


HIGH, MEDIUM, LOW, INFO = "high", "medium", "low", "info"


SEVERITIES = (HIGH, MEDIUM, LOW, INFO)


_RANK = {s: i for i, s in enumerate(SEVERITIES)}


LATENCY_CRITICAL = "kfs.dev/latency-critical"


HOSTNAME_KEY = "kubernetes.io/hostname"


SYSTEM_NAMESPACES = frozenset({"kube-system"})


@dataclass(frozen=True)
class Finding:
    story: str
    check: str
    kind: str
    namespace: str
    name: str
    severity: str
    message: str
    fix: str

    @property
    def object(self) -> str:
        """`Kind/namespace/name`, or `Kind/name` for cluster-scoped objects."""
        return "/".join(p for p in (self.kind, self.namespace, self.name) if p)

    def to_dict(self) -> dict[str, str]:
        return {
            "story": self.story,
            "check": self.check,
            "object": self.object,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class Snapshot:
    """What the audit reads: list results as plain dicts."""

    deployments: list[Obj] = field(default_factory=list)
    statefulsets: list[Obj] = field(default_factory=list)
    daemonsets: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    services: list[Obj] = field(default_factory=list)
    configmaps: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)
    # spec.cidrs of networking.k8s.io ServiceCIDR objects (empty on old clusters)
    service_cidrs: list[str] = field(default_factory=list)
    roles: list[Obj] = field(default_factory=list)
    cluster_roles: list[Obj] = field(default_factory=list)
    role_bindings: list[Obj] = field(default_factory=list)
    cluster_role_bindings: list[Obj] = field(default_factory=list)
    # What the audit could not read (e.g. RBAC objects under a narrow role), so a
    # check that needed it says so instead of passing silently.
    unreadable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Iterable[Obj]) -> Snapshot:
        """A snapshot of manifests (e.g. a file's documents) instead of a live cluster."""
        snap = cls()
        for obj in objects:
            target = _SNAPSHOT_FIELDS.get(str(obj.get("kind")))
            if target is not None:
                getattr(snap, target).append(obj)
        return snap


_SNAPSHOT_FIELDS = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
    "Pod": "pods",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Node": "nodes",
    "Role": "roles",
    "ClusterRole": "cluster_roles",
    "RoleBinding": "role_bindings",
    "ClusterRoleBinding": "cluster_role_bindings",
}


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _meta(obj: Obj) -> tuple[str, str]:
    return str(_get(obj, "metadata", "namespace") or ""), str(_get(obj, "metadata", "name") or "")


def _labels(obj: Obj, *prefix: str) -> dict[str, str]:
    return dict(_get(obj, *prefix, "metadata", "labels") or {})


def _annotations(obj: Obj, *prefix: str) -> dict[str, str]:
    return dict(_get(obj, *prefix, "metadata", "annotations") or {})


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector against a label set; an empty or absent one matches nothing,
    as in affinity terms and workload selectors."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        present = key in labels
        if (
            (op == "In" and (not present or labels[key] not in values))
            or (op == "NotIn" and present and labels[key] in values)
            or (op == "Exists" and not present)
            or (op == "DoesNotExist" and present)
        ):
            return False
    return bool(selector.get("matchLabels") or selector.get("matchExpressions"))


def cpu_cores(quantity: Any) -> float | None:
    """A Kubernetes CPU quantity ("250m", "1", 2, "1.5") in cores; None if it is
    not one (the client's own parser, so every suffix Kubernetes knows is read)."""
    if quantity is None:
        return None
    try:
        return float(parse_quantity(str(quantity).strip()))
    except ValueError:
        return None


def _pod_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in _get(pod, "status", "conditions") or []
    )


def _argv(container: Obj) -> list[str]:
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def _downgrade(severity: str, steps: int = 1) -> str:
    return SEVERITIES[min(_RANK[severity] + steps, _RANK[LOW])] if severity != INFO else INFO


@dataclass(frozen=True)
class Workload:
    """A pod template as the audit sees it: a workload's, or a standalone pod's own."""

    kind: str
    namespace: str
    name: str
    replicas: int
    labels: dict[str, str]  # the workload's and its template's, merged
    pod_labels: dict[str, str]  # what its pods carry, for selectors
    annotations: dict[str, str]
    selector: Obj | None
    spec: Obj

    @property
    def containers(self) -> list[Obj]:
        return list(self.spec.get("containers") or [])

    @property
    def all_containers(self) -> list[Obj]:
        return self.containers + list(self.spec.get("initContainers") or [])

    def finding(self, story: str, check: str, severity: str, message: str, fix: str) -> Finding:
        return Finding(story, check, self.kind, self.namespace, self.name, severity, message, fix)


# Pods these controllers own are audited through their template, once per workload.
_TEMPLATED_OWNERS = frozenset({"ReplicaSet", "StatefulSet", "DaemonSet"})


def workloads(snap: Snapshot) -> list[Workload]:
    out: list[Workload] = []
    for kind, items in (
        ("Deployment", snap.deployments),
        ("StatefulSet", snap.statefulsets),
        ("DaemonSet", snap.daemonsets),
    ):
        for obj in items:
            ns, name = _meta(obj)
            replicas = _get(obj, "spec", "replicas")
            out.append(
                Workload(
                    kind,
                    ns,
                    name,
                    0 if kind == "DaemonSet" else (1 if replicas is None else int(replicas)),
                    {**_labels(obj), **_labels(obj, "spec", "template")},
                    _labels(obj, "spec", "template"),
                    {**_annotations(obj), **_annotations(obj, "spec", "template")},
                    _get(obj, "spec", "selector"),
                    dict(_get(obj, "spec", "template", "spec") or {}),
                )
            )
    for pod in snap.pods:
        owners = {o.get("kind") for o in _get(pod, "metadata", "ownerReferences") or []}
        if owners & _TEMPLATED_OWNERS:
            continue
        if _get(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        ns, name = _meta(pod)
        out.append(
            Workload(
                "Pod",
                ns,
                name,
                1,
                _labels(pod),
                _labels(pod),
                _annotations(pod),
                None,
                dict(pod.get("spec") or {}),
            )
        )
    return out


def _pods_of(w: Workload, snap: Snapshot) -> list[Obj]:
    return [
        p
        for p in snap.pods
        if _meta(p)[0] == w.namespace and selector_matches(w.selector, _labels(p))
    ]


def _configmap_text(namespace: str, names: Iterable[str], snap: Snapshot) -> dict[str, str]:
    """{key: text} of the named ConfigMaps of one namespace."""
    wanted = set(names)
    out: dict[str, str] = {}
    for cm in snap.configmaps:
        ns, name = _meta(cm)
        if ns == namespace and name in wanted:
            for key, value in (cm.get("data") or {}).items():
                out[key] = str(value)
    return out


def _mounted_configmaps(spec: Obj) -> list[str]:
    names: list[str] = []
    for vol in spec.get("volumes") or []:
        if _get(vol, "configMap", "name"):
            names.append(vol["configMap"]["name"])
        for source in _get(vol, "projected", "sources") or []:
            if _get(source, "configMap", "name"):
                names.append(source["configMap"]["name"])
    return names


def on_host_path(spec: Obj, container: Obj, path: str) -> bool:
    """Does ``path`` inside the container live on a hostPath volume (outlive the pod)?"""
    host_volumes = {v.get("name") for v in spec.get("volumes") or [] if v.get("hostPath")}
    best = ""
    best_is_host = False
    for mount in container.get("volumeMounts") or []:
        where = str(mount.get("mountPath") or "").rstrip("/") or "/"
        inside = path == where or path.startswith(where.rstrip("/") + "/")
        if inside and len(where) > len(best):
            best, best_is_host = where, mount.get("name") in host_volumes
    return best_is_host


def _subjects_in(subjects: list[Obj], namespace: str) -> list[Obj]:
    """The subjects of a binding that are service accounts of ``namespace``
    (a group of every service account counts as that namespace's)."""
    out = []
    for sub in subjects:
        kind, name = sub.get("kind"), str(sub.get("name") or "")
        own_account = kind == "ServiceAccount" and sub.get("namespace") == namespace
        if own_account or (
            kind == "User" and name.startswith(f"system:serviceaccount:{namespace}:")
        ):
            out.append(sub)
        elif kind == "Group" and name in (
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
        ):
            out.append({**sub, "name": f"system:serviceaccounts:{namespace}"})
    return out


def has_high(findings: Iterable[Finding]) -> bool:
    return any(f.severity == HIGH for f in findings)


def collect(kube: Any, namespace: str | None = None) -> Snapshot:
    """Read what the checks need with list calls only (get/list RBAC suffices).

    ``namespace`` limits namespaced objects to one namespace; nodes and service
    CIDRs are cluster-scoped and always read."""
    import urllib3
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from failure_stories.core.errors import ClusterUnreachableError, PermanentError, TransientError
    from failure_stories.providers.kube import is_transient

    serialize = kube.api.sanitize_for_serialization

    def listed(what: str, call: Any, *args: Any) -> list[Obj]:
        try:
            result = call(*args)
        except ApiException as exc:
            if exc.status in (401, 403):
                raise PermanentError(
                    f"the audit may not list {what} ({exc.status} {exc.reason}): it needs "
                    "get/list on deployments, statefulsets, daemonsets, pods, services, "
                    "configmaps and nodes"
                ) from exc
            if is_transient(exc):
                raise TransientError(f"listing {what}: {exc.status} {exc.reason}") from exc
            raise PermanentError(f"listing {what}: {exc.status} {exc.reason}") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise ClusterUnreachableError(f"listing {what}: {type(exc).__name__}") from exc
        return [serialize(item) for item in result.items]

    core, apps = kube.core, kube.apps
    scoped = namespace is not None

    def pick(name: str, ns_call: Any, all_call: Any) -> list[Obj]:
        return listed(name, ns_call, namespace) if scoped else listed(name, all_call)

    snap = Snapshot(
        deployments=pick(
            "deployments", apps.list_namespaced_deployment, apps.list_deployment_for_all_namespaces
        ),
        statefulsets=pick(
            "statefulsets",
            apps.list_namespaced_stateful_set,
            apps.list_stateful_set_for_all_namespaces,
        ),
        daemonsets=pick(
            "daemonsets", apps.list_namespaced_daemon_set, apps.list_daemon_set_for_all_namespaces
        ),
        pods=pick("pods", core.list_namespaced_pod, core.list_pod_for_all_namespaces),
        services=pick(
            "services", core.list_namespaced_service, core.list_service_for_all_namespaces
        ),
        configmaps=pick(
            "configmaps", core.list_namespaced_config_map, core.list_config_map_for_all_namespaces
        ),
        nodes=listed("nodes", core.list_node),
    )
    rbac = client.RbacAuthorizationV1Api(kube.api)
    for attr, what, ns_call, all_call in (
        (
            "role_bindings",
            "rolebindings",
            rbac.list_namespaced_role_binding,
            rbac.list_role_binding_for_all_namespaces,
        ),
        ("roles", "roles", rbac.list_namespaced_role, rbac.list_role_for_all_namespaces),
        ("cluster_role_bindings", "clusterrolebindings", None, rbac.list_cluster_role_binding),
        ("cluster_roles", "clusterroles", None, rbac.list_cluster_role),
    ):
        try:
            if scoped and ns_call is not None:
                setattr(snap, attr, listed(what, ns_call, namespace))
            else:
                setattr(snap, attr, listed(what, all_call))
        except ClusterUnreachableError:
            raise
        except PermanentError as exc:
            # Many read-only audit roles may not read RBAC: the other checks still run,
            # and the RBAC check reports what it could not see.
            snap.unreadable[what] = str(exc)
    if scoped:
        # Cluster-wide bindings, as far as they grant to the namespace audited.
        snap.cluster_role_bindings = [
            {**b, "subjects": _subjects_in(b.get("subjects") or [], namespace or "")}
            for b in snap.cluster_role_bindings
        ]
    try:
        cidrs = client.NetworkingV1Api(kube.api).list_service_cidr().items
        snap.service_cidrs = [c for item in cidrs for c in (item.spec.cidrs or [])]
    except ApiException:
        # ServiceCIDR is GA only since 1.33; older clusters or narrow RBAC lack it,
        # and the ranges then come from nodes and pods alone.
        snap.service_cidrs = []
    return snap
