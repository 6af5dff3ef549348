"""A latency-sensitive HTTP service whose requests do short parallel CPU bursts.

Each GET /work spreads a fixed amount of CPU work (--burst-ms of CPU time per
worker) over --workers pre-forked processes, so the burst really runs on several
cores at once, as a multi-threaded JVM or Go service does (Python threads would
be serialised by the GIL). Under a CFS quota such a burst can spend the whole
period's quota in a few milliseconds and then wait for the next period.

Run as: python3 /opt/kfs/workloads/burstsvc.py --port 8080 --workers 2 --burst-ms 15
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpserve


def burn(cpu_ms: float) -> float:
    """Spin until this process has used cpu_ms of CPU time (not wall time)."""
    start = time.thread_time()
    x = 0
    while (time.thread_time() - start) * 1000 < cpu_ms:
        x += 1
    return time.thread_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--burst-ms", type=float, default=15.0)
    args = parser.parse_args(argv)
    pool = mp.Pool(args.workers)
    pool.map(burn, [1.0] * args.workers)  # fork and warm up before serving

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                httpserve.reply(self, 200, b"ok\n", "text/plain")
                return
            if self.path == "/work":
                t0 = time.monotonic()
                cpu = sum(pool.map(burn, [args.burst_ms] * args.workers))
                body = json.dumps(
                    {"wall_ms": (time.monotonic() - t0) * 1000, "cpu_ms": cpu * 1000}
                ).encode()
            else:
                self.send_error(404)
                return
            httpserve.reply(self, 200, body, "application/json")

        def log_message(self, format: str, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)  # noqa: S104
    try:
        return httpserve.serve(
            server, f"burstsvc on :{args.port}, {args.workers} workers x {args.burst_ms} ms"
        )
    finally:
        pool.terminate()


if __name__ == "__main__":
    raise SystemExit(main())
