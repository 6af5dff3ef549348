"""Write N keys of a fixed-size value as a Redis protocol stream on stdout, for
``redis-cli --pipe`` (the bulk-load path Redis documents); keys are
``<prefix><i>`` in database 0.

Run as: python3 /opt/kfs/workloads/redis_fill.py --keys 300000 | redis-cli --pipe
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator


def command(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def stream(keys: int, value_bytes: int, prefix: str, batch: int = 10000) -> Iterator[bytes]:
    value = b"v" * value_bytes
    key_prefix = prefix.encode()
    for start in range(0, keys, batch):
        yield b"".join(
            command(b"SET", key_prefix + str(i).encode(), value)
            for i in range(start, min(start + batch, keys))
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--prefix", default="k:")
    args = parser.parse_args(argv)
    out = sys.stdout.buffer
    for chunk in stream(args.keys, args.value_bytes, args.prefix):
        out.write(chunk)
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
