"""The jwplayer-exposed-dashboard story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

import re
from collections.abc import Iterator

from failure_stories.audit.model import (
    HIGH,
    INFO,
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
LOOKS_FOR = (
    "dashboards and shells reachable from outside; pods with the node's powers; "
    "service accounts with the cluster's"
)


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


# The container runtimes' API sockets: whoever can connect to one starts privileged
# containers on the node, whatever the pod's own securityContext says.
RUNTIME_SOCKETS = (
    "/run/containerd/containerd.sock",
    "/run/k3s/containerd/containerd.sock",
    "/run/docker.sock",
    "/run/crio/crio.sock",
    "/run/cri-dockerd.sock",
)


def _host_path(path: str) -> str:
    """A host path as the node resolves it: /var/run is a link to /run on every
    distribution Kubernetes runs on, and the kubelet follows it when it mounts."""
    path = "/" + "/".join(p for p in path.split("/") if p and p != ".")
    if path == "/var/run" or path.startswith("/var/run/"):
        path = path.removeprefix("/var")
    return path


def _runtime_socket_mounts(spec: Obj) -> list[tuple[str, str, str]]:
    """(volume, host path, socket) for each hostPath volume that is a runtime's
    socket or a directory holding one (/run, /var/run, /run/containerd). The
    host's root is left to the host-root-mount finding."""
    out = []
    for v in spec.get("volumes") or []:
        raw = _get(v, "hostPath", "path")
        if raw is None:
            continue
        path = _host_path(str(raw))
        if path == "/":
            continue
        for sock in RUNTIME_SOCKETS:
            if sock == path or sock.startswith(path + "/"):
                out.append((str(v.get("name")), str(raw), sock))
                break
    return out


def check_runtime_socket(snap: Snapshot) -> Iterator[Finding]:
    for w in workloads(snap):
        mounts = _runtime_socket_mounts(w.spec)
        if not mounts:
            continue
        system = w.namespace in SYSTEM_NAMESPACES
        what = "; ".join(
            f"volume {name} (hostPath {raw}" + ("" if raw.endswith(".sock") else f", holds {sock}")
            for name, raw, sock in mounts
        )
        yield w.finding(
            STORY,
            "runtime-socket",
            _downgrade(HIGH) if system else HIGH,
            f"{what}) reaches the container runtime's API: a shell in this pod starts a "
            "privileged container on the node, even if the pod itself is unprivileged"
            + (
                " (system namespace: node agents may need this; make sure it is one)"
                if system
                else ""
            ),
            "do not mount the runtime's socket or the directory holding it; read what you "
            "need through the Kubernetes API (logs, metrics) or a node agent with a narrow API",
        )


def _rules_of(snap: Snapshot, namespace: str, ref: Obj) -> list[Obj] | None:
    """The rules of a binding's roleRef, or None if the role is not in the snapshot."""
    kind, name = ref.get("kind"), ref.get("name")
    pool = snap.cluster_roles if kind == "ClusterRole" else snap.roles
    for role in pool:
        ns, rname = _meta(role)
        if rname == name and (kind == "ClusterRole" or ns == namespace):
            return list(role.get("rules") or [])
    return None


def _wildcards(rules: list[Obj]) -> list[str]:
    """Each rule granting every verb or every resource, as `verbs on resources`."""
    out = []
    for rule in rules:
        verbs = [str(v) for v in rule.get("verbs") or []]
        resources = [str(r) for r in rule.get("resources") or []]
        if not resources:
            continue  # nonResourceURLs (/healthz, /metrics) open no object
        if rule.get("resourceNames") and "*" not in resources:
            continue  # every verb, but on named objects only
        if "*" in verbs or "*" in resources:
            groups = ",".join(str(g) or "core" for g in rule.get("apiGroups") or [""])
            out.append(f"{','.join(verbs)} on {groups}/{','.join(resources)}")
    return out


