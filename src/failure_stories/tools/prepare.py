"""`python -m failure_stories.tools.prepare`: build everything the local provider needs.

Run by `make setup`; every step is cached, so a second run takes seconds.
On a cold cache the image builds (debootstrap: mostly downloads and unpacking)
run beside the Kubernetes compile, which keeps both cores busy on its own.
With --kind it also starts a Docker engine (if none runs) and builds the kind
node image (host/docker_engine.py, images/kind_node.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from failure_stories import images
from failure_stories.core.errors import KfsError
from failure_stories.images import otelcol, redis_operator
from failure_stories.providers.kind_image import ensure_node_image
from failure_stories.providers.local import binaries
from failure_stories.tools.bench import record_build_time


def _seconds(step: Callable[[], object]) -> float:
    start = time.monotonic()
    step()
    return time.monotonic() - start


def build_binaries_and_images() -> tuple[float, float]:
    """The Go compile and the image builds at once; returns their seconds.

    The images do not need the binaries (the toolbox is Debian packages plus the
    workloads, pause is one C file), so they need not wait for the compile."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfs-images") as pool:
        image_build = pool.submit(_seconds, images.build_images)
        binaries_seconds = _seconds(binaries.ensure)
        return binaries_seconds, image_build.result()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        cold_binaries = bool(binaries.missing())
        t0 = time.monotonic()
        binaries_seconds, images_seconds = build_binaries_and_images()
        t2 = time.monotonic()
        cold_collector = not otelcol.binary_cached()
        images.build_on_demand(images.OTELCOL_IMAGE)
        t3 = time.monotonic()
        if cold_binaries:
            record_build_time("binaries", binaries_seconds)
        if images_seconds > 30:  # a real image build, not a cache hit
            record_build_time("images", images_seconds)
        if cold_collector:
            record_build_time("otelcol", t3 - t2)
        # The system under test of flant-redis-data-loss, from its Go module.
        cold_operator = redis_operator.missing()
        redis_operator.build_image(log=lambda m: print(f"prepare: {m}", file=sys.stderr))
        t4 = time.monotonic()
        if cold_operator:
            record_build_time("redis-operator", t4 - t3)
        if cold_binaries:
            # What a new machine waits for, the overlap included (apt comes before).
            record_build_time("setup_total", t4 - t0)
        if "--kind" in args:
            t5 = time.monotonic()
            ensure_node_image()
            took = time.monotonic() - t5
            # A build takes minutes, a cache hit (a Docker label check) seconds.
            record_build_time("kind_node_image" if took > 30 else "kind_node_image_cached", took)
            print(f"prepare: kind node image {took:.1f}s")
    except KfsError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"prepare: binaries {binaries_seconds:.1f}s, images {images_seconds:.1f}s (side by side), "
        f"log shipper (OpenTelemetry Collector) {t3 - t2:.1f}s, redis-operator {t4 - t3:.1f}s "
        "(cached after the first run)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
