"""Open-loop HTTP load generator: fires requests at a fixed rate (not waiting
for answers, so a slow server cannot slow the load down) and prints one JSON line
with the latency distribution and the success count.

Run as: python3 /opt/kfs/workloads/loadgen.py --url http://10.96.0.10/work --rate 4 --duration 20
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:  # noqa: S310
                resp.read()
            with lock:
                latencies.append((time.monotonic() - t0) * 1000)
        except OSError as exc:
            with lock:
                failures.append(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"[:120])

    threads = []
    start = time.monotonic()
    n = int(args.rate * args.duration)
    for i in range(n):
        # Fixed schedule: request i leaves at start + i/rate whatever happened before.
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(args.timeout + 1)
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))] if lat else -1.0

    print(
        json.dumps(
            {
                "sent": n,
                "ok": len(lat),
                "failed": len(failures),
                "errors": sorted(set(failures)),
                "p50_ms": round(pct(50), 2),
                "p90_ms": round(pct(90), 2),
                "p95_ms": round(pct(95), 2),
                "p99_ms": round(pct(99), 2),
                "max_ms": round(lat[-1], 2) if lat else -1.0,
                "latencies_ms": [round(x, 2) for x in latencies],
                "seconds": round(time.monotonic() - start, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
