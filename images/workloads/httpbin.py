"""Tiny HTTP workload for scenarios: GET /healthz -> "ok", GET / -> the hostname.

Standard library only, because the toolbox image has python3 and nothing else.
Run as: python3 /opt/kfs/workloads/httpbin.py --port 8080
"""

from __future__ import annotations

import argparse
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpserve


class Handler(BaseHTTPRequestHandler):
    server_version = "kfs-httpbin/1"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, "ok\n")
        elif self.path == "/" or self.path.startswith("/?"):
            self._reply(200, socket.gethostname() + "\n")
        else:
            self._reply(404, "not found\n")

    def _reply(self, status: int, body: str) -> None:
        httpserve.reply(self, status, body.encode(), "text/plain; charset=utf-8")

    def log_message(self, format: str, *args: object) -> None:
        httpserve.log_line(self, format % args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - a pod must be reachable
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    return httpserve.serve(server, f"httpbin listening on {args.bind}:{args.port}")


if __name__ == "__main__":
    sys.exit(main())
