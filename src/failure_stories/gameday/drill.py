"""`kfs gameday`: a guided drill for on-call training.

The story is set up and its fault injected; the trainee gets the page the real
team got (never the root cause), a timer, graded hints on request and `reveal`
when they have a diagnosis (or `kfs gameday reveal <id>` from another terminal).
Then the documented fix is applied and verified, and a debrief follows.

Without a terminal (a script, CI) nothing is prompted: the drill waits for the
reveal file, or for --reveal-after seconds."""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from failure_stories.contract.scenario import Scenario
from failure_stories.core.wait import wait_for
from failure_stories.host.locks import lock_dir
from failure_stories.reporting.model import ScenarioReport
from failure_stories.run.context import RunContext

Say = Callable[[str], None]


def reveal_file(scenario_id: str) -> Path:
    return lock_dir() / f"gameday-{scenario_id}.reveal"


def request_reveal(scenario_id: str) -> Path:
    """What `kfs gameday reveal <id>` does: leave a note the drill is polling for."""
    path = reveal_file(scenario_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(time.time()))
    return path


@dataclass
class Drill:
    scenario: Scenario
    say: Say
    interactive: bool
    reveal_after: float | None = None
    max_wait: float = 3600
    hints_shown: int = 0
    time_to_diagnosis: float = 0.0
    log: list[str] = field(default_factory=list)

    def brief(self) -> None:
        m = self.scenario.meta
        self.say(f"\n=== GAME DAY: {m.company} ({m.year}) ===")
        self.say(m.briefing or m.symptom)
        self.say("The fault is live in the cluster. Investigate with kubectl and the node.")
        if self.interactive:
            self.say("Commands: h = next hint, t = time so far, reveal = I have a diagnosis.")
        else:
            how = (
                f"in {self.reveal_after:g}s"
                if self.reveal_after is not None
                else "when `kfs gameday reveal " + m.id + "` is run"
            )
            self.say(f"No terminal: the fault is held and revealed {how}.")

    def hint(self) -> None:
        hints = self.scenario.meta.hints
        if self.hints_shown < len(hints):
            self.say(f"Hint {self.hints_shown + 1}/{len(hints)}: {hints[self.hints_shown]}")
            self.hints_shown += 1
        else:
            self.say("No more hints. Type reveal when you are ready.")

    def hold(self, ctx: RunContext) -> None:
        """The runner's hold_fault hook: returns when the trainee reveals."""
        reveal_file(self.scenario.id).unlink(missing_ok=True)
        self.brief()
        start = time.monotonic()

        def revealed() -> bool:
            if reveal_file(self.scenario.id).exists():
                return True
            if self.reveal_after is not None and time.monotonic() - start >= self.reveal_after:
                return True
            if self.interactive and select.select([sys.stdin], [], [], 0)[0]:
                line = sys.stdin.readline()
                if not line:  # stdin closed: fall back to the reveal file
                    self.interactive = False
                    return False
                cmd = line.strip().lower()
                self.log.append(cmd)
                if cmd == "reveal":
                    return True
                if cmd in ("h", "hint"):
                    self.hint()
                elif cmd in ("t", "time"):
                    self.say(f"{time.monotonic() - start:.0f}s since the page.")
                elif cmd:
                    self.say("h = hint, t = time, reveal = I have a diagnosis")
            return False

        wait_for(
            revealed, what="the trainee's reveal", timeout=self.max_wait, interval=0.2, retry_on=()
        )
        self.time_to_diagnosis = time.monotonic() - start
        reveal_file(self.scenario.id).unlink(missing_ok=True)
        ctx.log(f"revealed after {self.time_to_diagnosis:.0f}s with {self.hints_shown} hints")
        self.say("\nApplying the documented mitigation and verifying it...")

    def debrief(self, report: ScenarioReport) -> None:
        m = self.scenario.meta
        self.say(f"\n=== DEBRIEF: {m.title} ===")
        self.say(f"Verdict: {report.verdict}")
        self.say(
            f"Time to diagnosis: {self.time_to_diagnosis:.0f}s "
            f"({self.hints_shown} of {len(m.hints)} hints)"
        )
        self.say(f"\nWhat happened: {m.story}")
        if m.root_cause:
            self.say(f"Root cause: {m.root_cause}")
        self.say(f"Fix: {m.mitigation}")
        symptom, verify = report.phase("symptom"), report.phase("verify")
        self.say("\nMeasurements (with the fault -> with the fix):")
        for name in m.measured:
            before = symptom.measurements.get(name) if symptom else None
            after = verify.measurements.get(name) if verify else None
            if before or after:
                b = f"{before.value:g}" if before else "-"
                a = f"{after.value:g}" if after else "-"
                self.say(f"  {name}: {b} -> {a}")
        if m.takeaways:
            self.say("\nTakeaways:")
            for t in m.takeaways:
                self.say(f"  - {t}")
        self.say(f"\nSource: {m.source}")
