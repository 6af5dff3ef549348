"""kube-failure-stories: published Kubernetes incidents as executable scenarios.

Everything a story's ``steps.py`` uses is importable from here; the rest of the
package is internal and may change. The package is layered, each layer using
only the ones below it (import-linter checks it, see pyproject.toml)::

    cli  testing  tools      entry points: `kfs`, the pytest plugin, prepare/bench
    gameday                  drills, GameDay resources and their worker process
    operator                 the kfs operator: running it, its image, the Redis planner
    run                      runner, RunContext, session, parallel runs, cleanup, events
    audit  reporting         the read-only audit; the report model, JUnit and HTML
    providers                clusters (local, kind, existing), their abilities, the client
    images                   the offline toolbox, pause and log shipper images
    host                     this machine: commands, processes, locks, outside hosts, CPU
    contract                 what a story is: scenario.yaml, thresholds, steps, abilities
    core                     errors, the wait helper, atomic files, the checkout's paths
"""

from __future__ import annotations

from failure_stories.contract.scenario import Threshold
from failure_stories.core import stats
from failure_stories.core.errors import (
    KfsError,
    NodeTooBusyError,
    PermanentError,
    ProviderError,
    RefusedError,
    RunError,
    ScenarioDefinitionError,
    TransientError,
    WaitTimeout,
)
from failure_stories.core.wait import sample, wait_for, watch
from failure_stories.host.netns import OutsideHost
from failure_stories.images import OTELCOL_IMAGE, redis_operator
from failure_stories.providers import snat
from failure_stories.providers.base import REAL_NODE_LABEL, SIMULATED_NODE_LABEL
from failure_stories.providers.kube import pod_ready
from failure_stories.run.context import RunContext

__all__ = [
    "OTELCOL_IMAGE",
    "REAL_NODE_LABEL",
    "SIMULATED_NODE_LABEL",
    "KfsError",
    "NodeTooBusyError",
    "OutsideHost",
    "PermanentError",
    "ProviderError",
    "RefusedError",
    "RunContext",
    "RunError",
    "ScenarioDefinitionError",
    "Threshold",
    "TransientError",
    "WaitTimeout",
    "pod_ready",
    "redis_operator",
    "sample",
    "snat",
    "stats",
    "wait_for",
    "watch",
]
