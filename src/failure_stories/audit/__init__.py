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

Each story's checks live in its own folder, ``scenarios/<id>/audit.py`` (a
``CHECKS`` tuple, its ``STORY`` id and what it ``LOOKS_FOR``), found the way the
runner finds ``steps.py``; `model` holds what they share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

from failure_stories.audit.model import (
    _RANK,
    HIGH,
    HOSTNAME_KEY,
    INFO,
    LATENCY_CRITICAL,
    LOW,
    MEDIUM,
    SEVERITIES,
    Finding,
    Snapshot,
    collect,
    cpu_cores,
    has_high,
)
from failure_stories.contract import scenario as scenarios

Check = Callable[[Snapshot], Iterator[Finding]]


def _story_modules() -> list[ModuleType]:
    """Each story's audit module, in the stories' order (one discovery)."""
    return [mod for s in scenarios.discover().values() if (mod := s.audit()) is not None]


def stories() -> dict[str, str]:
    """Story id -> what its checks look for, in report order (the stories' order)."""
    return {mod.STORY: mod.LOOKS_FOR for mod in _story_modules()}


def checks() -> list[Check]:
    return [check for mod in _story_modules() for check in mod.CHECKS]


def audit(snap: Snapshot) -> list[Finding]:
    """Every finding, by story (in the stories' order), then severity, then object."""
    mods = _story_modules()
    story_order = {mod.STORY: i for i, mod in enumerate(mods)}
    found = [f for mod in mods for check in mod.CHECKS for f in check(snap)]
    return sorted(found, key=lambda f: (story_order[f.story], _RANK[f.severity], f.object, f.check))


__all__ = [
    "HIGH",
    "HOSTNAME_KEY",
    "INFO",
    "LATENCY_CRITICAL",
    "LOW",
    "MEDIUM",
    "SEVERITIES",
    "Check",
    "Finding",
    "Snapshot",
    "audit",
    "checks",
    "collect",
    "cpu_cores",
    "has_high",
    "stories",
]
