"""Exposure audit: does a live cluster show the patterns the stories warn about?

`kfs audit` lists objects (never changes one) and asks, per story, whether the
cluster carries the configuration that story's incident grew from. The checks are
pure functions over plain dicts, in the shape the API server returns them
(camelCase keys, as in a manifest), so each one is tested from hand-written
objects without a cluster; `collect()` is the only part that talks to one.

Severities:

- high: the pattern that did the damage in the story is present as it was there
  (an external dashboard, a privileged or host-PID pod, a log shipper without a
  position database, a replicated Redis whose readiness ignores replication,
  pod egress to public addresses left untranslated).
- medium: a risk factor the story names (replicas with nothing keeping them
  apart, a CPU limit on a latency-critical workload, an old kernel...).
- low: weaker signals, or a high/medium one in a system namespace where node
  agents legitimately need host access.
- info: facts the audit cannot judge from the API alone (who does SNAT, where the
  replicas sit right now).

Latency-critical workloads are marked with the label or annotation
`kfs.dev/latency-critical: "true"` on the workload or its pod template.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

Obj = dict[str, Any]
Net = ipaddress.IPv4Network | ipaddress.IPv6Network

HIGH, MEDIUM, LOW, INFO = "high", "medium", "low", "info"
SEVERITIES = (HIGH, MEDIUM, LOW, INFO)
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

LATENCY_CRITICAL = "kfs.dev/latency-critical"
HOSTNAME_KEY = "kubernetes.io/hostname"
SYSTEM_NAMESPACES = frozenset({"kube-system"})

MOONLIGHT = "moonlight-anti-affinity"
BUFFER = "buffer-cpu-throttling"
FLANT = "flant-redis-data-loss"
JWPLAYER = "jwplayer-exposed-dashboard"
PROMETHEUSKUBE = "prometheuskube-missing-logs"
MINDTICKLE = "mindtickle-external-snat"

# In report order, with what each story's checks look for.
STORIES: dict[str, str] = {
    MOONLIGHT: "replicas that one node failure can take down together",
    BUFFER: "CPU limits that throttle latency-critical work; kernels with the CFS bug",
    FLANT: "Redis pods reported ready before replication has caught up",
    JWPLAYER: "dashboards and shells reachable from outside; pods with the node's powers",
    PROMETHEUSKUBE: "log shippers that lose lines when they restart or the backend pushes back",
    MINDTICKLE: "pod egress that leaves without source NAT",
}


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


# -- helpers over API objects -----------------------------------------------------------


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
    """A Kubernetes CPU quantity ("250m", "1", 2, "1.5") in cores."""
    if quantity is None:
        return None
    text = str(quantity).strip()
    try:
        if text.endswith("m"):
            return float(text[:-1]) / 1000
        return float(text)
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


# -- 1. moonlight-anti-affinity ----------------------------------------------------------


def _spreads_by_host(w: Workload) -> bool:
    """A required or preferred hostname anti-affinity term, or a hostname spread
    constraint, whose selector picks the workload's own pods (one that selects
    other pods keeps nothing apart)."""
    own = w.pod_labels
    anti = _get(w.spec, "affinity", "podAntiAffinity") or {}
    terms = list(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
    terms += [
        t.get("podAffinityTerm") or {}
        for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    ]
    terms += list(w.spec.get("topologySpreadConstraints") or [])
    return any(
        t.get("topologyKey") == HOSTNAME_KEY and selector_matches(t.get("labelSelector"), own)
        for t in terms
    )


def check_anti_affinity(snap: Snapshot) -> Iterator[Finding]:
    for w in workloads(snap):
        if w.kind not in ("Deployment", "StatefulSet") or w.replicas < 2:
            continue
        if not _spreads_by_host(w):
            yield w.finding(
                MOONLIGHT,
                "no-anti-affinity",
                MEDIUM,
                f"{w.replicas} replicas and no podAntiAffinity or topologySpreadConstraint on "
                f"{HOSTNAME_KEY} selecting its own pods: the scheduler may put every replica "
                "on one node (its default spreading is only a preference), and that node's "
                "failure takes the whole service down",
                "add podAntiAffinity with topologyKey kubernetes.io/hostname and a labelSelector "
                "matching the pods (required, with maxSurge 0/maxUnavailable 1 so a rollout "
                "cannot deadlock; or preferred), or a topologySpreadConstraint on "
                "kubernetes.io/hostname with maxSkew 1",
            )
        ready = [p for p in _pods_of(w, snap) if _pod_ready(p)]
        nodes = {str(_get(p, "spec", "nodeName")) for p in ready}
        if len(ready) >= 2 and len(nodes) == 1:
            yield w.finding(
                MOONLIGHT,
                "replicas-on-one-node",
                INFO,
                f"all {len(ready)} ready pods run on node {nodes.pop()} right now",
                "spread the pods (see no-anti-affinity) and reschedule them, e.g. "
                "kubectl rollout restart, once the rule is in place",
            )


# -- 2. buffer-cpu-throttling ------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return str(value).strip().lower() in ("true", "yes", "1")


def latency_critical(w: Workload) -> bool:
    return _truthy(w.labels.get(LATENCY_CRITICAL)) or _truthy(w.annotations.get(LATENCY_CRITICAL))


def _kernel(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_cpu_limits(snap: Snapshot) -> Iterator[Finding]:
    unlabelled_containers = 0
    unlabelled_workloads = 0
    for w in workloads(snap):
        limited = [
            (c, cpu_cores(_get(c, "resources", "limits", "cpu")))
            for c in w.containers
            if _get(c, "resources", "limits", "cpu") is not None
        ]
        if not limited:
            continue
        if not latency_critical(w):
            unlabelled_containers += len(limited)
            unlabelled_workloads += 1
            continue
        for c, cores in limited:
            limit = _get(c, "resources", "limits", "cpu")
            quota = (
                f" (a CFS quota of {cores * 100:g} ms of CPU per 100 ms period)" if cores else ""
            )
            yield w.finding(
                BUFFER,
                "cpu-limit-on-latency-critical",
                MEDIUM,
                f"container {c.get('name')} is latency-critical and has a CPU limit of "
                f"{limit}{quota}: a burst that uses it up is throttled until the next period, "
                "even on an idle node, and that pause lands in the response times",
                "remove limits.cpu and keep requests.cpu (Buffer's fix), or raise the limit "
                "well above the bursts; watch container_cpu_cfs_throttled_periods_total",
            )
    if unlabelled_containers:
        yield Finding(
            BUFFER,
            "cpu-limits-elsewhere",
            "Cluster",
            "",
            "unlabelled-workloads",
            INFO,
            f"{unlabelled_containers} containers in {unlabelled_workloads} workloads not "
            f"labelled {LATENCY_CRITICAL}=true have CPU limits; whether throttling hurts them "
            "depends on how bursty they are, which the API does not show",
            f"label latency-critical workloads {LATENCY_CRITICAL}=true so the audit checks "
            "them, and compare their throttled periods with their latency",
        )
    for node in snap.nodes:
        version = str(_get(node, "status", "nodeInfo", "kernelVersion") or "")
        parsed = _kernel(version)
        if parsed is None or parsed >= (5, 4):
            continue
        backported = parsed in ((4, 14), (4, 19), (5, 3))
        yield Finding(
            BUFFER,
            "old-kernel",
            "Node",
            "",
            _meta(node)[1],
            LOW if backported else MEDIUM,
            f"kernel {version} is older than 5.4, which removed the expiration of CPU-local "
            "CFS slices (the bug that throttles multi-threaded containers far below their "
            "limit)"
            + (
                f"; {parsed[0]}.{parsed[1]}.y stable kernels may carry the backport, check the "
                "distribution's changelog"
                if backported
                else ""
            ),
            "upgrade the node image to a kernel >= 5.4 (or a stable kernel with the fix), "
            "or remove CPU limits from latency-critical workloads",
        )


# -- 3. flant-redis-data-loss -------------------------------------------------------------

# Words of a probe that looks at replication; redis_ready.py is the project's own
# replication-aware probe (images/workloads), used by the RedisFailover operator.
_REPLICATION_AWARE = re.compile(
    r"master_link_status|master_sync_in_progress|info\s+replication|\brole\b|redis_ready\.py",
    re.IGNORECASE,
)
_REPLICATED_HINT = re.compile(r"replicaof|slaveof|sentinel|failover|replica", re.IGNORECASE)


def _runs_redis_server(c: Obj) -> bool:
    argv = " ".join(_argv(c)).lower()
    image = str(c.get("image") or "").lower().rsplit("/", 1)[-1].split(":", 1)[0]
    if "sentinel" in argv or "exporter" in image or "sentinel" in image:
        return False
    if "redis-server" in argv:
        return True
    return "redis" in image and not argv.startswith("redis-cli")


def _probe_text(probe: Obj, w: Workload, snap: Snapshot) -> str:
    """The probe's command, plus any script it runs from a mounted ConfigMap."""
    argv = [str(a) for a in _get(probe, "exec", "command") or []]
    text = " ".join(argv)
    scripts = _configmap_text(w.namespace, _mounted_configmaps(w.spec), snap)
    for key, body in scripts.items():
        if any(key in a for a in argv):
            text += "\n" + body
    return text


