"""Readiness probe of a RedisFailover pod under ``safety: safe``.

A master is ready once it is not loading its dataset. A replica is ready only
when it really holds its master's data: link up, no full sync running, not
loading. ``redis-cli ping`` (the naive probe) passes long before that, while
the replica is still empty - the gap that lost Flant's data.

The same rules live in failure_stories.operator.redis_failover.readiness; a unit test
keeps the two in step. Exit 0 = ready, 1 = not ready (reason on stdout).

Run as: python3 /opt/kfs/workloads/redis_ready.py [--port 6379]
"""

from __future__ import annotations

import argparse
import socket
import sys


def info(port: int, timeout: float) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nINFO\r\n")
        reader = sock.makefile("rb")
        head = reader.readline()
        if head.startswith(b"-"):
            raise OSError(head[1:].decode(errors="replace").strip())
        if not head.startswith(b"$"):
            raise OSError(f"unexpected reply {head[:20]!r}")
        size = int(head[1:])
        return reader.read(size).decode(errors="replace")


def fields(text: str) -> dict[str, str]:
    out = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and ":" in line:
            key, value = line.split(":", 1)
            out[key] = value
    return out


def decide(f: dict[str, str]) -> tuple[bool, str]:
    if f.get("loading") == "1":
        return False, "loading its dataset from disk"
    role = f.get("role")
    if role == "master":
        return True, "master"
    if role != "slave":
        return False, f"unexpected role {role}"
    if f.get("master_link_status") != "up":
        return False, "link to the master is down (not synced yet)"
    if f.get("master_sync_in_progress") == "1":
        return False, "full sync from the master in progress"
    return True, "replica in sync"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--timeout", type=float, default=1.5)
    args = parser.parse_args(argv)
    try:
        ok, reason = decide(fields(info(args.port, args.timeout)))
    except (OSError, ValueError) as exc:
        ok, reason = False, f"redis does not answer: {exc}"
    print(reason)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
