"""GameDay custom resources: scenario runs owned by an object in the cluster.

The kopf handlers (``operator/gameday.py``) stay thin; what they decide lives
here, typed and unit-tested:

* :class:`GameDaySpec` - the validated spec (one-line errors for bad input);
* :func:`next_run` - the cron schedule;
* :class:`Worker` - one run as its own process (``failure_stories.gameday.worker``)
  started in a new session, so an operator crash does not end a game day; its
  supervisor record and event log survive the operator, so a restarted
  operator re-attaches to it, and reverts what it left if it died too;
* :func:`fold` - turns the worker's events into ``status`` and Kubernetes Events;
* :class:`Metrics` - the Prometheus metrics the operator serves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from croniter import croniter
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from failure_stories.contract import scenario as scenarios
from failure_stories.core import atomic
from failure_stories.core.errors import DefinitionError
from failure_stories.host.processes import Supervisor
from failure_stories.run.events import EventKind

if TYPE_CHECKING:
    from failure_stories.providers.base import Provider

GROUP, VERSION, PLURAL, KIND = "kfs.dev", "v1alpha1", "gamedays", "GameDay"
# On a run's namespace: the uid of the GameDay that owns it.
GAMEDAY_LABEL = "kfs.dev/gameday"
MODES = ("verify", "drill")
# A drill without a deadline still ends: nobody holds a page for a whole day.
MAX_HOLD_SECONDS = 4 * 3600
# Teardown reverts the fault; some stories need a minute for it.
WORKER_STOP_SECONDS = 300


@dataclass(frozen=True)
class GameDaySpec:
    scenario: str
    mode: str = "verify"
    reveal: bool = False
    reveal_after: float | None = None
    schedule: str | None = None
    target_namespace: str | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> GameDaySpec:
        """Validate ``spec``; a DefinitionError says what to change."""
        scenario_id = spec.get("scenario")
        if not isinstance(scenario_id, str) or not scenario_id:
            raise DefinitionError("spec.scenario is required: a scenario id from `kfs list`")
        scenarios.get(scenario_id)  # UnknownScenarioError names the closest ids
        mode = spec.get("mode") or "verify"
        if mode not in MODES:
            raise DefinitionError(f"spec.mode must be one of {', '.join(MODES)}, not {mode!r}")
        schedule = spec.get("schedule") or None
        if schedule is not None and not croniter.is_valid(schedule):
            raise DefinitionError(
                f"spec.schedule {schedule!r} is not a cron expression (e.g. '0 9 * * 1')"
            )
        target = spec.get("targetNamespace") or None
        if target is not None and not re.fullmatch(r"kfs-[a-z0-9]([-a-z0-9]*[a-z0-9])?", target):
            raise DefinitionError(
                f"spec.targetNamespace {target!r} must be a namespace name starting with kfs- "
                "(the stories' deliberately vulnerable workloads run nowhere else)"
            )
        after = spec.get("revealAfterSeconds")
        if after is not None and (not isinstance(after, int | float) or after <= 0):
            raise DefinitionError("spec.revealAfterSeconds must be a positive number of seconds")
        return cls(
            scenario=scenario_id,
            mode=mode,
            reveal=bool(spec.get("reveal", False)),
            reveal_after=float(after) if after is not None else None,
            schedule=schedule,
            target_namespace=target,
        )


def next_run(schedule: str, after: dt.datetime) -> dt.datetime:
    """The first cron tick strictly after ``after`` (UTC)."""
    tick: dt.datetime = croniter(schedule, after).get_next(dt.datetime)
    return tick


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class WorkerSpec:
    """What one worker process runs; written as JSON next to its event log."""

    gameday_namespace: str
    gameday_name: str
    uid: str
    attempt: int
    scenario: str
    mode: str
    reveal_after: float | None
    namespace: str | None
    report_dir: str
    events: str
    # The cluster the run changes: the operator's own (see cluster_of_operator).
    provider: str = "local"
    kubeconfig: str | None = None
    context: str | None = None

    def make_provider(self) -> Provider:
        return provider_for(self.provider, self.kubeconfig, self.context)


# What a GameDay worker uses, from the operator's environment: the local
# provider's host (`kfs operator install` there), a cluster reached by kubeconfig
# (`KFS_GAMEDAY_PROVIDER=existing`, `KUBECONFIG`, `KFS_GAMEDAY_CONTEXT`), or, for
# the operator's Deployment, its own cluster with its own ServiceAccount
# (`in-cluster`, run as existing). Any cluster, kind's included, is changed through
# the node agent. Installing the operator for a cluster is what allows its GameDays
# to change that cluster.
GAMEDAY_PROVIDERS = ("local", "existing")
IN_CLUSTER = "in-cluster"


def operator_provider_name() -> str:
    return os.environ.get("KFS_GAMEDAY_PROVIDER", "local")


def cluster_of_operator(state_dir: Path) -> tuple[str, str | None, str | None]:
    """(provider, kubeconfig, context) of the cluster GameDays change; in-cluster
    writes the pod's own kubeconfig under ``state_dir``."""
    name = operator_provider_name()
    if name == IN_CLUSTER:
        from failure_stories.providers import kubeconfig

        path = kubeconfig.write_in_cluster(state_dir / "in-cluster.kubeconfig")
        return "existing", str(path), kubeconfig.IN_CLUSTER_CONTEXT
    return name, os.environ.get("KUBECONFIG"), os.environ.get("KFS_GAMEDAY_CONTEXT") or None


