"""An application that logs numbered lines at a steady rate, so that a log pipeline
can be audited: every line carries `seq=N` (1, 2, 3... without gaps) and `ts=T`
(seconds since the epoch, when it was written). The last sequence number written
is kept in a file, so a test can tell exactly which lines exist.

Run as: python3 /opt/kfs/workloads/logwriter.py --rate 20 [--seq-file /tmp/seq]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

ORDERS = ("checkout", "refund", "invoice", "shipment")


def line(seq: int, ts: float) -> str:
    return (
        f'level=info msg="{ORDERS[seq % len(ORDERS)]} processed" '
        f"order=ord-{seq:08d} seq={seq} ts={ts:.6f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="lines per second")
    parser.add_argument("--seq-file", type=Path, default=Path("/tmp/seq"))
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = args.seq_file.with_suffix(".tmp")
    start = time.monotonic()
    seq = 0
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            seq += 1
            # Fixed schedule: line N is due at start + N/rate, whatever happened before.
            delay = start + seq / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sys.stdout.write(line(seq, time.time()) + "\n")
            sys.stdout.flush()
            # Written after the line is out, so the file never names an unwritten line.
            tmp.write_text(str(seq))
            os.replace(tmp, args.seq_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
