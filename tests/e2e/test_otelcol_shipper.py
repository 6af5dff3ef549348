"""The real OpenTelemetry Collector (compiled from build/otelcol, cached) against the
story's real log sink, on 127.0.0.1 without a cluster.

It proves what the story's verdict rests on, one level down: the sink decodes what
the collector's otlphttp exporter really sends (gzipped protobuf), and the story's
two configurations, taken from its manifests, behave as documented when the
backend answers 429 and the collector is restarted meanwhile: the fragile one
loses lines for good, the durable one loses none."""

from __future__ import annotations

import importlib.util
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from failure_stories.core import paths
from failure_stories.core.wait import sample, wait_for
from failure_stories.images import otelcol

STORY = paths.SCENARIOS / "prometheuskube-missing-logs"
NS = "kfs-prometheuskube-missing-logs-e2e"
# The kubelet's layout, which the collector's container parser reads the pod from.
LOG = f"{NS}_app_0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/app/0.log"


def _load_sink() -> ModuleType:
    sys.path.insert(0, str(paths.IMAGES / "workloads"))  # httpserve, as in the pod
    spec = importlib.util.spec_from_file_location("kfs_e2e_logsink", STORY / "workloads/logsink.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


logsink = _load_sink()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def binary() -> Path:
    return otelcol.build_collector()


@pytest.fixture
def sink() -> Iterator[tuple[str, Any]]:
    store = logsink.Store()
    server = logsink.make_server("127.0.0.1", 0, store)
    server.RequestHandlerClass.quiet = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def story_config(manifest: str, root: Path, sink_url: str) -> Path:
    """The collector configuration of one of the story's manifests, pointed at
    this test's directories, sink and a free metrics port."""
    text = string.Template((STORY / "manifests" / manifest).read_text()).safe_substitute(
        NAMESPACE=NS, SINK_URL=sink_url
    )
    [cm] = [d for d in yaml.safe_load_all(text) if d["kind"] == "ConfigMap"]
    config = cm["data"]["config.yaml"]
    config = config.replace("/var/log/pods", str(root / "pods"))
    config = config.replace("/var/lib/otelcol", str(root / "state"))
    config = config.replace("port: 8888", f"port: {_free_port()}")
    out = root / f"{manifest}.config.yaml"
    out.write_text(config)
    return out


class Writer:
    """The app: numbered lines in the CRI format containerd writes, 20 a second."""

    def __init__(self, file: Path) -> None:
        file.parent.mkdir(parents=True)
        self.file = file.open("a")
        self.seq = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _write(self) -> None:
        if self.stop.is_set():
            return
        self.seq += 1
        self.file.write(
            f"2026-01-01T00:00:00.000000000Z stdout F seq={self.seq} ts={time.time()}\n"
        )
        self.file.flush()

    def _run(self) -> None:
        sample(self._write, every=0.05, duration=120, what="the app's lines")

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()


class Collector:
    def __init__(self, binary: Path, config: Path, log: Path) -> None:
        self.argv = [str(binary), "--config", str(config)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM, as the kubelet stops a deleted pod."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _settled(store: Any, lo: int, hi: int, progress: dict[str, float]) -> dict[str, Any] | None:
    """The window once every line arrived, or once nothing new arrived for 5 s."""
    w = store.window(lo, hi)
    if w["missing"] == 0:
        return dict(w)
    if w["received"] != progress["received"]:
        progress.update(received=w["received"], at=time.monotonic())
        return None
    return dict(w) if time.monotonic() - progress["at"] >= 5 else None


def _outage_with_restart(binary: Path, manifest: str, tmp: Path, sink: Any) -> dict[str, Any]:
    url, store = sink
    collector = Collector(binary, story_config(manifest, tmp, url), tmp / "collector.log")
    (tmp / "state").mkdir()
    with Writer(tmp / "pods" / LOG) as app:
        collector.start()
        try:
            wait_for(lambda: store.documents > 0, what="the first lines at the sink", timeout=60)
            first = app.seq + 1
            store.set_fault(True, None, now=time.time())
            sample(lambda: None, every=0.5, duration=3, what="the outage")
            collector.stop()
            sample(lambda: None, every=0.5, duration=2, what="no collector")
            collector.start()
            sample(lambda: None, every=0.5, duration=5, what="the outage, restarted")
            store.set_fault(False, None, now=time.time())
            sample(lambda: None, every=0.5, duration=2, what="the recovery")
            last = app.seq
            progress = {"received": -1.0, "at": time.monotonic()}
            window = wait_for(
                lambda: _settled(store, first, last, progress),
                what="the window's lines to arrive or stop arriving",
                timeout=60,
            )
        finally:
            collector.stop()
    assert store.rejected_requests > 0, "the collector never met the 429s"
    return window


def test_the_fragile_collector_loses_lines_for_good(
    binary: Path, tmp_path: Path, sink: tuple[str, Any]
) -> None:
    window = _outage_with_restart(binary, "fault.yaml", tmp_path, sink)
    # 12 s of lines at 20/s; all but those of the last 2 s or so are gone.
    assert window["missing"] >= 100, window
    assert window["received"] > 0, window


def test_the_durable_collector_delivers_every_line(
    binary: Path, tmp_path: Path, sink: tuple[str, Any]
) -> None:
    window = _outage_with_restart(binary, "mitigation.yaml", tmp_path, sink)
    log = (tmp_path / "collector.log").read_text()[-3000:]
    assert window["missing"] == 0, (window, log)
    # 12 s of lines; a busy machine's writer may fall behind its 20 a second.
    assert window["expected"] >= 100, window