def check_redis_readiness(snap: Snapshot) -> Iterator[Finding]:
    for w in workloads(snap):
        for c in w.containers:
            if not _runs_redis_server(c):
                continue
            probe = c.get("readinessProbe")
            known = True  # whether the audit can see what the probe checks
            if not probe:
                what = "has no readiness probe"
            elif not probe.get("exec"):
                kind = next((k for k in ("tcpSocket", "httpGet", "grpc") if probe.get(k)), "?")
                what = f"has a {kind} readiness probe, which says nothing about replication"
            else:
                text = _probe_text(probe, w, snap)
                if _REPLICATION_AWARE.search(text):
                    continue
                known = "ping" in text.lower()
                what = (
                    "is ready as soon as `redis-cli ping` answers"
                    if known
                    # A script baked into the image: the API does not show what it checks.
                    else f"runs a readiness probe the audit cannot read ({text[:80]})"
                )
            spec_text = " ".join(
                [*(a for x in w.containers for a in _argv(x)), *w.labels.values(), w.name]
            )
            replicated = w.replicas >= 2 or bool(_REPLICATED_HINT.search(spec_text))
            risk = (
                "a restarted replica counts as ready before it has synced from the master, "
                "so a rolling restart can take the master down while the replicas hold no data"
            )
            yield w.finding(
                FLANT,
                "redis-readiness",
                LOW if not known else HIGH if replicated else MEDIUM,
                f"redis container {c.get('name')} {what}"
                + (f": {risk}" if known else f"; unless it checks replication, {risk}")
                + (
                    ""
                    if replicated
                    else " (this one looks standalone: the risk comes with replicas)"
                ),
                "make readiness replication-aware: on a replica require `redis-cli info "
                "replication` to show master_link_status:up and master_sync_in_progress:0; "
                "roll one pod at a time (maxUnavailable 1 / OrderedReady) and back up first",
            )


