"""The run's overhead ledger: categories are exclusive, nested work counts once."""

from __future__ import annotations

import threading

from failure_stories.core import timing


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nested_spans_count_for_the_innermost_category_only() -> None:
    clock = Clock()
    ledger = timing.Ledger(clock)
    with ledger.span(timing.WAITS):
        clock.now += 2.0  # sleeping between polls
        with ledger.span(timing.CLUSTER_CALLS):
            clock.now += 0.5  # the predicate's API call
        clock.now += 1.0
        with ledger.span(timing.EXEC):
            clock.now += 4.0
            with ledger.span(timing.CLUSTER_CALLS):
                clock.now += 0.25
    assert ledger.snapshot() == {"cluster_calls": 0.75, "exec": 4.0, "waits": 3.0}
    assert sum(ledger.snapshot().values()) == clock.now  # never more than the wall time


def test_an_opaque_span_keeps_what_it_polls_as_its_own() -> None:
    clock = Clock()
    ledger = timing.Ledger(clock)
    with ledger.span(timing.LOCK_WAIT, opaque=True), ledger.span(timing.WAITS):
        clock.now += 3.0
        with ledger.span(timing.CLUSTER_CALLS):
            clock.now += 1.0
    assert ledger.snapshot() == {"lock_wait": 4.0}


def test_a_span_that_raises_is_still_counted_and_reset_forgets() -> None:
    clock = Clock()
    ledger = timing.Ledger(clock)
    call = ledger.timed(timing.CLUSTER_CALLS, lambda: (_ for _ in ()).throw(OSError("refused")))
    try:
        with ledger.span(timing.WAITS):
            clock.now += 1.0
            call()
    except OSError:
        pass
    assert ledger.snapshot() == {"cluster_calls": 0.0, "waits": 1.0}
    ledger.reset()
    assert ledger.snapshot() == {}


def test_threads_keep_their_own_nesting() -> None:
    ledger = timing.Ledger()
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with ledger.span(timing.EXEC):
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=other)
    with ledger.span(timing.WAITS):
        t.start()
        inside.wait(5)
        leave.set()
        t.join()
    # The other thread's exec was not nested in this thread's wait.
    seconds = ledger.snapshot()
    assert set(seconds) == {"exec", "waits"} and seconds["waits"] >= seconds["exec"] - 0.01


def test_the_wait_helper_and_the_cluster_client_report_into_the_process_ledger() -> None:
    from failure_stories.core.wait import wait_for

    timing.LEDGER.reset()
    calls = iter([None, None, "ready"])
    assert wait_for(lambda: next(calls), what="x", timeout=5, interval=0.01) == "ready"
    assert timing.LEDGER.snapshot()["waits"] > 0.0


def test_a_node_shell_is_exec_time_not_the_rest() -> None:
    """JW Player's 3 s node samples run through node_exec; unledgered, the bench
    put them under 'other' and its waits below physics."""
    from failure_stories.providers.local import LocalProvider
    from failure_stories.providers.local import layout as L

    timing.LEDGER.reset()
    LocalProvider().node_exec(L.REAL_NODE, ["sleep", "0.3"])
    assert 0.3 <= timing.LEDGER.snapshot()["exec"] < 2.0
