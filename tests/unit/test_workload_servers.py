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

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "images" / "workloads"  # the shared ones, httpserve among them


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
        ("images/workloads/httpbin.py", "/healthz", "text/plain; charset=utf-8", "ok\n"),
        (
            "scenarios/prometheuskube-missing-logs/workloads/logsink.py",
            "/healthz",
            "application/json; charset=UTF-8",
            '{"status": "green"}',
        ),
        (
            "scenarios/jwplayer-exposed-dashboard/workloads/dashboard.py",
            "/healthz",
            "application/json",
            '{"status": "ok"}\n',
        ),
    ],
)
def test_server_answers_and_stops_on_sigterm(
    script: str, path: str, content_type: str, body: str
) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / script), "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # The dashboard refuses to start outside a scenario namespace; and in the
        # image every workload sits beside httpserve, here it is elsewhere.
        env={**os.environ, "KFS_NAMESPACE": "kfs-unit-test", "PYTHONPATH": str(WORKLOADS)},
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
