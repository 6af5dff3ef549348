"""The flant-redis-data-loss story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

import re
from collections.abc import Iterator

from failure_stories.audit.model import (
    HIGH,
    LOW,
    MEDIUM,
    Finding,
    Obj,
    Snapshot,
    Workload,
    _argv,
    _configmap_text,
    _get,
    _mounted_configmaps,
    workloads,
)

STORY = "flant-redis-data-loss"
# What its checks look for, as the audit report says it.
LOOKS_FOR = "Redis pods reported ready before replication has caught up"


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
                STORY,
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


CHECKS = (check_redis_readiness,)
