"""Start, find and stop the embedded cluster's long-running processes.

Each component runs detached (its own session) so the cluster outlives the
`kfs cluster up` command; its pid, argv and start time are recorded so that
`down` - or a later `up` - finds exactly what it started and nothing else: a
pid the kernel gave to another process since has another start time (psutil's
``create_time``), and another argv.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from failure_stories.core import atomic
from failure_stories.core.errors import ProviderError, WaitTimeout
from failure_stories.core.wait import wait_for


@dataclass(frozen=True)
class Record:
    name: str
    pid: int
    argv: list[str]
    # psutil's create_time of the process; None in records written before it was kept.
    started: float | None = None


# create_time is derived from clock ticks since boot: equal for one process on
# every read, apart by far more for a process that got its pid later.
_SAME_START = 0.05
_STOPPED = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def _process(rec: Record) -> psutil.Process | None:
    """The recorded process if it still runs (not a zombie, not a recycled pid)."""
    try:
        proc = psutil.Process(rec.pid)
        if rec.started is not None and abs(proc.create_time() - rec.started) > _SAME_START:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE or proc.cmdline()[:1] != rec.argv[:1]:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def _stopped(rec: Record) -> bool:
    proc = _process(rec)
    try:
        return proc is not None and proc.status() in _STOPPED
    except psutil.NoSuchProcess:
        return False


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.pid_dir = state_dir / "pids"
        self.log_dir = state_dir / "logs"

    def _record_path(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def record(self, name: str) -> Record | None:
        path = self._record_path(name)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        started = data.get("started")
        return Record(
            name, int(data["pid"]), list(data["argv"]), None if started is None else float(started)
        )

    def alive(self, name: str) -> bool:
        rec = self.record(name)
        return rec is not None and _process(rec) is not None

    def names(self) -> list[str]:
        if not self.pid_dir.exists():
            return []
        return sorted(p.stem for p in self.pid_dir.glob("*.json"))

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> bool:
        """Start ``name`` unless it already runs with the same argv; True if started."""
        if self.alive(name):
            rec = self.record(name)
            if rec is not None and rec.argv == argv:
                return False
            self.stop(name)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    env={**os.environ, **(env or {})},
                )
            except OSError as exc:
                raise ProviderError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        try:
            started: float | None = psutil.Process(proc.pid).create_time()
        except psutil.NoSuchProcess:
            started = None  # died at once: the wait below says so
        record = {"pid": proc.pid, "argv": argv, "started": started}
        atomic.write_text(self._record_path(name), json.dumps(record))

        # Until exec completes /proc shows the forking Python; wait so that alive()
        # is meaningful from here on. A process that dies at once is reported.
        def execed() -> bool:
            if proc.poll() is not None:
                raise ProviderError(f"{name} exited at once: {self.tail(name)}")
            return self.alive(name)

        wait_for(execed, what=f"{name} to start", timeout=10, interval=0.05, retry_on=())
        return True

    def stop(self, name: str, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; forget the record either way."""
        rec = self.record(name)
        if rec is not None and self.alive(name):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rec.pid, signal.SIGTERM)
                os.killpg(rec.pid, signal.SIGCONT)  # a frozen process must wake to exit
            try:
                wait_for(
                    lambda: not self.alive(name),
                    what=f"{name} to exit",
                    timeout=timeout,
                    interval=0.2,
                )
            except WaitTimeout:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(rec.pid, signal.SIGKILL)
                wait_for(
                    lambda: not self.alive(name),
                    what=f"{name} to die after SIGKILL",
                    timeout=10,
                    interval=0.2,
                )
        self._record_path(name).unlink(missing_ok=True)

    def freeze(self, name: str) -> None:
        """SIGSTOP: the process stays but does nothing, like a hung machine."""
        rec = self.record(name)
        if rec is None or not self.alive(name):
            raise ProviderError(f"{name} is not running")
        os.killpg(rec.pid, signal.SIGSTOP)

    def thaw(self, name: str) -> bool:
        """SIGCONT; harmless on a process that is not frozen or not running.
        True if it was frozen."""
        rec = self.record(name)
        if rec is None:
            return False
        was_frozen = _stopped(rec)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, signal.SIGCONT)
        return was_frozen

    def tail(self, name: str, lines: int = 5) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])
