"""`kfs run --jobs`: what may overlap, in which order, and how an interrupt spreads."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import Interrupted, WaitTimeout
from failure_stories.host import locks
from failure_stories.run.parallel import Job, Pool, order


def _alone(story: scenarios.Scenario) -> scenarios.Scenario:
    """``story`` as if its scenario.yaml said ``node: {alone: true}``."""
    node = story.meta.node.model_copy(update={"alone": True})
    return dataclasses.replace(story, meta=story.meta.model_copy(update={"node": node}))


def test_no_story_needs_the_node_alone_and_the_longest_go_first() -> None:
    found = scenarios.discover()
    alone, rest = order(list(found.values()))
    assert alone == []  # Buffer shares the node: its idle guard judges each window
    physics = [s.meta.physics_seconds for s in rest]
    assert physics == sorted(physics, reverse=True)
    assert len(rest) == len(found)


def test_where_nodes_share_the_hosts_cpus_the_idle_judged_story_goes_first_alone() -> None:
    # On kind every node is a container on the same CPUs: Buffer's windows saw
    # 7-44% idle there beside Flant and PrometheusKube, below its 50%.
    found = scenarios.discover()
    alone, rest = order(list(found.values()), nodes_share_cpus=True)
    assert [s.id for s in alone] == ["buffer-cpu-throttling"]
    assert found["buffer-cpu-throttling"].meta.node.min_idle_cpu == 0.5
    assert all(s.meta.node.min_idle_cpu == 0 for s in rest)
    assert len(rest) == len(found) - 1


def test_a_story_that_needs_the_node_alone_goes_first() -> None:
    found = dict(scenarios.discover())
    found["moonlight-anti-affinity"] = _alone(found["moonlight-anti-affinity"])
    alone, rest = order(list(found.values()))
    assert [s.id for s in alone] == ["moonlight-anti-affinity"]
    assert len(alone) + len(rest) == len(found)


def test_the_timed_cpu_story_and_the_miner_take_turns() -> None:
    found = scenarios.discover()
    users = sorted(s.id for s in found.values() if "cpu-bursts" in s.meta.node.locks)
    assert users == ["buffer-cpu-throttling", "jwplayer-exposed-dashboard"]


def test_stories_that_share_a_node_resource_name_it() -> None:
    found = scenarios.discover()
    users = {
        name: sorted(s.id for s in found.values() if name in s.meta.node.locks)
        for name in ("simulated-nodes", "outside-network")
    }
    assert users["outside-network"] == ["jwplayer-exposed-dashboard", "mindtickle-external-snat"]
    assert users["simulated-nodes"] == ["moonlight-anti-affinity"]


def test_shared_node_lock_admits_many_and_exclusive_waits_for_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path))
    with (
        locks.held("node", "x", shared=True),
        locks.held("node", "y", shared=True),
        pytest.raises(WaitTimeout, match="the shared holders to finish"),
        locks.held("node", "the shared holders to finish", timeout=1.5),
    ):
        pass
    with locks.held("node", "now free", timeout=1.5):
        pass


def _child(log: Path, name: str, seconds: float) -> list[str]:
    code = (
        "import json, sys, time\n"
        f"log = open({str(log)!r}, 'a')\n"
        "t0 = time.time()\n"
        f"print('hello from {name}', flush=True)\n"
        f"time.sleep({seconds})\n"
        f"log.write(json.dumps([{name!r}, t0, time.time()]) + '\\n')\n"
    )
    return [sys.executable, "-c", code]


def _max_overlap(log: Path) -> int:
    spans = [json.loads(line)[1:] for line in log.read_text().splitlines()]
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


def test_pool_keeps_each_wave_within_its_width(tmp_path: Path, make_scenario: object) -> None:
    log = tmp_path / "spans.jsonl"
    lines: list[tuple[str, str]] = []
    story = scenarios.discover()["moonlight-anti-affinity"]
    alone = [Job(story, _child(log, f"a{i}", 0.3)) for i in range(2)]
    rest = [Job(story, _child(log, f"r{i}", 0.6)) for i in range(4)]
    done = Pool(2, lambda sid, line: lines.append((sid, line))).run([(1, alone), (2, rest)])
    assert len(done) == 6 and all(j.returncode == 0 for j in done)
    spans = {json.loads(x)[0]: json.loads(x)[1:] for x in log.read_text().splitlines()}
    # The lone wave ran one at a time and ended before the next wave began.
    assert spans["a0"][1] <= spans["a1"][0]
    assert max(spans["a0"][1], spans["a1"][1]) <= min(spans[f"r{i}"][0] for i in range(4))
    assert _max_overlap(log) == 2
    assert sorted(line for _, line in lines) == sorted(
        [f"hello from a{i}" for i in range(2)] + [f"hello from r{i}" for i in range(4)]
    )


def test_an_interrupt_reaches_every_child_and_no_new_one_starts(tmp_path: Path) -> None:
    story = scenarios.discover()["moonlight-anti-affinity"]
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    print('reverting', flush=True); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('started', flush=True)\n"
        "time.sleep(30)\n"
    )
    jobs = [Job(story, [sys.executable, "-c", code]) for _ in range(3)]
    lines: list[str] = []
    pool = Pool(2, lambda _sid, line: lines.append(line))
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    with pytest.raises(Interrupted):
        pool.run([(2, jobs)])
    assert [j.returncode for j in pool.done] == [3, 3]  # both reverted, the third never ran
    assert lines.count("reverting") == 2
    assert jobs[2].proc is None


def test_stale_run_locks_are_swept_and_live_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFS_LOCK_DIR", str(tmp_path))
    (tmp_path / "run-kfs-dead-abc123.lock").touch()  # its process was SIGKILLed
    (tmp_path / "run-kfs-other-def456.lock").touch()
    with locks.held("run-kfs-live-xyz789", "the live run"):
        assert locks.sweep_run_locks({"kfs-dead-abc123", "kfs-live-xyz789"}) == ["kfs-dead-abc123"]
        assert locks.sweep_run_locks() == ["kfs-other-def456"]
        assert [p.name for p in tmp_path.iterdir()] == ["run-kfs-live-xyz789.lock"]


def test_each_control_is_a_child_run_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """`kfs run --all --control no-fault --control no-fix --jobs N`: one child per
    story and control, an exclusive story's runs first and alone."""
    from failure_stories.run import parallel

    waves: list[tuple[int, list[Job]]] = []
    monkeypatch.setattr(Pool, "run", lambda self, w: waves.extend(w) or [])
    found = list(scenarios.discover().values())
    found = [_alone(s) if s.id == "buffer-cpu-throttling" else s for s in found]
    parallel.run_all(found, Path("/r"), 3, ["--provider", "local"], print, ("no-fault", "no-fix"))
    (width_alone, alone), (width_rest, rest) = waves
    assert (width_alone, width_rest) == (1, 3)
    assert [(j.scenario.id, j.control) for j in alone] == [
        ("buffer-cpu-throttling", "no-fault"),
        ("buffer-cpu-throttling", "no-fix"),
    ]
    assert len(rest) == 2 * (len(found) - 1)
    argv = alone[1].argv
    assert argv[argv.index("--control") + 1] == "no-fix"
    assert argv[-2:] == ["--provider", "local"]