# -- 4. jwplayer-exposed-dashboard -------------------------------------------------------

INTERNAL_LB_ANNOTATIONS: dict[str, tuple[str, ...]] = {
    "cloud.google.com/load-balancer-type": ("internal",),
    "networking.gke.io/load-balancer-type": ("internal",),
    "service.beta.kubernetes.io/aws-load-balancer-internal": ("true", "0.0.0.0/0"),
    "service.beta.kubernetes.io/aws-load-balancer-scheme": ("internal",),
    "service.beta.kubernetes.io/azure-load-balancer-internal": ("true",),
}
_DASHBOARD = re.compile(
    r"dashboard|weave|scope|grafana|jupyter|notebook|kibana|shell|terminal|ttyd|"
    r"phpmyadmin|adminer",
    re.IGNORECASE,
)


def _internal_lb(svc: Obj) -> bool:
    ann = _annotations(svc)
    return any(
        str(ann.get(key, "")).strip().lower() in values
        for key, values in INTERNAL_LB_ANNOTATIONS.items()
    )


def _source_restricted(svc: Obj) -> bool:
    ranges = list(_get(svc, "spec", "loadBalancerSourceRanges") or [])
    ann = _annotations(svc).get("service.beta.kubernetes.io/load-balancer-source-ranges")
    if ann:
        ranges += [r.strip() for r in ann.split(",") if r.strip()]
    return bool(ranges) and not any(r in ("0.0.0.0/0", "::/0") for r in ranges)


