"""GameDay resources: spec validation, cron, the worker's event log and status."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from failure_stories.core.errors import DefinitionError, UnknownScenarioError
from failure_stories.gameday.resource import EventTail, GameDaySpec, Metrics, fold, next_run


def test_spec_defaults_to_a_single_unattended_run() -> None:
    spec = GameDaySpec.parse({"scenario": "moonlight-anti-affinity"})
    assert (spec.mode, spec.reveal, spec.reveal_after, spec.schedule, spec.target_namespace) == (
        "verify",
        False,
        None,
        None,
        None,
    )


def test_spec_drill_with_deadline_and_schedule() -> None:
    spec = GameDaySpec.parse(
        {
            "scenario": "flant-redis-data-loss",
            "mode": "drill",
            "revealAfterSeconds": 90,
            "schedule": "0 9 * * 1",
            "targetNamespace": "kfs-gameday-redis",
        }
    )
    assert spec.mode == "drill"
    assert spec.reveal_after == 90.0
    assert spec.target_namespace == "kfs-gameday-redis"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({}, "spec.scenario is required"),
        ({"scenario": "moonlight-anti-affinity", "mode": "chaos"}, "spec.mode must be one of"),
        ({"scenario": "moonlight-anti-affinity", "schedule": "every monday"}, "not a cron"),
        ({"scenario": "moonlight-anti-affinity", "revealAfterSeconds": 0}, "positive"),
        ({"scenario": "moonlight-anti-affinity", "targetNamespace": "prod"}, "starting with kfs-"),
    ],
)
def test_bad_specs_say_what_to_change_in_one_line(spec: dict[str, object], says: str) -> None:
    with pytest.raises(DefinitionError) as err:
        GameDaySpec.parse(spec)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_scenario_names_the_closest() -> None:
    with pytest.raises(UnknownScenarioError) as err:
        GameDaySpec.parse({"scenario": "moonlight-antiaffinity"})
    assert "moonlight-anti-affinity" in str(err.value)


def test_next_run_is_the_next_cron_tick_in_utc() -> None:
    monday_8 = dt.datetime(2026, 11, 30, 8, 59, 30, tzinfo=dt.UTC)
    assert next_run("0 9 * * 1", monday_8) == dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    at_9 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    assert next_run("0 9 * * 1", at_9) == dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)


def test_event_tail_reads_each_line_once_and_waits_for_half_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []  # the worker has not written yet
    with path.open("w") as f:
        f.write(json.dumps({"kind": "prepared", "namespace": "ns"}) + "\n")
        f.write('{"kind": "phase-st')
    assert [e["kind"] for e in tail.read()] == ["prepared"]
    with path.open("a") as f:
        f.write('art", "phase": "setup"}\n')
    assert list(tail) == [(1, {"kind": "phase-start", "phase": "setup"})]
    assert tail.read() == []
    again = EventTail(path)  # a restarted operator reads from the top
    assert [n for n, _ in again] == [1, 2]


def _phase_end(name: str, ok: bool, seconds: float, **values: float) -> dict[str, object]:
    return {
        "kind": "phase-end",
        "scenario": "s",
        "phase": name,
        "result": {
            "name": name,
            "ok": ok,
            "seconds": seconds,
            "measurements": {k: {"value": v} for k, v in values.items()},
        },
    }


def test_fold_keeps_measurements_per_phase_and_announces_results() -> None:
    status: dict[str, object] = {}
    first = fold(_phase_end("symptom", True, 12.5, outage_seconds=7.0), status)
    status.update(first.status)
    second = fold(_phase_end("verify", False, 3.0, outage_seconds=2.0), status)
    status.update(second.status)
    assert status["measurements"] == {
        "symptom": {"outage_seconds": 7.0},
        "verify": {"outage_seconds": 2.0},
    }
    assert [p["name"] for p in status["phases"]] == ["symptom", "verify"]  # type: ignore[attr-defined]
    assert first.notices[0].reason == "PhaseDone" and not first.notices[0].warning
    assert second.notices[0].reason == "PhaseFailed" and second.notices[0].warning
    assert second.phase_seconds == {"verify": 3.0}


def test_a_failed_phase_says_why_in_status() -> None:
    event = _phase_end("mitigate", False, 0.1)
    event["result"]["error"] = 'Forbidden: secrets "dashboard-token" cannot be patched'
    status = fold(event, {}).status
    (entry,) = status["phases"]
    assert entry["ok"] is False and "cannot be patched" in entry["error"]
    ok = fold(_phase_end("symptom", True, 1.0), {}).status
    assert "error" not in ok["phases"][0]


def test_fold_of_the_end_sets_the_verdict() -> None:
    done = fold({"kind": "done", "scenario": "s", "verdict": "passed", "report": "r.json"}, {})
    assert done.verdict == "passed"
    assert done.status["state"] == "Finished"
    assert done.status["verdict"] == "passed"
    failed = fold({"kind": "done", "scenario": "s", "verdict": "not-fixed"}, {})
    assert failed.notices[0].warning


def test_fold_of_a_hold_says_how_to_end_it() -> None:
    held = fold({"kind": "hold", "scenario": "s", "deadline_seconds": 60, "briefing": "paged"}, {})
    assert held.status["state"] == "Holding"
    assert "spec.reveal: true" in held.status["message"]
    assert "60s" in held.status["message"]


def test_metrics_count_verdicts_and_phase_durations() -> None:
    metrics = Metrics()
    metrics.runs.labels("s", "verify").inc()
    metrics.observe("s", fold(_phase_end("symptom", True, 12.5), {}))
    metrics.observe("s", fold({"kind": "done", "scenario": "s", "verdict": "passed"}, {}))
    text = generate_latest(metrics.registry).decode()
    assert 'kfs_gameday_runs_total{mode="verify",scenario="s"} 1.0' in text
    assert 'kfs_gameday_verdicts_total{scenario="s",verdict="passed"} 1.0' in text
    assert 'kfs_gameday_phase_seconds_count{phase="symptom",scenario="s"} 1.0' in text
    assert 'kfs_gameday_phase_seconds_sum{phase="symptom",scenario="s"} 12.5' in text


def test_every_event_the_runner_emits_reaches_the_status_through_the_event_log(tmp_path: Path):
    """Runner -> worker's event log -> operator status, with one schema: an event
    kind spelled differently anywhere would leave the status untouched here."""
    from failure_stories.gameday.worker import EventLog
    from failure_stories.reporting.model import MeasurementResult, PhaseResult
    from failure_stories.run.events import Event, EventKind

    log = EventLog(tmp_path / "events.jsonl", "s")
    result = PhaseResult("symptom", seconds=2.0)
    result.measurements = {"outage_seconds": MeasurementResult(7.0, "> 0", True)}
    emitted = [
        Event(EventKind.PREPARED, "s", message="kfs-s-abc"),
        Event(EventKind.PHASE_START, "s", "symptom"),
        Event(EventKind.LOG, "s", message="node kfs-sim-a stopped"),
        Event(EventKind.PHASE_END, "s", "symptom", result=result),
    ]
    for event in emitted:
        log(event)
    log.write(EventKind.HOLD, briefing="paged", deadline_seconds=60)
    log.write(EventKind.REVEALED, by="spec.reveal", held_seconds=12.0)
    log.write(EventKind.DONE, verdict="passed", error=None, report="r.json")
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    kinds = [x["kind"] for x in lines]
    assert kinds == ["prepared", "phase-start", "log", "phase-end", "hold", "revealed", "done"]
    assert set(kinds) == {str(k) for k in EventKind}
    status: dict[str, object] = {}
    for line in lines:
        folded = fold(line, status)
        assert folded.status, line["kind"]
        status.update(folded.status)
    assert status["namespace"] == "kfs-s-abc"
    assert status["measurements"] == {"symptom": {"outage_seconds": 7.0}}
    assert (status["state"], status["verdict"], status["heldSeconds"]) == (
        "Finished",
        "passed",
        12.0,
    )