def _service_accounts(binding: Obj) -> list[tuple[str, str]]:
    """(namespace, name) of the service accounts a binding grants to; a group of
    every service account (of a namespace) is given as name '*'."""
    ns, _ = _meta(binding)
    out = []
    for subject in binding.get("subjects") or []:
        kind, name = subject.get("kind"), str(subject.get("name") or "")
        if kind == "ServiceAccount":
            out.append((str(subject.get("namespace") or ns), name))
        elif kind == "User" and name.startswith("system:serviceaccount:"):
            parts = name.split(":")
            if len(parts) == 4:
                out.append((parts[2], parts[3]))
        elif kind == "Group" and name == "system:serviceaccounts":
            out.append(("*", "*"))
        elif kind == "Group" and name.startswith("system:serviceaccounts:"):
            out.append((name.removeprefix("system:serviceaccounts:"), "*"))
    return out


def _runs_as(ws: list[Workload], namespace: str, account: str) -> list[str]:
    return [
        f"{w.kind}/{w.name}"
        for w in ws
        if (namespace in ("*", w.namespace))
        and (account == "*" or (w.spec.get("serviceAccountName") or "default") == account)
        and w.spec.get("automountServiceAccountToken") is not False
    ]


def check_service_account_rights(snap: Snapshot) -> Iterator[Finding]:
    ws = workloads(snap)
    bindings = [("ClusterRoleBinding", b) for b in snap.cluster_role_bindings]
    bindings += [("RoleBinding", b) for b in snap.role_bindings]
    for kind, binding in bindings:
        bns, bname = _meta(binding)
        if _labels(binding).get("kubernetes.io/bootstrapping") == "rbac-defaults":
            continue  # the API server's own controllers' roles, reconciled at every start
        ref = binding.get("roleRef") or {}
        if ref.get("name") == "cluster-admin" and ref.get("kind") == "ClusterRole":
            check, grant = "cluster-admin-binding", "cluster-admin"
            power = "does anything in the cluster: reads every secret, starts privileged pods"
        else:
            rules = _rules_of(snap, bns, ref)
            wild = _wildcards(rules or [])
            if not wild:
                continue
            check = "wildcard-role-binding"
            grant = f"{ref.get('kind')} {ref.get('name')} ({'; '.join(wild)})"
            power = (
                "holds these rights, and a wildcard also grants what is added later "
                "(every resource includes secrets; every verb includes escalate)"
            )
        cluster_wide = kind == "ClusterRoleBinding"
        scope = "in every namespace" if cluster_wide else f"in namespace {bns}"
        for ns, account in _service_accounts(binding):
            severity = HIGH if cluster_wide else MEDIUM
            if ns in SYSTEM_NAMESPACES:
                severity = _downgrade(severity)
            who = (
                "every service account" + ("" if ns == "*" else f" of namespace {ns}")
                if account == "*"
                else f"service account {ns}/{account}"
            )
            pods = _runs_as(ws, ns, account)
            used = (
                f"; its token is mounted in {', '.join(pods[:5])}"
                + (f" and {len(pods) - 5} more" if len(pods) > 5 else "")
                if pods
                else ""
            )
            yield Finding(
                STORY,
                check,
                "ServiceAccount",
                "" if ns == "*" else ns,
                account,
                severity,
                f"{kind} {bname} grants {who} {grant} {scope}: a shell in any pod running "
                f"as it {power}{used}",
                "bind the account to a Role naming only the verbs and resources it uses "
                "(no '*'), in its own namespace; set automountServiceAccountToken: false "
                "where pods need no API access",
            )
    for what, why in sorted(snap.unreadable.items()):
        if what in ("rolebindings", "clusterrolebindings", "roles", "clusterroles"):
            yield Finding(
                STORY,
                "rbac-unreadable",
                "",
                "",
                what,
                INFO,
                f"could not check which service accounts hold wildcard rights: {why}",
                "run the audit with get/list on rbac.authorization.k8s.io roles, "
                "clusterroles, rolebindings and clusterrolebindings",
            )


CHECKS = (
    check_exposed_services,
    check_pod_security,
    check_runtime_socket,
    check_service_account_rights,
)
