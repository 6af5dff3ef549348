"""`kfs run --jobs N`: several scenarios at once on one cluster, each its own process.

Each scenario runs as ``kfs run ID`` in a child process (its own namespace,
signal handling and teardown, exactly as when run alone); the runner's locks
decide what may overlap: a story that needs the node to itself runs alone,
stories that take over the same node resource (the simulated nodes, the outside
network, timed CPU periods against a miner) run one after the other, the rest
run side by side. Exclusive stories go first, one at a time; then the others,
longest first, N at once.

Ctrl-C or SIGTERM reaches every child (SIGTERM is forwarded), and each one
reverts its fault before the parent writes the reports.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from failure_stories.contract.controls import run_key
from failure_stories.contract.scenario import Scenario
from failure_stories.core.errors import Interrupted
from failure_stories.core.wait import wait_for

Say = Callable[[str, str], None]  # (scenario id, line)
# Bounds every wait on a child; a scenario run is minutes, a held drill hours.
MAX_RUN = 6 * 3600


@dataclass
class Job:
    scenario: Scenario
    argv: list[str]
    control: str | None = None  # a negative control of the story (contract.controls)
    proc: subprocess.Popen[str] | None = None
    started: float = 0.0
    seconds: float = 0.0
    returncode: int | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def order(
    chosen: Sequence[Scenario], nodes_share_cpus: bool = False
) -> tuple[list[Scenario], list[Scenario]]:
    """Exclusive stories (alone, in the given order), then the rest, longest
    first; ``nodes_share_cpus``: the provider's (see NodeUse.exclusive)."""
    alone = [s for s in chosen if s.meta.node.exclusive(nodes_share_cpus)]
    rest = sorted(
        (s for s in chosen if not s.meta.node.exclusive(nodes_share_cpus)),
        key=lambda s: s.meta.physics_seconds,
        reverse=True,
    )
    return alone, rest


def child_argv(
    scenario_id: str, report_dir: Path, extra: Sequence[str], control: str | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "failure_stories.cli.main",
        "run",
        scenario_id,
        "--report-dir",
        str(report_dir),
        *(["--control", control] if control else []),
        *extra,
    ]


class Pool:
    def __init__(self, jobs: int, say: Say) -> None:
        self.jobs = max(1, jobs)
        self.say = say
        self.running: list[Job] = []
        self.done: list[Job] = []
        self.interrupted: str | None = None

    def _start(self, job: Job) -> None:
        job.started = time.monotonic()
        job.proc = subprocess.Popen(
            job.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        proc = job.proc
        key = run_key(job.scenario.id, job.control)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.say(key, line.rstrip("\n"))

        job.reader = threading.Thread(target=pump, daemon=True)
        job.reader.start()
        self.running.append(job)

    def _reap(self) -> None:
        for job in list(self.running):
            assert job.proc is not None
            code = job.proc.poll()
            if code is None:
                continue
            if job.reader is not None:
                job.reader.join(timeout=5)
            job.returncode = code
            job.seconds = time.monotonic() - job.started
            self.running.remove(job)
            self.done.append(job)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.interrupted = signal.Signals(signum).name
        for job in self.running:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.send_signal(signal.SIGTERM)

    def _wait_below(self, limit: int) -> None:
        # A child's end is noticed within 0.2 s; the children do the waiting
        # that matters (for their locks and their stories' physics).
        def below() -> bool:
            self._reap()
            return len(self.running) < limit

        wait_for(below, what=f"fewer than {limit} scenario runs", timeout=MAX_RUN, interval=0.2)

    def run(self, waves: Sequence[tuple[int, Sequence[Job]]]) -> list[Job]:
        """Run each wave with its own width; stop starting jobs once interrupted."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for width, jobs in waves:
                for job in jobs:
                    self._wait_below(width)
                    if self.interrupted:
                        break
                    self._start(job)
                self._wait_below(1)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if self.interrupted:
            raise Interrupted(self.interrupted)
        return self.done


def run_all(
    chosen: Sequence[Scenario],
    report_dir: Path,
    jobs: int,
    extra_argv: Sequence[str],
    say: Say,
    controls: Sequence[str | None] = (None,),
    nodes_share_cpus: bool = False,
) -> list[Job]:
    """Run ``chosen`` as child processes, each once per entry of ``controls``
    (None: the story itself); return the finished jobs (in end order)."""
    alone, rest = order(chosen, nodes_share_cpus)

    def make(stories: Sequence[Scenario]) -> list[Job]:
        return [
            Job(s, child_argv(s.id, report_dir, extra_argv, c), c)
            for s in stories
            for c in controls
        ]

    first, then = make(alone), make(rest)
    return Pool(jobs, say).run([(1, first), (jobs, then)])
