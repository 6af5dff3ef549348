"""One GameDay run as its own process: ``python -m failure_stories.gameday.worker SPEC``.

The operator starts it (see :class:`failure_stories.gameday.resource.Worker`)
and follows the JSON lines it appends to its event log. It runs the scenario
with the same Runner as `kfs run`; in ``drill`` mode the runner's hold_fault
hook keeps the fault live until the GameDay says ``spec.reveal: true``, its
deadline passes, or it is deleted. SIGTERM reverts the fault through the
runner's teardown, in every phase.

The provider is the operator's (WorkerSpec.provider): the embedded cluster on
this host, or any cluster reached by kubeconfig, whose nodes the run reaches
through the node agent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import Interrupted
from failure_stories.core.wait import wait_for
from failure_stories.gameday.resource import (
    GAMEDAY_LABEL,
    GROUP,
    MAX_HOLD_SECONDS,
    PLURAL,
    VERSION,
    WorkerSpec,
)
from failure_stories.reporting.model import report_path
from failure_stories.run import events
from failure_stories.run.context import RunContext
from failure_stories.run.events import Event, EventKind
from failure_stories.run.runner import Runner


class EventLog:
    """Appends one JSON object per line (the schema in failure_stories.run.events);
    each line is flushed whole."""

    def __init__(self, path: Path, scenario: str) -> None:
        self.path = path
        self.scenario = scenario

    def write(self, kind: EventKind, **fields: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(events.line(kind, self.scenario, **fields)) + "\n")

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.PHASE_END and event.result is None:
            return
        self.write(event.kind, **event.fields())


class RevealWatch:
    """The drill's hold: returns when the GameDay is revealed or its deadline passes."""

    def __init__(self, spec: WorkerSpec, api: client.CustomObjectsApi, events: EventLog) -> None:
        self.spec = spec
        self.api = api
        self.events = events

    def _revealed(self, started: float) -> str | None:
        try:
            obj = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.spec.gameday_namespace, PLURAL, self.spec.gameday_name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise Interrupted("the GameDay was deleted") from None
            raise
        meta = obj.get("metadata", {})
        if meta.get("uid") != self.spec.uid or meta.get("deletionTimestamp"):
            raise Interrupted("the GameDay was deleted")
        if (obj.get("spec") or {}).get("reveal"):
            return "spec.reveal"
        after = self.spec.reveal_after
        if after is not None and time.monotonic() - started >= after:
            return "deadline"
        return None

    def __call__(self, ctx: RunContext) -> None:
        meta = ctx.scenario.meta
        self.events.write(
            EventKind.HOLD,
            briefing=" ".join((meta.briefing or meta.symptom).split())[:400],
            deadline_seconds=self.spec.reveal_after,
        )
        started = time.monotonic()
        by = wait_for(
            lambda: self._revealed(started),
            what="spec.reveal or the drill's deadline",
            timeout=MAX_HOLD_SECONDS,
            interval=1,
        )
        self.events.write(EventKind.REVEALED, by=by, held_seconds=time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m failure_stories.gameday.worker WORKER_SPEC.json", file=sys.stderr)
        return 2
    spec = WorkerSpec(**json.loads(Path(args[0]).read_text()))
    events = EventLog(Path(spec.events), spec.scenario)
    provider = spec.make_provider()
    scenario = scenarios.get(spec.scenario)
    hold = None
    if spec.mode == "drill":
        hold = RevealWatch(spec, client.CustomObjectsApi(provider.kube().api), events)
    report_dir = Path(spec.report_dir)
    runner = Runner(
        provider,
        report_dir,
        events,
        hold_fault=hold,
        namespace=spec.namespace,
        namespace_labels={GAMEDAY_LABEL: spec.uid},
    )
    report = str(report_path(report_dir, scenario.id))
    try:
        rep = runner.run(scenario)
    except Interrupted as exc:
        events.write(EventKind.DONE, verdict="error", error=f"reverted: {exc}", report=report)
        return 1
    events.write(EventKind.DONE, verdict=rep.verdict, error=rep.error, report=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
