"""The jwplayer-exposed-dashboard story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

import re
from collections.abc import Iterator

from failure_stories.audit.model import (
    HIGH,
    LOW,
    MEDIUM,
    SYSTEM_NAMESPACES,
    Finding,
    Obj,
    Snapshot,
    Workload,
    _annotations,
    _downgrade,
    _get,
    _labels,
    _meta,
    selector_matches,
    workloads,
)

STORY = "jwplayer-exposed-dashboard"
# What its checks look for, as the audit report says it.
LOOKS_FOR = "dashboards and shells reachable from outside; pods with the node's powers"


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
            STORY,
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
                STORY,
                "privileged",
                sev(HIGH),
                f"privileged containers {', '.join(privileged)}: whoever gets a shell in "
                f"them (through an exposed dashboard, say) owns the node{suffix}",
                "drop privileged: true; grant only the capabilities needed, and enforce the "
                "baseline or restricted Pod Security Standard on the namespace",
            )
        if w.spec.get("hostPID") is True:
            yield w.finding(
                STORY,
                "host-pid",
                sev(HIGH),
                "hostPID: true shows (and with root lets it signal or enter) every process "
                f"of the node{suffix}",
                "remove hostPID; enforce the baseline Pod Security Standard on the namespace",
            )
        roots = _host_root_mounts(w.spec)
        if roots:
            yield w.finding(
                STORY,
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
                STORY,
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


CHECKS = (check_exposed_services, check_pod_security)
