"""The one wait helper: every wait and retry in the suite goes through here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from failure_stories.core import timing
from failure_stories.core.errors import TransientError, WaitTimeout

T = TypeVar("T")

_RETRYABLE: tuple[type[BaseException], ...] = (TransientError, ConnectionError)


@timing.timed(timing.WAITS)
def wait_for(
    predicate: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 0.5,
    retry_on: tuple[type[BaseException], ...] = _RETRYABLE,
) -> T:
    """Call ``predicate`` until it returns a truthy value; return that value.

    Exceptions listed in ``retry_on`` count as "not yet". On timeout a
    WaitTimeout names ``what`` was awaited and the last value or error seen.
    """
    last: list[object] = [None]

    def attempt() -> T | None:
        try:
            value = predicate()
        except retry_on as exc:
            last[0] = exc
            raise
        last[0] = value
        return value

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(interval),
        retry=(
            tenacity.retry_if_exception_type(retry_on) | tenacity.retry_if_result(lambda v: not v)
        ),
        reraise=False,
    )
    try:
        value = retrying(attempt)
    except tenacity.RetryError as exc:
        raise WaitTimeout(
            f"timed out after {timeout:g}s waiting for {what} (last seen: {last[0]!r})"
        ) from exc
    assert value is not None  # tenacity returns only a truthy result
    return value


def sample(
    probe: Callable[[], None], *, every: float, duration: float, what: str = "samples"
) -> int:
    """Call ``probe`` every ``every`` seconds for ``duration`` seconds; return the count.

    Built on the same retry engine so that sampling loops, too, are bounded and named.
    """
    deadline = time.monotonic() + duration
    count = [0]

    def tick() -> bool:
        probe()
        count[0] += 1
        return time.monotonic() >= deadline

    wait_for(tick, what=what, timeout=duration + every * 4 + 30, interval=every, retry_on=())
    return count[0]


def watch(
    probe: Callable[[], bool], *, every: float, within: float, what: str = "a window"
) -> bool:
    """Call ``probe`` every ``every`` seconds until it returns True or ``within``
    seconds have passed; return whether it did.

    For measuring windows: an event that never happens in the window (a node the
    control plane never marks NotReady, a symptom that never shows) is something
    the window measured, and so a verdict, where ``wait_for`` would raise."""
    deadline = time.monotonic() + within
    seen = [False]

    def tick() -> bool:
        seen[0] = bool(probe())
        return seen[0] or time.monotonic() >= deadline

    wait_for(tick, what=what, timeout=within + every * 4 + 30, interval=every, retry_on=())
    return seen[0]
