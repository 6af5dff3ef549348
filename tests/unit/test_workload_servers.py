"""The toolbox's HTTP servers as a pod runs them: `python3 <file>`, answered over
TCP, and stopped by SIGTERM with status 0 (the kubelet's way)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from failure_stories.core.wait import wait_for

WORKLOADS = Path(__file__).resolve().parents[2] / "images" / "workloads"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback only
        return resp.status, resp.headers["Content-Type"], resp.read().decode()


@pytest.mark.parametrize(
    ("script", "path", "content_type", "body"),
    [
        ("httpbin.py", "/healthz", "text/plain; charset=utf-8", "ok\n"),
        ("logsink.py", "/healthz", "application/json; charset=UTF-8", '{"status": "green"}'),
        ("dashboard.py", "/healthz", "application/json", '{"status": "ok"}\n'),
    ],
)
def test_server_answers_and_stops_on_sigterm(
    script: str, path: str, content_type: str, body: str
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOADS / script), "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # The dashboard refuses to start outside a scenario namespace.
        env={**os.environ, "KFS_NAMESPACE": "kfs-unit-test"},
    )
    try:
        got = wait_for(
            lambda: _get(f"http://127.0.0.1:{port}{path}"),
            what=f"{script} to answer",
            timeout=10,
            retry_on=(OSError,),
        )
        assert got == (200, content_type, body)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}" in out.splitlines()[0]
