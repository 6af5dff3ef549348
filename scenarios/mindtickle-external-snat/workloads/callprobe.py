"""Call a URL N times from inside a pod and report, as one JSON line, how many
calls succeeded and how many TCP SYNs this pod's network namespace retransmitted
meanwhile (the counter a packet capture would have shown).

Run as: python3 /opt/kfs/workloads/callprobe.py --url http://198.51.100.10/ --count 20
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path


def syn_retransmits() -> int:
    """TcpExt TCPSynRetrans from /proc/net/netstat, which is per network namespace."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            return int(table.get("TCPSynRetrans", 0))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1.5)
    args = parser.parse_args(argv)
    before = syn_retransmits()
    results = []
    for _ in range(args.count):
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:  # noqa: S310
                resp.read()
            ok, error = True, ""
        except OSError as exc:
            ok, error = False, type(exc).__name__
        results.append({"ok": ok, "ms": round((time.monotonic() - t0) * 1000, 1), "error": error})
    print(
        json.dumps(
            {
                "count": args.count,
                "ok": sum(r["ok"] for r in results),
                "syn_retransmits": syn_retransmits() - before,
                "results": results,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
