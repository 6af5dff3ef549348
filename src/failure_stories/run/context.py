"""What a scenario's step functions receive: the namespace, the cluster, and helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from failure_stories.core.errors import ProviderError, ScenarioDefinitionError
from failure_stories.host import node_cpu
from failure_stories.providers.capabilities import (
    CgroupReader,
    EgressSnat,
    ImageLoader,
    NodeFailure,
    NodeShell,
    OutsideNetwork,
)
from failure_stories.providers.kube import Kube, render
from failure_stories.run.exposure import Exposure

if TYPE_CHECKING:
    from failure_stories.contract.scenario import Scenario
    from failure_stories.providers.base import Provider

T = TypeVar("T")


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
    # The events started in the current phase (see expose); the runner ends them.
    exposures: list[Exposure] = field(default_factory=list)
    # Copied into the report's info: what a step found that is not a number
    # judged by a threshold (how a measuring window stopped, say).
    info: dict[str, Any] = field(default_factory=dict)
    _pending: dict[str, float] = field(default_factory=dict)
    # Per node, the /proc/stat sample that closed the latest window judged quiet.
    _quiet_end: dict[str, node_cpu.CpuTimes] = field(default_factory=dict)

    # -- manifests --------------------------------------------------------------
    def manifest(self, name: str, **extra: str) -> list[dict[str, Any]]:
        """Render ``manifests/<name>`` with ${NAMESPACE}, ${TOOLBOX_IMAGE}... filled in."""
        text = self.scenario.manifest_path(name).read_text()
        return render(text, {"NAMESPACE": self.namespace, **self.variables, **extra})

    def apply(self, name: str, **extra: str) -> list[dict[str, Any]]:
        objs = self.manifest(name, **extra)
        self.kube.apply(objs, self.namespace)
        return objs

    # -- teardown ---------------------------------------------------------------
    def defer(self, what: str, fn: Callable[[], None]) -> None:
        """Register an undo action; teardown runs them newest first, always."""
        self.cleanups.append(Cleanup(what, fn))

    # -- the provider's abilities, typed (the story names them in `needs`) ------------
    @property
    def node_shell(self) -> NodeShell:
        if not isinstance(self.provider, NodeShell):
            raise self._lacks("node-shell")
        return self.provider

    @property
    def node_failure(self) -> NodeFailure:
        if not isinstance(self.provider, NodeFailure):
            raise self._lacks("node-failure")
        return self.provider

    @property
    def cgroups(self) -> CgroupReader:
        if not isinstance(self.provider, CgroupReader):
            raise self._lacks("cgroup-read")
        return self.provider

    @property
    def outside_network(self) -> OutsideNetwork:
        if not isinstance(self.provider, OutsideNetwork):
            raise self._lacks("outside-network")
        return self.provider

    @property
    def egress_snat(self) -> EgressSnat:
        if not isinstance(self.provider, EgressSnat):
            raise self._lacks("egress-snat")
        return self.provider

    def load_image(self, ref: str) -> None:
        """Make an image that kfs builds on demand (the log shipper...) available to
        the nodes. A provider that cannot load images (a cluster kfs did not build)
        must already have it, as it has the toolbox."""
        if isinstance(self.provider, ImageLoader):
            from failure_stories import images

            self.provider.load_images({ref: images.build_on_demand(ref, log=self.log)})

    def _lacks(self, ability: str) -> ProviderError:
        return ProviderError(
            f"the {self.provider.name} provider lacks {ability}: add it to "
            f"{self.scenario.id}'s needs, so that such a provider is refused up front"
        )

    # -- the event that exposes the latent fault ---------------------------------
    def expose(self) -> Exposure:
        """Start the story's event (steps.expose) now, inside a measuring window.

        Returns once the event has started (a plain ``expose`` function: once it
        is over); ``with ctx.expose(): ...`` ends it when the block exits, else
        the runner ends it when the phase ends. symptom and verify each start it
        exactly once, so that both windows see the same event."""
        fn = self.scenario.expose_step()
        if fn is None:
            raise ScenarioDefinitionError(
                f"{self.scenario.id}: {self.phase} calls ctx.expose() but steps.py "
                "defines no expose function"
            )
        if self.exposures:
            raise ScenarioDefinitionError(
                f"{self.scenario.id}: {self.phase} started its event twice; "
                "call ctx.expose() once per measuring window"
            )
        said = " ".join((self.scenario.meta.event or "steps.expose").split())
        self.log(f"event: {said if len(said) <= 160 else said[:157] + '...'}")
        exposure = Exposure(fn, self, self.started)
        self.exposures.append(exposure)
        return exposure

    def end_exposures(self) -> list[dict[str, float]]:
        """End every event the phase started (the runner calls this at its end)."""
        taken, self.exposures = self.exposures, []
        for exposure in taken:
            exposure.end()
        return [e.window() for e in taken]

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

    def quiet_window(self, node: str, measure: Callable[[], T], continues: bool = False) -> T:
        """Run the measuring window ``measure`` and keep it only if ``node`` had
        the story's ``node.min_idle_cpu`` to spare meanwhile (see node_cpu).

        Records ``node_idle_cpu_ratio``; a window too busy to judge is forgotten
        (its series points and measurements) and measured again, and a node
        that stays busy ends the phase in NodeTooBusyError. A window starts at
        once; only one measured again waits for a quiet probe first. ``continues``:
        this window is the next chunk of the one just kept on ``node``, so it is
        judged from that window's end (the gap between them included)."""
        need = self.scenario.meta.node.min_idle_cpu
        if need <= 0:
            return measure()
        lengths = {name: len(points) for name, points in self.series.items()}
        pending = dict(self._pending)

        def discard() -> None:
            for name in list(self.series):
                if name in lengths:
                    del self.series[name][lengths[name] :]
                else:
                    del self.series[name]
            self._pending = dict(pending)

        shell = self.node_shell

        def sample() -> node_cpu.CpuTimes:
            return node_cpu.parse_proc_stat(shell.node_exec(node, ["cat", "/proc/stat"]))

        since = self._quiet_end.pop(node, None) if continues else None
        self._quiet_end.pop(node, None)
        result, idle = node_cpu.quiet_window(
            sample,
            measure,
            need,
            log=self.log,
            discard=discard,
            since=since,
            kept=lambda end: self._quiet_end.__setitem__(node, end),
        )
        self.measure("node_idle_cpu_ratio", round(idle, 3))
        return result