def _service_text(svc: Obj, ws: list[Workload]) -> str:
    """Name, labels and the images/names of the pods it selects, to spot dashboards."""
    ns, name = _meta(svc)
    parts = [name, *(f"{k}={v}" for k, v in _labels(svc).items())]
    selector = _get(svc, "spec", "selector") or {}
    if selector:
        sel = {"matchLabels": selector}
        for w in ws:
            if w.namespace == ns and selector_matches(sel, w.pod_labels):
                parts += [w.name, *(str(c.get("image")) for c in w.containers)]
                parts += [str(c.get("name")) for c in w.containers]
    return " ".join(parts)


def check_exposed_services(snap: Snapshot) -> Iterator[Finding]:
    ws = workloads(snap)
    for svc in snap.services:
        ns, name = _meta(svc)
        kind = _get(svc, "spec", "type") or "ClusterIP"
        external_ips = list(_get(svc, "spec", "externalIPs") or [])
        if kind == "LoadBalancer" and not _internal_lb(svc):
            how = "a public load balancer (no internal-LB annotation)"
        elif kind == "NodePort":
            how = "a NodePort on every node (reachable wherever the nodes' addresses are)"
        elif external_ips:
            how = f"externalIPs {', '.join(external_ips)}"
        else:
            continue
        text = _service_text(svc, ws)
        match = _DASHBOARD.search(text)
        severity = HIGH if match else MEDIUM
        note = ""
        if kind == "LoadBalancer" and _source_restricted(svc):
            severity = _downgrade(severity)
            note = " (loadBalancerSourceRanges restrict who can connect)"
        what = f"looks like a dashboard or shell ({match.group(0)!r})" if match else "is exposed"
        yield Finding(
            JWPLAYER,
            "external-service",
            "Service",
            ns,
            name,
            severity,
            f"{kind} Service {what} through {how}{note}: anyone who finds the address "
            "reaches it, with whatever authentication the app itself has",
            "make it ClusterIP and reach it with kubectl port-forward or an authenticating "
            "proxy; if it must be a load balancer, make it internal (e.g. "
            "networking.gke.io/load-balancer-type: Internal, "
            "service.beta.kubernetes.io/aws-load-balancer-scheme: internal) and set "
            "loadBalancerSourceRanges",
        )


def _host_root_mounts(spec: Obj) -> list[str]:
    return [
        str(v.get("name"))
        for v in spec.get("volumes") or []
        if v.get("hostPath") is not None
        and (str(_get(v, "hostPath", "path") or "").rstrip("/") or "/") == "/"
    ]


def check_pod_security(snap: Snapshot) -> Iterator[Finding]:
    for w in workloads(snap):
        system = w.namespace in SYSTEM_NAMESPACES
        note = " (system namespace: node agents may need this; make sure it is one)"
        suffix = note if system else ""

        def sev(severity: str, system: bool = system) -> str:
            return _downgrade(severity) if system else severity

        privileged = [
            str(c.get("name"))
            for c in w.all_containers
            if _get(c, "securityContext", "privileged") is True
        ]
        if privileged:
            yield w.finding(
                JWPLAYER,
                "privileged",
                sev(HIGH),
                f"privileged containers {', '.join(privileged)}: whoever gets a shell in "
                f"them (through an exposed dashboard, say) owns the node{suffix}",
                "drop privileged: true; grant only the capabilities needed, and enforce the "
                "baseline or restricted Pod Security Standard on the namespace",
            )
        if w.spec.get("hostPID") is True:
            yield w.finding(
                JWPLAYER,
                "host-pid",
                sev(HIGH),
                "hostPID: true shows (and with root lets it signal or enter) every process "
                f"of the node{suffix}",
                "remove hostPID; enforce the baseline Pod Security Standard on the namespace",
            )
        roots = _host_root_mounts(w.spec)
        if roots:
            yield w.finding(
                JWPLAYER,
                "host-root-mount",
                sev(HIGH),
                f"volume {', '.join(roots)} mounts the node's whole filesystem (hostPath /)"
                f"{suffix}",
                "mount only the host directories the workload needs, read-only, or none",
            )
        pod_sc = w.spec.get("securityContext") or {}
        for c in w.all_containers:
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            user = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if non_root is True or (user is not None and int(user) != 0):
                continue
            explicit = user is not None
            yield w.finding(
                JWPLAYER,
                "root-user",
                sev(MEDIUM if explicit else LOW),
                f"container {c.get('name')} "
                + (
                    "runs as root (runAsUser 0)"
                    if explicit
                    else "may run as root: neither runAsNonRoot nor runAsUser is set, so the "
                    "image's USER decides"
                )
                + suffix,
                "set runAsNonRoot: true and a non-zero runAsUser in the pod's securityContext",
            )


