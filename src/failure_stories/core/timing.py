"""Where a run's wall time goes: framework work timed by category, exclusively.

The runner, the wait helper, the cluster client and the image loader open a
``span`` around their work; a span nested in another (an API call inside a
wait's predicate, a wait inside an image import) counts for the inner category
only, so the categories never overlap and never add up to more than the wall
time. One ledger per process, which is one run (`kfs run` runs each story in
its own process); spans from other threads are kept apart by a stack per thread.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

CLUSTER_CALLS = "cluster_calls"  # Kubernetes API requests (REST)
EXEC = "exec"  # commands run in pods or on nodes (a node shell), load windows included
WAITS = "waits"  # the wait helper's polling and sleeping, less what it called
IMAGES = "images"  # building and importing the offline images
LOCK_WAIT = "lock_wait"  # waiting for another run's turn on the node
NOISE_GUARD = "noise_guard"  # waiting for a quiet node before a timing window


class Ledger:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def _stack(self) -> list[list[float]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        stack: list[list[float]] = self._local.stack
        return stack

    @contextlib.contextmanager
    def span(self, category: str, opaque: bool = False) -> Iterator[None]:
        """Time the block as ``category``, less its nested spans; an ``opaque``
        span keeps its nested work as its own (a lock wait polls the cluster,
        but all of it is waiting for the lock)."""
        stack = self._stack()
        if stack and stack[-1][1]:  # inside an opaque span: it counts this too
            yield
            return
        start = self.clock()
        stack.append([0.0, 1.0 if opaque else 0.0])  # nested spans' time, opaque
        try:
            yield
        finally:
            elapsed = self.clock() - start
            inner, _ = stack.pop()
            with self._lock:
                self.seconds[category] = self.seconds.get(category, 0.0) + elapsed - inner
            if stack:
                stack[-1][0] += elapsed

    def timed(self, category: str, fn: Callable[P, T]) -> Callable[P, T]:
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            with self.span(category):
                return fn(*args, **kwargs)

        return call

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {k: round(v, 2) for k, v in sorted(self.seconds.items())}

    def reset(self) -> None:
        with self._lock:
            self.seconds = {}


LEDGER = Ledger()
span = LEDGER.span


def timed(category: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator: every call of the function is a ``category`` span of LEDGER."""

    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        return functools.wraps(fn)(LEDGER.timed(category, fn))

    return wrap
