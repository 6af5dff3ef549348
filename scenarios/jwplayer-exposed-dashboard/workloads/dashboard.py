"""DELIBERATELY VULNERABLE stand-in for a cluster monitoring dashboard (think Weave
Scope), used by the jwplayer-exposed-dashboard scenario only.

Like the real tool's "open a shell in this container" button, it runs any shell
command it is sent, in its own container:

    GET  /healthz   -> "ok" (never authenticated: the kubelet's probe must pass)
    GET  /          -> a one-line JSON summary (host, uid, whether auth is on)
    POST /exec      -> body {"cmd": "<shell command>"}; runs `/bin/sh -c cmd` and
                       answers {"rc", "stdout", "stderr", "uid"}

Without --token-file anyone who can reach the port can run commands: that is the
vulnerability the scenario reproduces. With --token-file every request but
/healthz needs `Authorization: Bearer <token>` (the mitigation).

Safety rail: it refuses to start unless KFS_NAMESPACE names a kfs-* namespace (the
manifests set it from the downward API), so it cannot be run by accident outside
a scenario's throwaway namespace. Never deploy it anywhere else.

Run as: python3 /opt/kfs/workloads/dashboard.py --port 4040 [--token-file PATH]
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpserve

MAX_BODY = 64 * 1024
EXEC_TIMEOUT = 10.0


class Handler(BaseHTTPRequestHandler):
    server_version = "kfs-dashboard/1"
    # Set by main(): None means "no authentication" (the vulnerable default).
    token: bytes | None = None

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"status": "ok"})
            return
        if not self._authorized():
            return
        if self.path == "/" or self.path.startswith("/?"):
            self._reply(
                200,
                {
                    "dashboard": "kfs stand-in (deliberately vulnerable)",
                    "host": socket.gethostname(),
                    "uid": os.getuid(),
                    "auth": self.token is not None,
                },
            )
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.path != "/exec":
            self._reply(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._reply(400, {"error": f"body must be 1..{MAX_BODY} bytes"})
            return
        try:
            cmd = json.loads(self.rfile.read(length))["cmd"]
            if not isinstance(cmd, str):
                raise TypeError("cmd must be a string")
        except (ValueError, KeyError, TypeError) as exc:
            self._reply(400, {"error": f"want {{'cmd': '...'}}: {exc}"})
            return
        try:
            # The whole point of this stand-in: a shell for whoever asks.
            done = subprocess.run(  # noqa: S602
                cmd,
                shell=True,
                cwd="/tmp",
                capture_output=True,
                text=True,
                timeout=EXEC_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self._reply(504, {"error": f"command ran over {EXEC_TIMEOUT:g}s"})
            return
        self._reply(
            200,
            {
                "rc": done.returncode,
                "stdout": done.stdout,
                "stderr": done.stderr,
                "uid": os.getuid(),
            },
        )

    def _authorized(self) -> bool:
        if self.token is None:
            return True
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        # Constant-time comparison: the token is the only thing guarding a shell.
        if given and hmac.compare_digest(given.encode(), self.token):
            return True
        self._reply(401, {"error": "a bearer token is required"})
        return False

    def _reply(self, status: int, body: dict[str, object]) -> None:
        httpserve.reply_json(self, status, body)

    def log_message(self, format: str, *args: object) -> None:
        httpserve.log_line(self, format % args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4040)
    parser.add_argument("--bind", default="0.0.0.0")  # noqa: S104 - a pod must be reachable
    parser.add_argument("--token-file", type=Path, default=None)
    args = parser.parse_args(argv)
    namespace = os.environ.get("KFS_NAMESPACE", "")
    if not namespace.startswith("kfs-"):
        print(
            "refusing to start: this dashboard is deliberately vulnerable and runs only "
            "in a kfs-* scenario namespace (set KFS_NAMESPACE from the downward API)",
            file=sys.stderr,
        )
        return 2
    if args.token_file is not None:
        token = args.token_file.read_bytes().strip()
        if not token:
            print(f"refusing to start: {args.token_file} is empty", file=sys.stderr)
            return 2
        Handler.token = token
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    mode = "token required" if Handler.token else "NO AUTHENTICATION"
    return httpserve.serve(server, f"dashboard on {args.bind}:{args.port} in {namespace}, {mode}")


if __name__ == "__main__":
    sys.exit(main())