# -- 5. prometheuskube-missing-logs ------------------------------------------------------


def fluentbit_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """[SECTION] blocks of a classic fluent-bit config (keys lower-cased), or the
    sections of its YAML format (pipeline.inputs/outputs, service)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, dict) and ("pipeline" in doc or "service" in doc):
        out: list[tuple[str, dict[str, str]]] = []
        if isinstance(doc.get("service"), dict):
            out.append(("SERVICE", {str(k).lower(): str(v) for k, v in doc["service"].items()}))
        pipeline = doc.get("pipeline")
        if not isinstance(pipeline, dict):
            pipeline = {}
        for key, section in (("inputs", "INPUT"), ("outputs", "OUTPUT"), ("filters", "FILTER")):
            for item in pipeline.get(key) or []:
                if isinstance(item, dict):
                    out.append((section, {str(k).lower(): str(v) for k, v in item.items()}))
        return out
    sections: list[tuple[str, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        header = re.fullmatch(r"\[\s*([A-Za-z_]+)\s*\]", line)
        if header:
            current = {}
            sections.append((header.group(1).upper(), current))
            continue
        if current is not None:
            key, *value = re.split(r"\s+", line, maxsplit=1)
            current[key.lower()] = value[0].strip() if value else ""
    return sections


def _shipper_kind(w: Workload, c: Obj, config: str) -> str | None:
    argv = " ".join(_argv(c))
    if "shipper.py" in argv:
        return "shipper.py"
    names = " ".join(
        [str(c.get("image")), argv, str(c.get("name")), w.name, *w.labels.values()]
    ).lower()
    if "fluent-bit" in names or "fluentbit" in names or re.search(r"^\s*\[INPUT\]", config, re.M):
        return "fluent-bit"
    if "fluentd" in names or "<source>" in config:
        return "fluentd"
    if re.search(r"\bvector\b", names):
        return "vector"
    return None


_POSITION_FIX = (
    "keep a position database on a hostPath that outlives the pod (fluent-bit tail DB, "
    "fluentd pos_file, our shipper's --state-dir), so a restarted shipper resumes where "
    "its predecessor stopped"
)
_RETRY_FIX = (
    "retry until the backend accepts (fluent-bit Retry_Limit no_limits, our shipper's "
    "--retry-limit none) with a filesystem buffer (storage.type filesystem) on a hostPath"
)


def _option(argv: list[str], name: str) -> str | None:
    """The value of --name VALUE or --name=VALUE; '' for a bare flag; None if absent."""
    for i, arg in enumerate(argv):
        if arg == name:
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            return "" if nxt.startswith("--") else nxt
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _shell_argv(c: Obj) -> list[str]:
    """argv, with `sh -c "..."` scripts split into words too."""
    out: list[str] = []
    for arg in _argv(c):
        try:
            out += shlex.split(arg) if " " in arg else [arg]
        except ValueError:
            out.append(arg)
    return out


def _check_shipper_py(w: Workload, c: Obj) -> Iterator[Finding]:
    argv = _shell_argv(c)
    state = next(
        (v for v in (_option(argv, o) for o in ("--state-dir", "--position-db")) if v is not None),
        None,
    )
    if state is None and _option(argv, "--durable") is None:
        yield w.finding(
            PROMETHEUSKUBE,
            "position-db",
            HIGH,
            f"shipper.py in container {c.get('name')} runs without --state-dir: no position "
            "database and a memory buffer, so a restart loses what was buffered and skips "
            "what was written while it was down",
            _POSITION_FIX,
        )
    elif state and not on_host_path(w.spec, c, state):
        yield w.finding(
            PROMETHEUSKUBE,
            "position-db-not-on-host",
            MEDIUM,
            f"shipper.py keeps its state in {state}, which is not on a hostPath volume: "
            "it dies with the pod",
            "mount a hostPath (DirectoryOrCreate) at the state directory",
        )
    limit = _option(argv, "--retry-limit")
    if limit is None or limit.lower() not in ("none", "false", "no_limits"):
        yield w.finding(
            PROMETHEUSKUBE,
            "retry-limit",
            MEDIUM,
            f"shipper.py gives up on a chunk after {limit or '1 (the default)'} retries: "
            "while the backend rejects writes (HTTP 429) chunks are dropped for good",
            _RETRY_FIX,
        )


def _check_fluentbit(w: Workload, c: Obj, configs: dict[str, str]) -> Iterator[Finding]:
    # Each file on its own: a YAML config parses only without its neighbours.
    sections = [s for text in configs.values() for s in fluentbit_sections(text)]
    tails = [s for n, s in sections if n == "INPUT" and s.get("name", "").lower() == "tail"]
    if not sections:
        yield w.finding(
            PROMETHEUSKUBE,
            "config-not-found",
            INFO,
            f"fluent-bit container {c.get('name')}: no config found in a mounted ConfigMap, "
            "so its position database and retries cannot be checked",
            "check by hand that every tail input has DB on a hostPath and outputs retry",
        )
        return
    for tail in tails:
        path = tail.get("path", "?")
        db = tail.get("db")
        if not db:
            yield w.finding(
                PROMETHEUSKUBE,
                "position-db",
                HIGH,
                f"fluent-bit tail input {path} has no DB: after a restart it starts at the "
                "end of each file (Read_from_Head false), so lines written meanwhile are "
                "never read",
                _POSITION_FIX,
            )
        elif not on_host_path(w.spec, c, db):
            yield w.finding(
                PROMETHEUSKUBE,
                "position-db-not-on-host",
                MEDIUM,
                f"fluent-bit tail input {path} keeps its DB at {db}, which is not on a "
                "hostPath volume: it dies with the pod",
                "put DB under a hostPath mount (e.g. /var/log/flb_kube.db)",
            )
    outputs = [s for n, s in sections if n == "OUTPUT"]
    memory = any(s.get("storage.type", "memory").lower() == "memory" for s in tails) or not tails
    for out in outputs:
        limit = out.get("retry_limit", "1")
        if limit.strip().lower() == "1" and memory:
            yield w.finding(
                PROMETHEUSKUBE,
                "retry-limit",
                MEDIUM,
                f"fluent-bit output {out.get('name', '?')} (match {out.get('match', '*')}) "
                f"has Retry_Limit {limit if 'retry_limit' in out else '1 (the default)'} and "
                "the inputs buffer in memory: chunks the backend rejects twice are dropped, "
                "and buffered chunks die with the pod",
                _RETRY_FIX,
            )


def _check_fluentd(w: Workload, c: Obj, config: str) -> Iterator[Finding]:
    sources = re.findall(r"<source>(.*?)</source>", config, re.S)
    if not sources:
        yield w.finding(
            PROMETHEUSKUBE,
            "config-not-found",
            INFO,
            f"fluentd container {c.get('name')}: no <source> found in a mounted ConfigMap, "
            "so its pos_file cannot be checked",
            "check by hand that every tail source has a pos_file on a hostPath",
        )
        return
    for body in sources:
        if not re.search(r"@type\s+tail\b", body):
            continue
        path = (re.search(r"^\s*path\s+(\S+)", body, re.M) or [None, "?"])[1]
        pos = re.search(r"^\s*pos_file\s+(\S+)", body, re.M)
        if pos is None:
            yield w.finding(
                PROMETHEUSKUBE,
                "position-db",
                HIGH,
                f"fluentd tail source {path} has no pos_file: a restarted fluentd does not "
                "know where it stopped",
                _POSITION_FIX,
            )
        elif not on_host_path(w.spec, c, pos.group(1)):
            yield w.finding(
                PROMETHEUSKUBE,
                "position-db-not-on-host",
                MEDIUM,
                f"fluentd tail source {path} keeps its pos_file at {pos.group(1)}, which is "
                "not on a hostPath volume: it dies with the pod",
                "put pos_file under a hostPath mount",
            )


def _check_vector(w: Workload, c: Obj, config: str) -> Iterator[Finding]:
    m = re.search(r"data_dir\s*[=:]\s*[\"']?([^\"'\s]+)", config)
    data_dir = m.group(1) if m else "/var/lib/vector"
    if not on_host_path(w.spec, c, data_dir):
        yield w.finding(
            PROMETHEUSKUBE,
            "position-db-not-on-host",
            MEDIUM,
            f"vector keeps its checkpoints (and disk buffers) in data_dir {data_dir}, which "
            "is not on a hostPath volume: a new pod starts without them",
            "mount a hostPath at vector's data_dir",
        )


def check_log_shippers(snap: Snapshot) -> Iterator[Finding]:
    for w in workloads(snap):
        if w.kind != "DaemonSet":
            continue
        configs = _configmap_text(w.namespace, _mounted_configmaps(w.spec), snap)
        config = "\n".join(configs.values())
        for c in w.containers:
            kind = _shipper_kind(w, c, config)
            if kind == "shipper.py":
                yield from _check_shipper_py(w, c)
            elif kind == "fluent-bit":
                yield from _check_fluentbit(w, c, configs)
            elif kind == "fluentd":
                yield from _check_fluentd(w, c, config)
            elif kind == "vector":
                yield from _check_vector(w, c, config)


# -- 6. mindtickle-external-snat ---------------------------------------------------------

_PRIVATE: tuple[Net, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT space, used for pods on EKS custom networking
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


def _subnet_of(a: Net, b: Net) -> bool:
    return a.version == b.version and a.subnet_of(b)  # type: ignore[arg-type]


def cluster_ranges(snap: Snapshot) -> list[Net]:
    """Address ranges the cluster itself uses: pod CIDRs, service CIDRs, kube-proxy's
    clusterCIDR, and the addresses of nodes and pods."""
    texts: list[str] = list(snap.service_cidrs)
    for node in snap.nodes:
        texts += list(_get(node, "spec", "podCIDRs") or [])
        texts.append(str(_get(node, "spec", "podCIDR") or ""))
        texts += [
            str(a.get("address"))
            for a in _get(node, "status", "addresses") or []
            if a.get("type") in ("InternalIP", "ExternalIP")
        ]
    for pod in snap.pods:
        texts += [str(p.get("ip")) for p in _get(pod, "status", "podIPs") or []]
    for cm in snap.configmaps:
        if _meta(cm)[1] == "kube-proxy":
            for value in (cm.get("data") or {}).values():
                texts += re.findall(r"clusterCIDR:\s*\"?([0-9a-fA-F:./,]+)", str(value))
    out: list[Net] = []
    for text in texts:
        for part in text.split(","):
            try:
                out.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                continue
    return out


def classify_cidr(cidr: str, known: list[Net]) -> tuple[str, str] | None:
    """(severity, why) for a CIDR that pod traffic reaches without SNAT, or None if fine."""
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return LOW, "is not a valid CIDR (the agent may reject the whole config)"
    if not any(_subnet_of(net, p) for p in _PRIVATE):
        return HIGH, (
            "includes public addresses: pods reach them with their own pod IPs, which "
            "nothing on the internet routes back"
        )
    if net.version == 4 and net.prefixlen <= 8:
        return MEDIUM, (
            "is a whole /8 (or more) of private space: every private network beyond the "
            "cluster and its VPC (VPN, peered or partner networks) sees pod IPs"
        )
    if known and not any(net.overlaps(k) for k in known if k.version == net.version):
        return MEDIUM, (
            "is no range this cluster uses (pods, services, nodes): that network sees pod "
            "IPs and must route them back, or connections time out"
        )
    return None


_CIDR_FIX = (
    "list only ranges that route pod IPs back (pod CIDR, service CIDR, the VPC's own "
    "CIDRs); everything else then leaves masqueraded to the node's address"
)


def _external_snat(namespace: str, name: str, var: Obj | None) -> Finding:
    """What the AWS VPC CNI's external-SNAT setting means. Either value can be the
    wrong one (MindTickle's fix was to turn it on), and which is right depends on
    the subnets' route tables, which the API does not show: always informational."""
    value = "false (the default)" if var is None else var.get("value")
    if value is None:
        meaning = "it is set from elsewhere (valueFrom), so its value is unknown here"
    elif str(value).lower() == "true":
        meaning = (
            "the node does not source-NAT pod traffic leaving the VPC, so something else "
            "must: a NAT gateway on the subnet's default route, or a VPN/peering that "
            "routes the pod addresses back. Right for private subnets behind a NAT "
            "gateway; nodes in public subnets then lose internet egress"
        )
    else:
        meaning = (
            "the node rewrites pod traffic leaving the VPC to its own primary address. "
            "Right for nodes in public subnets; across VPN, peering or a NAT gateway that "
            "expects pod addresses, answers can go astray and connections time out"
        )
    return Finding(
        MINDTICKLE,
        "external-snat",
        "DaemonSet",
        namespace,
        name,
        INFO,
        f"AWS_VPC_K8S_CNI_EXTERNALSNAT={value if value is not None else '?'}: {meaning}",
        "set it to match the network and test egress after changing it: true where a NAT "
        "gateway translates pod egress, false for nodes in public subnets",
    )


def check_snat(snap: Snapshot) -> Iterator[Finding]:
    known = cluster_ranges(snap)
    for ds in snap.daemonsets:
        ns, name = _meta(ds)
        for c in _get(ds, "spec", "template", "spec", "containers") or []:
            env = {e.get("name"): e for e in c.get("env") or []}
            vpc_cni = "amazon-k8s-cni" in str(c.get("image")) or any(
                str(k).startswith("AWS_VPC_K8S_CNI_") for k in env
            )
            if vpc_cni:
                yield _external_snat(ns, name, env.get("AWS_VPC_K8S_CNI_EXTERNALSNAT"))
            excluded = env.get("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS")
            for cidr in str((excluded or {}).get("value") or "").split(","):
                if not cidr.strip():
                    continue
                verdict = classify_cidr(cidr, known)
                if verdict:
                    yield Finding(
                        MINDTICKLE,
                        "non-masquerade-cidr",
                        "DaemonSet",
                        ns,
                        name,
                        verdict[0],
                        f"AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS entry {cidr.strip()} {verdict[1]}",
                        _CIDR_FIX,
                    )
    for cm in snap.configmaps:
        ns, name = _meta(cm)
        for value in (cm.get("data") or {}).values():
            if "nonMasqueradeCIDRs" not in str(value) and not name.startswith("ip-masq-agent"):
                continue
            try:
                config = yaml.safe_load(str(value))
            except yaml.YAMLError:
                continue
            if not isinstance(config, dict):
                continue
            for cidr in config.get("nonMasqueradeCIDRs") or []:
                verdict = classify_cidr(str(cidr), known)
                if verdict:
                    yield Finding(
                        MINDTICKLE,
                        "non-masquerade-cidr",
                        "ConfigMap",
                        ns,
                        name,
                        verdict[0],
                        f"ip-masq-agent nonMasqueradeCIDRs entry {cidr} {verdict[1]}",
                        _CIDR_FIX,
                    )


# -- all of it --------------------------------------------------------------------------

CHECKS = (
    check_anti_affinity,
    check_cpu_limits,
    check_redis_readiness,
    check_exposed_services,
    check_pod_security,
    check_log_shippers,
    check_snat,
)


def audit(snap: Snapshot) -> list[Finding]:
    """Every finding, by story (in STORIES order), then severity, then object."""
    story_order = {s: i for i, s in enumerate(STORIES)}
    found = [f for check in CHECKS for f in check(snap)]
    return sorted(found, key=lambda f: (story_order[f.story], _RANK[f.severity], f.object, f.check))


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
    try:
        cidrs = client.NetworkingV1Api(kube.api).list_service_cidr().items
        snap.service_cidrs = [c for item in cidrs for c in (item.spec.cidrs or [])]
    except ApiException:
        # ServiceCIDR is GA only since 1.33; older clusters or narrow RBAC lack it,
        # and the ranges then come from nodes and pods alone.
        snap.service_cidrs = []
    return snap