def provider_for(name: str, kubeconfig: str | None, context: str | None) -> Provider:
    if name == "local":
        from failure_stories.providers.local import LocalProvider

        return LocalProvider()
    if name == "existing":
        from failure_stories.providers.existing import ExistingProvider

        provider = ExistingProvider(context=context, kubeconfig=kubeconfig)
        provider.allow = provider.context
        return provider
    raise DefinitionError(
        f"GameDays run on the {' or '.join(GAMEDAY_PROVIDERS)} provider, not {name!r}: "
        "set KFS_GAMEDAY_PROVIDER (a kind cluster is reached as existing, through the "
        "node agent)"
    )


class Worker:
    """One run of a GameDay (``attempt``), as a supervised process of its own."""

    def __init__(self, state_dir: Path, uid: str, attempt: int) -> None:
        self.state_dir = state_dir
        self.sup = Supervisor(state_dir)
        self.uid = uid
        self.attempt = attempt
        self.name = f"gameday-{uid}-{attempt}"
        self.dir = state_dir / "gamedays" / uid / f"attempt-{attempt}"

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def spec_path(self) -> Path:
        return self.dir / "worker.json"

    def start(self, gameday_namespace: str, gameday_name: str, spec: GameDaySpec) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.events_path.unlink(missing_ok=True)
        ws = WorkerSpec(
            gameday_namespace=gameday_namespace,
            gameday_name=gameday_name,
            uid=self.uid,
            attempt=self.attempt,
            scenario=spec.scenario,
            mode=spec.mode,
            reveal_after=spec.reveal_after,
            namespace=spec.target_namespace,
            report_dir=str(self.dir / "report"),
            events=str(self.events_path),
        )
        ws.provider, ws.kubeconfig, ws.context = cluster_of_operator(self.state_dir)
        atomic.write_text(self.spec_path, json.dumps(asdict(ws), indent=2))
        argv = [sys.executable, "-m", "failure_stories.gameday.worker", str(self.spec_path)]
        self.sup.start(self.name, argv)

    def known(self) -> bool:
        return self.sup.record(self.name) is not None

    def alive(self) -> bool:
        return self.sup.alive(self.name)

    def stop(self, timeout: float = WORKER_STOP_SECONDS) -> None:
        """SIGTERM: the runner reverts the fault and deletes what it created."""
        self.sup.stop(self.name, timeout=timeout)

    def forget(self) -> None:
        self.sup.stop(self.name, timeout=1)

    def log_tail(self, lines: int = 5) -> str:
        return self.sup.tail(self.name, lines)


