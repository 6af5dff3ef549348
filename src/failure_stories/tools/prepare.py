"""`python -m failure_stories.tools.prepare`: build everything the local provider needs.

Run by `make setup`; every step is cached, so a second run takes seconds."""

from __future__ import annotations

import sys
import time

from failure_stories import images
from failure_stories.core.errors import KfsError
from failure_stories.images import redis_operator
from failure_stories.providers.local import binaries
from failure_stories.tools.bench import record_build_time


def main() -> int:
    try:
        cold_binaries = bool(binaries.missing())
        t0 = time.monotonic()
        binaries.ensure()
        t1 = time.monotonic()
        images.build_images()
        t2 = time.monotonic()
        if cold_binaries:
            record_build_time("binaries", t1 - t0)
        if t2 - t1 > 30:  # a real image build, not a cache hit
            record_build_time("images", t2 - t1)
        # The system under test of flant-redis-data-loss, from its Go module.
        cold_operator = redis_operator.missing()
        redis_operator.build_image(log=lambda m: print(f"prepare: {m}", file=sys.stderr))
        t3 = time.monotonic()
        if cold_operator:
            record_build_time("redis-operator", t3 - t2)
    except KfsError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"prepare: binaries {t1 - t0:.1f}s, images {t2 - t1:.1f}s, "
        f"redis-operator {t3 - t2:.1f}s (cached after the first run)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
