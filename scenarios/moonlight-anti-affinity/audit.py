"""The moonlight-anti-affinity story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

from collections.abc import Iterator

from failure_stories.audit.model import (
    HOSTNAME_KEY,
    INFO,
    MEDIUM,
    Finding,
    Snapshot,
    Workload,
    _get,
    _pod_ready,
    _pods_of,
    selector_matches,
    workloads,
)

STORY = "moonlight-anti-affinity"
# What its checks look for, as the audit report says it.
LOOKS_FOR = "replicas that one node failure can take down together"


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
                STORY,
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
                STORY,
                "replicas-on-one-node",
                INFO,
                f"all {len(ready)} ready pods run on node {nodes.pop()} right now",
                "spread the pods (see no-anti-affinity) and reschedule them, e.g. "
                "kubectl rollout restart, once the rule is in place",
            )


CHECKS = (check_anti_affinity,)