class EventTail:
    """Reads the JSON lines a worker appends, each once; a half-written line waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0  # events read so far
        self.quiet = 0  # the first events, already announced by an earlier reader

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """New events with their 1-based position in the log."""
        for event in self.read():
            self.count += 1
            yield self.count, event


@dataclass
class Notice:
    """A Kubernetes Event the operator posts on the GameDay."""

    reason: str
    message: str
    warning: bool = False


@dataclass
class Folded:
    status: dict[str, Any] = field(default_factory=dict)
    notices: list[Notice] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    verdict: str | None = None


def _measurements(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: v["value"] for k, v in (result.get("measurements") or {}).items()}


def fold(event: Mapping[str, Any], current: Mapping[str, Any]) -> Folded:
    """What one worker event changes in ``status`` (a merge patch) and says aloud."""
    out = Folded()
    kind = event.get("kind")
    scenario = event.get("scenario", "")
    if kind == EventKind.PREPARED:
        out.status = {"namespace": event["namespace"], "message": "namespace created"}
        out.notices.append(Notice("Started", f"{scenario}: running in {event['namespace']}"))
    elif kind == EventKind.PHASE_START:
        out.status = {"phase": event["phase"], "message": f"{event['phase']} running"}
    elif kind == EventKind.PHASE_END:
        result = event["result"]
        phase = result["name"]
        values = _measurements(result)
        measured = dict(current.get("measurements") or {})
        if values:
            measured[phase] = values
        phases = [p for p in current.get("phases") or [] if p.get("name") != phase]
        entry = {"name": phase, "ok": result["ok"], "seconds": round(result["seconds"], 2)}
        if not result["ok"] and result.get("error"):
            # The report may live where the reader cannot look (the operator's pod).
            entry["error"] = str(result["error"])[:300]
        phases.append(entry)
        out.status = {"phases": phases, "measurements": measured}
        out.phase_seconds[phase] = float(result["seconds"])
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items())
        if result["ok"]:
            out.notices.append(Notice("PhaseDone", f"{phase} ok ({shown or 'no measurements'})"))
        else:
            why = result.get("error") or f"checks failed ({shown})"
            out.notices.append(Notice("PhaseFailed", f"{phase}: {why}", warning=True))
    elif kind == EventKind.HOLD:
        deadline = event.get("deadline_seconds")
        how = "set spec.reveal: true to end it" + (f", or wait {deadline:g}s" if deadline else "")
        out.status = {"state": "Holding", "message": f"fault held for the drill; {how}"}
        out.notices.append(Notice("Holding", f"{event.get('briefing', '')} ({how})".strip()))
    elif kind == EventKind.REVEALED:
        out.status = {
            "state": "Running",
            "heldSeconds": round(event["held_seconds"], 1),
            "message": f"revealed ({event['by']}); mitigating",
        }
        out.notices.append(
            Notice("Revealed", f"by {event['by']} after {event['held_seconds']:.0f}s of fault")
        )
    elif kind == EventKind.LOG:
        out.status = {"message": str(event.get("message", ""))[:300]}
    elif kind == EventKind.DONE:
        verdict = event.get("verdict") or "error"
        out.verdict = verdict
        message = event.get("error") or f"verdict {verdict}"
        out.status = {
            "state": "Finished",
            "phase": "",
            "verdict": verdict,
            "message": message,
            "report": event.get("report"),
            "finishedAt": now_iso(),
        }
        out.notices.append(
            Notice("Finished", f"{scenario}: {message}", warning=verdict != "passed")
        )
    return out


class Metrics:
    """What the operator exposes for Prometheus (one registry per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.runs = Counter(
            "kfs_gameday_runs",
            "GameDay runs started",
            ["scenario", "mode"],
            registry=self.registry,
        )
        self.verdicts = Counter(
            "kfs_gameday_verdicts",
            "GameDay runs finished, by verdict",
            ["scenario", "verdict"],
            registry=self.registry,
        )
        self.phase_seconds = Histogram(
            "kfs_gameday_phase_seconds",
            "Duration of each phase of GameDay runs",
            ["scenario", "phase"],
            buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320, 640),
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "kfs_gameday_runs_in_progress",
            "GameDay runs in progress",
            ["scenario"],
            registry=self.registry,
        )

    def observe(self, scenario: str, folded: Folded) -> None:
        for phase, seconds in folded.phase_seconds.items():
            self.phase_seconds.labels(scenario, phase).observe(seconds)
        if folded.verdict is not None:
            self.verdicts.labels(scenario, folded.verdict).inc()
