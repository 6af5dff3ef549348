"""Cross-process locks between runs on one machine.

- Each run holds a lock named after its namespace while it runs, so `kfs cleanup`
  can tell a leftover from a run in progress.
- Runs that change the node hold the node lock, shared, for their whole run;
  a run that measures timing on the node holds it exclusively (alone on the
  node), and `kfs cleanup` takes it exclusively before sweeping the node.
- A node resource a fault takes over (the simulated nodes, the outside
  network) has its own lock, held exclusively: such runs take turns.
Locks are flock()s: the kernel releases them when a process dies, even on SIGKILL.
Their files go with the cluster (`down`), so a new machine's state is restored.

flock()s only reach processes on this machine: a provider whose cluster other
machines may use too keeps these locks on the cluster instead, as Leases
(providers.leases). Callers go through ``Provider.locks()``, a LockBackend;
FileLocks is this module's, the `local` provider's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Protocol

from failure_stories.core.errors import GuardRefusedError
from failure_stories.core.wait import wait_for


class LockBackend(Protocol):
    """Where a provider keeps run and node locks; the API of this module's functions."""

    def held(
        self,
        name: str,
        what: str,
        timeout: float = 1800,
        on_wait: Callable[[str], None] | None = None,
        shared: bool = False,
    ) -> contextlib.AbstractContextManager[None]: ...

    def run_active(self, namespace: str) -> bool: ...

    def sweep_run_locks(self, namespaces: Collection[str] | None = None) -> list[str]: ...


def lock_dir() -> Path:
    return Path(os.environ.get("KFS_LOCK_DIR", "/run/kfs-locks"))


def _try_lock(path: Path, shared: bool = False) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    # Lock files are removed (a finished run's, all of them at `down`): a lock
    # taken on a file unlinked meanwhile guards nothing, so it counts as not yet.
    try:
        current = os.stat(path).st_ino
    except FileNotFoundError:
        current = None
    if current != os.fstat(fd).st_ino:
        os.close(fd)
        return None
    return fd


POLL_SECONDS = 1.0


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def held(
    name: str,
    what: str,
    timeout: float = 1800,
    on_wait: Callable[[str], None] | None = None,
    shared: bool = False,
) -> Iterator[None]:
    """Hold lock ``name`` (exclusively, or shared with other shared holders),
    waiting (bounded) for conflicting holders to finish.

    flock() favours no one, so a stream of shared holders that overlap would
    keep an exclusive waiter out for as long as it lasts (a timing story behind
    every other run of a parallel suite). A gate file orders them as the Lease
    locks are ordered: an exclusive taker closes the gate while it waits, shared
    takers pass it only while it is open, so they queue behind the waiting writer."""
    deadline = time.monotonic() + timeout
    said = False

    def take(path: Path) -> int:
        nonlocal said
        fd = _try_lock(path, shared)
        if fd is None:
            if on_wait is not None and not said:
                on_wait(f"waiting for {what}")
                said = True
            fd = wait_for(
                lambda: _try_lock(path, shared),
                what=what,
                timeout=max(0.0, deadline - time.monotonic()),
                interval=POLL_SECONDS,
            )
        assert fd is not None  # wait_for returns only a truthy value
        return fd

    path = lock_dir() / f"{name}.lock"
    # A run's lock is its own (nobody queues for it): no gate.
    gate = None if name.startswith("run-") else take(lock_dir() / f"{name}.gate.lock")
    try:
        fd = take(path)
    finally:
        if gate is not None:
            _release(gate)
    try:
        yield
    finally:
        _release(fd)
        if name.startswith("run-"):
            path.unlink(missing_ok=True)


def run_active(namespace: str) -> bool:
    """True while the run that owns ``namespace`` still holds its lock."""
    path = lock_dir() / f"run-{namespace}.lock"
    if not path.exists():
        return False
    fd = _try_lock(path)
    if fd is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return False


def sweep_run_locks(namespaces: Collection[str] | None = None) -> list[str]:
    """Remove the lock files of runs that died without releasing them (SIGKILL);
    only those of ``namespaces`` if given. Returns the namespaces swept."""
    swept = []
    for path in sorted(lock_dir().glob("run-*.lock")):
        namespace = path.name[len("run-") : -len(".lock")]
        if namespaces is not None and namespace not in namespaces:
            continue
        if not run_active(namespace):
            path.unlink(missing_ok=True)
            swept.append(namespace)
    return swept


def remove_all(strict: bool = True) -> list[str]:
    """Delete the lock files no process holds, and the lock directory if empty.

    ``strict``: refuse (GuardRefusedError, nothing removed) if any lock is held,
    since a held lock is the only sign that another run or cluster change is in
    progress; otherwise held ones are simply kept. Returns the files removed."""
    directory = lock_dir()
    paths = sorted(directory.glob("*.lock")) if directory.is_dir() else []
    fds: dict[Path, int] = {}
    try:
        for path in paths:
            fd = _try_lock(path)
            if fd is not None:
                fds[path] = fd
            elif strict:
                raise GuardRefusedError(
                    f"a kfs process holds {path.name}: let it finish (or stop it), then retry"
                )
        # Unlinked while we hold them: a process that opened one meanwhile
        # sees it was unlinked once it gets it (see _try_lock) and tries again.
        for path in fds:
            path.unlink(missing_ok=True)
    finally:
        for fd in fds.values():
            os.close(fd)
    with contextlib.suppress(OSError):
        directory.rmdir()  # only if empty
    return [str(p) for p in fds]


class FileLocks:
    """The LockBackend of flock() files in lock_dir(): for processes on one machine."""

    def held(
        self,
        name: str,
        what: str,
        timeout: float = 1800,
        on_wait: Callable[[str], None] | None = None,
        shared: bool = False,
    ) -> contextlib.AbstractContextManager[None]:
        return held(name, what, timeout=timeout, on_wait=on_wait, shared=shared)

    def run_active(self, namespace: str) -> bool:
        return run_active(namespace)

    def sweep_run_locks(self, namespaces: Collection[str] | None = None) -> list[str]:
        return sweep_run_locks(namespaces)
