"""The event that exposes a story's latent fault, started by a measuring phase.

``steps.expose(ctx)`` is a plain function (the event runs to its end before it
returns: an edit, an attack, a timed outage) or a generator: the code before its
``yield`` starts the event, the code after it ends it (a failed node comes back).
The symptom and verify windows start it with ``ctx.expose()`` at the moment their
measurement needs it; the event ends when the ``with ctx.expose():`` block exits,
or at the latest when the phase ends, also when it fails. So a window never leaves
its event running for the next phase to undo (which ``mitigate`` could not do in a
``no-fix`` control, where it does not run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any


class Exposure:
    """One run of the story's event inside a measuring window."""

    def __init__(self, fn: Callable[[Any], Any], ctx: Any, since: float) -> None:
        self.since = since  # the run's start, so times line up with its series
        self.started = time.monotonic()
        self.ended: float | None = None
        self._gen: Generator[Any, None, None] | None = None
        result = fn(ctx)
        if isinstance(result, Generator):
            self._gen = result
            next(result, None)  # the event starts
        else:
            self.ended = time.monotonic()

    def end(self) -> None:
        """End the event (idempotent): run what follows the generator's yield."""
        if self.ended is not None:
            return
        gen, self._gen = self._gen, None
        self.ended = time.monotonic()
        if gen is not None:
            for _ in gen:  # a second yield would be a bug; run it to its end anyway
                pass
            self.ended = time.monotonic()

    def window(self) -> dict[str, float]:
        """When the event ran, in seconds since the run started (for the report)."""
        end = self.ended if self.ended is not None else time.monotonic()
        return {
            "started_at": round(self.started - self.since, 3),
            "seconds": round(end - self.started, 3),
        }

    def __enter__(self) -> Exposure:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.end()
