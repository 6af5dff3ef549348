"""HARMLESS stand-in for the cryptominer of the jwplayer-exposed-dashboard scenario.

It mines nothing and opens no connection: it renames itself `gcc` (the name the
real miner hid behind) and spins one CPU-bound loop, then exits by itself after
--seconds (120 by default, never more than 300). As a child of the container it
also dies with its pod. A second copy started in the same container exits at once
(pid file in the working directory), so repeating the attack never stacks miners.

Run as: python3 /opt/kfs/workloads/fakeminer.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

MAX_SECONDS = 300.0
PIDFILE = Path("kfs-fakeminer.pid")
NAME = "gcc"


def already_running() -> bool:
    try:
        pid = int(PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm == NAME


def main(argv: list[str] | None = None) -> int:
    # Rename first: a process scan that lands right after the start must already
    # see the disguise. Writing /proc/self/comm is what prctl(PR_SET_NAME) does.
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(NAME)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    if already_running():
        return 0
    with contextlib.suppress(OSError):
        PIDFILE.write_text(str(os.getpid()))
    deadline = time.monotonic() + max(1.0, min(args.seconds, MAX_SECONDS))
    spins = 0
    while time.monotonic() < deadline:
        for _ in range(100_000):
            spins += 1
    with contextlib.suppress(OSError):
        PIDFILE.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
