"""What a run says while it runs: one schema for the runner, the GameDay worker's
event log and the operator's status.

The runner emits `Event`s to its listener (the CLI's live output, a GameDay
worker); a worker writes each one as a JSON line, adding the events of a drill,
and the operator folds those lines into the GameDay's status. Every line is
``{"t": <unix time>, "kind": <EventKind>, "scenario": <id>, ...}`` plus:

    kind          emitted by        fields
    prepared      runner            namespace
    phase-start   runner            phase
    phase-end     runner            phase, result (a PhaseResult's JSON)
    log           runner            message
    hold          GameDay worker    briefing, deadline_seconds (the drill holds the fault)
    revealed      GameDay worker    by, held_seconds
    done          GameDay worker    verdict, error, report
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from failure_stories.reporting.model import PhaseResult


class EventKind(enum.StrEnum):
    PREPARED = "prepared"
    PHASE_START = "phase-start"
    PHASE_END = "phase-end"
    LOG = "log"
    HOLD = "hold"
    REVEALED = "revealed"
    DONE = "done"


# The kinds the runner itself emits; the others are a GameDay worker's.
RUNNER_KINDS = (EventKind.PREPARED, EventKind.PHASE_START, EventKind.PHASE_END, EventKind.LOG)


@dataclass(frozen=True)
class Event:
    kind: EventKind
    scenario: str
    phase: str = ""
    message: str = ""  # the namespace for PREPARED, the text for LOG
    result: PhaseResult | None = None

    def fields(self) -> dict[str, Any]:
        """The kind-specific fields of this event's JSON line (see the table above)."""
        if self.kind is EventKind.PREPARED:
            return {"namespace": self.message}
        if self.kind is EventKind.PHASE_START:
            return {"phase": self.phase}
        if self.kind is EventKind.PHASE_END:
            return {"phase": self.phase, "result": self.result.to_json() if self.result else None}
        if self.kind is EventKind.LOG:
            return {"message": self.message}
        raise ValueError(f"{self.kind} is not an event the runner emits")


def line(kind: EventKind, scenario: str, **fields: Any) -> dict[str, Any]:
    """One event-log line of ``kind``."""
    return {"t": time.time(), "kind": str(kind), "scenario": scenario, **fields}
