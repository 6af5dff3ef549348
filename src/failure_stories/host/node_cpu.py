"""Is the node quiet enough for a timing measurement to mean anything?

Latency and CFS-throttling numbers taken while compilers or CI neighbours keep a
node's CPUs busy describe the neighbours, not the fault or the fix. A story whose
numbers depend on spare CPU declares `node: {min_idle_cpu: ...}` in its scenario.yaml and
measures through `quiet_window`: the node's idle share is read from /proc/stat
around every measuring window and recorded; a window on a node too busy to judge
is measured again, and if the node stays busy the phase ends in a
NodeTooBusyError, so the verdict is `error` with the reason, never a false
`not-fixed` or `not-reproduced`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from failure_stories.core import timing
from failure_stories.core.errors import NodeTooBusyError, WaitTimeout
from failure_stories.core.wait import wait_for

T = TypeVar("T")

# How long a quiet node is waited for before a window starts, and how often it
# is sampled meanwhile; a sample spans at least MIN_TICKS clock ticks (all CPUs).
SETTLE_SECONDS = 60.0
PROBE_SECONDS = 2.0
# Windows measured before a busy node is an error. A timing story that runs
# beside others sees their bursts come and go (a dataset loaded, a log flood):
# on kind, Buffer beside Flant and PrometheusKube threw away two windows (6% and
# 34% idle) and kept the next ones. A node that stays busy still ends in error,
# and no busy window is ever judged.
ATTEMPTS = 4
MIN_TICKS = 100
ADVICE = "run it again when other work on the node has finished"


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in clock ticks."""

    idle: int  # idle + iowait: time no task wanted the CPU
    total: int


def parse_proc_stat(text: str) -> CpuTimes:
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(x) for x in fields[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice]: the
            # guest times are already inside user and nice, so they are not added.
            counted = ticks[:8]
            return CpuTimes(idle=counted[3] + counted[4], total=sum(counted))
    raise ValueError("no aggregate cpu line in /proc/stat")


def idle_ratio(before: CpuTimes, after: CpuTimes) -> float:
    total = after.total - before.total
    return (after.idle - before.idle) / total if total > 0 else 1.0


def too_busy(idle: float, need: float) -> str:
    return f"node too busy to judge: {idle:.0%} idle, need {need:.0%}"


def quiet_window(
    sample: Callable[[], CpuTimes],
    measure: Callable[[], T],
    need: float,
    *,
    attempts: int = ATTEMPTS,
    log: Callable[[str], None] = print,
    discard: Callable[[], None] = lambda: None,
    settle: float = SETTLE_SECONDS,
    probe: float = PROBE_SECONDS,
    since: CpuTimes | None = None,
    kept: Callable[[CpuTimes], None] = lambda _times: None,
) -> tuple[T, float]:
    """Run ``measure`` while the node has at least ``need`` of its CPU idle.

    The first attempt starts at once and is judged by the idle share over its
    own span: on a quiet node, the usual case, it is kept and no probe was paid.
    A window that was too busy is thrown away (``discard`` forgets what it
    recorded) and measured again, ``attempts`` times in all; each later attempt
    first waits up to ``settle`` seconds for a sample of about ``probe`` seconds
    to show enough idle CPU. Returns the window's result and its idle share.

    ``since`` is the sample that closed a window judged quiet just before (see
    ``kept``, called with the closing sample of a kept window): a window that
    continues it has its span and idle share counted from that sample, so the
    gap between chunks of one long window escapes no judgement."""
    idle = 0.0
    prev = [since if since is not None else sample()]
    last: list[float] = []  # the idle share of the latest probe

    def quiet() -> bool:
        now = sample()
        if now.total - prev[0].total < MIN_TICKS:
            return False  # too short a span to tell; the next call will
        last[:] = [idle_ratio(prev[0], now)]
        prev[0] = now
        return last[0] >= need

    for attempt in range(1, attempts + 1):
        last.clear()
        if attempt > 1:
            try:
                with timing.span(timing.NOISE_GUARD, opaque=True):
                    wait_for(quiet, what="a quiet node", timeout=settle, interval=probe)
            except WaitTimeout:
                raise NodeTooBusyError(
                    too_busy(last[0] if last else 0.0, need)
                    + f" (for {settle:g} s before measuring); {ADVICE}"
                ) from None
        result = measure()
        after = sample()
        idle = idle_ratio(prev[0], after)
        prev[0] = after
        if idle >= need:
            kept(after)
            return result, idle
        discard()
        if attempt < attempts:
            log(f"{too_busy(idle, need)}; measuring the window again ({attempt}/{attempts})")
    raise NodeTooBusyError(too_busy(idle, need) + f" (in {attempts} measuring windows); {ADVICE}")
