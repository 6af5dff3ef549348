"""What the toolbox's small HTTP servers share: replies that carry their length,
one stdout line per request (what `kubectl logs` shows), and serving until the
kubelet's SIGTERM, which ends the process with status 0.

Workloads run as `python3 /opt/kfs/workloads/<name>.py`, so this module is found
next to them."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


def reply(handler: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def reply_json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    reply(handler, status, (json.dumps(payload) + "\n").encode(), "application/json")


def log_line(handler: BaseHTTPRequestHandler, line: str) -> None:
    sys.stdout.write(f"{handler.address_string()} {line}\n")
    sys.stdout.flush()


def serve(server: HTTPServer, banner: str) -> int:
    """Serve until SIGTERM or Ctrl-C; the kubelet stops pods with SIGTERM."""
    print(banner, flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0
