"""A busy node makes a timing story say "cannot judge", never a false verdict."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from failure_stories.core.errors import NodeTooBusyError
from failure_stories.host import node_cpu
from failure_stories.host.node_cpu import CpuTimes

STAT = """\
cpu  4705 356 584 3699 23 23 0 0 0 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0
intr 114930548 113199788 3 0 5 263 0 4 [...]
"""


def test_proc_stat_counts_iowait_as_idle_and_guest_time_once():
    times = node_cpu.parse_proc_stat(STAT)
    assert times == CpuTimes(idle=3699 + 23, total=4705 + 356 + 584 + 3699 + 23 + 23)


def test_proc_stat_without_a_cpu_line_is_an_error():
    with pytest.raises(ValueError):
        node_cpu.parse_proc_stat("intr 1 2 3\n")


def test_idle_ratio_is_the_idle_share_of_the_span():
    assert node_cpu.idle_ratio(CpuTimes(100, 1000), CpuTimes(400, 1400)) == 0.75
    assert node_cpu.idle_ratio(CpuTimes(100, 1000), CpuTimes(100, 1000)) == 1.0


def _sampler(idle_per_span: list[float], ticks: int = 200) -> Iterator[CpuTimes]:
    idle = total = 0
    yield CpuTimes(idle, total)
    for share in idle_per_span:
        total += ticks
        idle += round(ticks * share)
        yield CpuTimes(idle, total)


def quiet(idle_shares: list[float], need: float = 0.5, **kw: object):
    samples = _sampler(idle_shares)
    windows: list[int] = []
    discarded: list[int] = []
    logged: list[str] = []

    def measure() -> dict[str, float]:
        windows.append(len(windows))
        return {"p95_latency_ms": 30.0}

    result = node_cpu.quiet_window(
        lambda: next(samples),
        measure,
        need,
        log=logged.append,
        discard=lambda: discarded.append(len(windows)),
        probe=0.01,
        **kw,  # type: ignore[arg-type]
    )
    return result, windows, discarded, logged


def test_a_quiet_window_is_kept_with_its_idle_share():
    # One span: the window itself, started at once (no probe on a quiet node).
    (result, idle), windows, discarded, _ = quiet([0.8])
    assert result == {"p95_latency_ms": 30.0}
    assert windows == [0] and discarded == []
    assert idle == pytest.approx(0.8)


def test_the_wait_for_a_quiet_node_is_booked_to_the_noise_guard():
    from failure_stories.core import timing

    timing.LEDGER.reset()
    quiet([0.2, 0.2, 0.9, 0.8])  # a busy window, a busy probe, a quiet one, the window
    booked = timing.LEDGER.snapshot()
    assert booked.get("noise_guard", 0) > 0 and "waits" not in booked


def test_a_busy_window_is_forgotten_and_measured_again():
    (_, idle), windows, discarded, logged = quiet([0.2, 0.9, 0.7])
    assert windows == [0, 1] and discarded == [1]
    assert idle == pytest.approx(0.7)
    assert logged == [
        "node too busy to judge: 20% idle, need 50%; measuring the window again (1/4)"
    ]


def test_a_node_that_stays_busy_is_an_error_with_numbers_not_a_verdict():
    with pytest.raises(NodeTooBusyError) as err:
        quiet([0.12, 0.9, 0.2, 0.9, 0.25, 0.9, 0.3])
    assert str(err.value).startswith("node too busy to judge: 30% idle, need 50% (in 4 measuring")


def _continued(idle_shares: list[float], **kw: object):
    samples = _sampler(idle_shares)
    since = next(samples)  # the sample that closed the previous (kept) chunk
    windows: list[int] = []
    discarded: list[int] = []
    result = node_cpu.quiet_window(
        lambda: next(samples),
        lambda: windows.append(len(windows)),
        0.5,
        log=lambda _m: None,
        discard=lambda: discarded.append(len(windows)),
        probe=0.01,
        since=since,
        **kw,  # type: ignore[arg-type]
    )
    return result[1], windows, discarded


def test_a_chunk_continuing_a_quiet_window_starts_without_a_probe_and_is_still_judged():
    ends: list[CpuTimes] = []
    # One span only, the chunk itself, counted from the previous chunk's end.
    idle, windows, _ = _continued([0.9], kept=ends.append)
    assert windows == [0] and idle == pytest.approx(0.9)
    assert ends == [CpuTimes(180, 200)]  # the next chunk continues from here
    # A busy continued chunk is still thrown away, then measured again after a probe.
    idle, windows, discarded = _continued([0.2, 0.9, 0.8])
    assert windows == [0, 1] and discarded == [1] and idle == pytest.approx(0.8)


def test_a_node_busy_from_the_start_gets_one_look_and_no_second_window():
    samples = _sampler([0.1] * 1000)
    looks: list[str] = []
    with pytest.raises(NodeTooBusyError) as err:
        node_cpu.quiet_window(
            lambda: next(samples), lambda: looks.append("window"), 0.5, probe=0.01, settle=0.3
        )
    assert looks == ["window"]  # thrown away; the probe then never saw a quiet node
    assert str(err.value).startswith("node too busy to judge: 10% idle, need 50% (for 0.3 s")


def test_the_first_look_is_judged_from_its_own_start():
    # Busy before the window (not sampled) and quiet during it: kept, as measured.
    (_, idle), windows, discarded, _ = quiet([0.6])
    assert windows == [0] and discarded == [] and idle == pytest.approx(0.6)
    # A busy first look is thrown away before anything is judged on it.
    (_, idle), windows, discarded, _ = quiet([0.49, 0.9, 0.95])
    assert windows == [0, 1] and discarded == [1] and idle == pytest.approx(0.95)


def test_a_cpu_bound_process_per_cpu_leaves_this_node_too_busy(tmp_path: Path):
    """The real /proc/stat with every CPU spinning (two here): what the e2e story sees."""
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        before = node_cpu.parse_proc_stat(Path("/proc/stat").read_text())
        subprocess.run(["sleep", "1.5"], check=True)
        idle = node_cpu.idle_ratio(before, node_cpu.parse_proc_stat(Path("/proc/stat").read_text()))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert idle < 0.25
