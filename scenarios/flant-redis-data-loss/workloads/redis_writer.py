"""A client that keeps writing to Redis through the master Service, to measure
how long writes were impossible while the operator changed the cluster.

Every --interval seconds it opens a fresh connection (so each write follows
whatever the Service points at now), SELECTs --db and SETs one key; one JSON
line per attempt goes to --out: {"t": <unix time>, "ok": true|false, "err": "..."}.
It stops when --stop-file exists or after --max-seconds.

    python3 redis_writer.py --host 10.96.0.12 --out /tmp/writes.jsonl --stop-file /tmp/stop
    python3 redis_writer.py --summarize /tmp/writes.jsonl --since T0 --until T1

The summary counts a failed attempt as unavailable until the next attempt, so
it does not depend on the interval or on how long a failing attempt hung.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from typing import Any


def resp(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def write_once(host: str, port: int, db: int, key: str, timeout: float) -> str:
    """'' on success, else a short error (READONLY from a replica, refused...)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(resp("SELECT", str(db)) + resp("SET", key, str(time.time())))
            reader = sock.makefile("rb")
            for _ in range(2):
                line = reader.readline()
                if not line:
                    return "connection closed"
                if line.startswith(b"-"):
                    return line[1:].decode(errors="replace").strip()[:80]
        return ""
    except OSError as exc:
        return type(exc).__name__


def run(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.max_seconds
    seq = 0
    with open(args.out, "a", buffering=1) as out:
        while time.monotonic() < deadline and not os.path.exists(args.stop_file):
            started = time.monotonic()
            err = write_once(args.host, args.port, args.db, f"w:{seq}", args.timeout)
            out.write(json.dumps({"t": round(time.time(), 3), "ok": not err, "err": err}) + "\n")
            seq += 1
            time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    return 0


def summarize(records: list[dict[str, Any]], since: float, until: float) -> dict[str, Any]:
    window = [r for r in records if since <= r["t"] <= until]
    unavailable = 0.0
    longest = 0.0
    run_start = None
    for this, nxt in zip(window, [*window[1:], None], strict=True):
        end = nxt["t"] if nxt else until
        if not this["ok"]:
            unavailable += end - this["t"]
            run_start = this["t"] if run_start is None else run_start
            longest = max(longest, end - run_start)
        else:
            run_start = None
    errors: dict[str, int] = {}
    for r in window:
        if not r["ok"]:
            errors[r["err"]] = errors.get(r["err"], 0) + 1
    return {
        "attempts": len(window),
        "failed": sum(1 for r in window if not r["ok"]),
        "unavailable_seconds": round(unavailable, 3),
        "longest_outage_seconds": round(longest, 3),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--db", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--out", default="/tmp/writes.jsonl")
    parser.add_argument("--stop-file", default="/tmp/writer.stop")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--summarize")
    parser.add_argument("--since", type=float, default=0.0)
    parser.add_argument("--until", type=float, default=float("inf"))
    args = parser.parse_args(argv)
    if args.summarize:
        with open(args.summarize) as f:
            records = [json.loads(line) for line in f if line.strip()]
        until = min(args.until, time.time())
        print(json.dumps(summarize(records, args.since, until)))
        return 0
    if not args.host:
        parser.error("--host is required unless --summarize")
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
