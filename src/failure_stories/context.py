"""What a scenario's step functions receive: the namespace, the cluster, and helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from failure_stories.kube import Kube, render

if TYPE_CHECKING:
    from failure_stories.providers.base import Provider
    from failure_stories.scenario import Scenario


@dataclass
class Cleanup:
    what: str
    fn: Callable[[], None]


@dataclass
class RunContext:
    scenario: Scenario
    provider: Provider
    kube: Kube
    namespace: str
    report_dir: Path
    variables: dict[str, str] = field(default_factory=dict)
    # Scratch space the steps share between phases (pod names, baselines...).
    state: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    cleanups: list[Cleanup] = field(default_factory=list)
    log: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    phase: str = "setup"
    _pending: dict[str, float] = field(default_factory=dict)

    # -- manifests --------------------------------------------------------------
    def manifest(self, name: str, **extra: str) -> list[dict[str, Any]]:
        """Render ``manifests/<name>`` with ${NAMESPACE}, ${TOOLBOX_IMAGE}... filled in."""
        text = (self.scenario.manifests / name).read_text()
        return render(text, {"NAMESPACE": self.namespace, **self.variables, **extra})

    def apply(self, name: str, **extra: str) -> list[dict[str, Any]]:
        objs = self.manifest(name, **extra)
        self.kube.apply(objs, self.namespace)
        return objs

    # -- teardown ---------------------------------------------------------------
    def defer(self, what: str, fn: Callable[[], None]) -> None:
        """Register an undo action; teardown runs them newest first, always."""
        self.cleanups.append(Cleanup(what, fn))

    # -- measurements -----------------------------------------------------------
    def measure(self, name: str, value: float) -> None:
        """Report a measurement of the current phase (steps may also return a dict)."""
        self._pending[name] = float(value)

    def take_measurements(self) -> dict[str, float]:
        out, self._pending = self._pending, {}
        return out

    def record(self, series: str, value: float) -> None:
        """Append a point (seconds since the run started, value) to a plotted series."""
        self.series.setdefault(series, []).append(
            [round(time.monotonic() - self.started, 3), float(value)]
        )
