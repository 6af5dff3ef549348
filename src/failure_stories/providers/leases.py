"""Run and node locks as coordination.k8s.io Leases on the cluster.

host.locks keeps locks as flock() files, which only processes on one machine
see. Runs on several machines (CI runners) may share a `kind` or `existing`
cluster, so those providers keep the same locks on the cluster itself:

- Lock ``name`` is the Lease ``kfs-<name>`` (made a DNS-1123 name, see
  lease_name) in ``default``, a namespace that always exists, so a lock never
  leaves a namespace behind. Every kfs Lease is labelled managed-by
  kube-failure-stories, ``kfs.dev/lock`` and ``kfs.dev/lock-mode``; the lock's
  own name is in the ``kfs.dev/lock-name`` annotation.
- Its holderIdentity is ``<hostname>/<pid>/<random>``. The holder renews it from
  a daemon thread every duration/3 and deletes it on release. A Lease whose
  renewTime + leaseDurationSeconds is past counts as free (its holder died:
  SIGKILL, a lost machine) and may be taken over by a replace carrying the
  resourceVersion read: of two takers only one wins, the other gets 409.
- Shared holders (readers) each create their own Lease
  ``kfs-<name>-shared-<id>`` (mode ``shared``), then look for a live exclusive
  ``kfs-<name>``: if there is one, they delete theirs and try again. An
  exclusive holder (writer) creates ``kfs-<name>``, then waits until no live
  shared Lease of the lock is left. Each looks only after its own write, so at
  least one of the two sees the other: never both. A waiting writer keeps new
  readers out, so a stream of readers cannot starve it.
- Expiry is judged by the reader's clock against the holder's: the machines'
  clocks must agree to well within the duration (NTP does).
- A holder that could not renew within the duration (API unreachable, its
  Lease replaced or deleted) may have had its lock taken: that is logged when
  seen and raised as ProviderError on release, unless the body already raises.

All waits go through core.wait.wait_for; only the renewal thread keeps a timer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.core.errors import ClusterUnreachableError, ProviderError, TransientError
from failure_stories.core.wait import wait_for
from failure_stories.providers.kube import KFS, MANAGED_BY, Kube, is_transient

NAMESPACE = "default"
LOCK_LABEL = "kfs.dev/lock"
MODE_LABEL = "kfs.dev/lock-mode"
NAME_ANNOTATION = "kfs.dev/lock-name"
DURATION_SECONDS = 15
SHARED = "shared"
EXCLUSIVE = "exclusive"

_log = logging.getLogger(__name__)
T = TypeVar("T")


def dns_name(text: str, limit: int = 63) -> str:
    """``text`` as a DNS-1123 label of at most ``limit`` characters (lowercase
    letters, digits and '-', alphanumeric at both ends), also a valid label value.

    A name that had to change (other characters, too long) gets a hash of the
    original appended, so two different names never map to one."""
    clean = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")
    if clean and clean == text and len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    base = clean[: limit - len(digest) - 1].rstrip("-")
    return f"{base}-{digest}" if base else digest


def lease_name(lock: str) -> str:
    """The exclusive Lease of ``lock``: kfs-<lock>."""
    return dns_name(f"kfs-{lock}", 253)


def shared_lease_name(lock: str, holder_id: str) -> str:
    """One shared holder's Lease of ``lock``: kfs-<lock>-shared-<id>."""
    suffix = f"-shared-{holder_id}"
    return dns_name(f"kfs-{lock}", 253 - len(suffix)) + suffix


def _now() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    # The client writes isoformat(), which drops the fraction when it is zero;
    # the API server parses MicroTime with exactly six digits and would refuse it.
    return now if now.microsecond else now.replace(microsecond=1)


def expired(lease: Any, now: dt.datetime | None = None) -> bool:
    """True once ``lease`` was not renewed within its duration: its holder is gone."""
    spec = lease.spec
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None:
        return True
    deadline = renewed + dt.timedelta(seconds=spec.lease_duration_seconds or 0)
    return bool(deadline < (now or _now()))


class _Held:
    """One Lease this process holds, renewed by a daemon thread until released."""

    def __init__(self, locks: LeaseLocks, lease: Any) -> None:
        self.locks = locks
        self.lease = lease
        self.name = str(lease.metadata.name)
        self.renewed = time.monotonic()  # when the last renewal that took was sent
        # Why exclusivity is no longer certain, once it is not.
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_released, name=f"renew {self.name}", daemon=True
        )
        self._thread.start()

    def _renew_until_released(self) -> None:
        locks = self.locks
        while not self._stop.wait(locks.renew_every):
            sent = time.monotonic()
            try:
                self.lease.spec.renew_time = _now()
                self.lease = locks.api.replace_namespaced_lease(
                    self.name, locks.namespace, self.lease, _request_timeout=locks.request_timeout
                )
            except ApiException as exc:
                if exc.status in (404, 409):  # deleted or taken over: it is gone
                    self._lose(f"the Lease was {'deleted' if exc.status == 404 else 'taken'}")
                    return
                problem = f"{exc.status} {exc.reason}"
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                problem = type(exc).__name__
            else:
                self._check_renewed(sent)
                self.renewed = sent
                continue
            _log.warning("could not renew Lease %s: %s", self.name, problem)
            self._check_renewed(time.monotonic(), problem)

    def _check_renewed(self, now: float, problem: str = "") -> None:
        """Past its duration unrenewed, the Lease was free for others to take."""
        gap = now - self.renewed
        if gap > self.locks.duration:
            self._lose(f"not renewed for {gap:.0f}s" + (f" ({problem})" if problem else ""))

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            _log.error("lock Lease %s may be held by another run now: %s", self.name, why)

    def release(self) -> str | None:
        """Stop renewing and delete the Lease; return why it was lost, if it was."""
        self._stop.set()
        self._thread.join()
        self._check_renewed(time.monotonic())
        try:
            if not self.locks.delete(self.lease) and self.lost is None:
                self.lost = "the Lease was replaced or deleted by another process"
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            # Left behind, it expires within the duration and is then free.
            _log.warning("could not delete Lease %s: %s", self.name, exc)
        return self.lost


class LeaseLocks:
    """The LockBackend (host.locks) of Leases in the ``default`` namespace.

    ``duration``: leaseDurationSeconds, the time after which a holder that
    stopped renewing counts as dead; ``poll``: how often a waiter looks again."""

    def __init__(
        self,
        kube: Kube,
        duration: int = DURATION_SECONDS,
        poll: float = 1.0,
        namespace: str = NAMESPACE,
    ) -> None:
        # A client of its own: the renewing thread must never share one with
        # `kubernetes.stream` (an exec swaps its client's request method to a
        # websocket for the call's duration, so a renewal meanwhile failed with
        # "Handshake status 200 OK").
        self.api = client.CoordinationV1Api(client.ApiClient(kube.api.configuration))
        self.duration = duration
        self.renew_every = duration / 3
        self.request_timeout = max(1.0, duration / 3)
        self.poll = poll
        self.namespace = namespace

    # -- the LockBackend API ------------------------------------------------------
    @contextlib.contextmanager
    def held(
        self,
        name: str,
        what: str,
        timeout: float = 1800,
        on_wait: Callable[[str], None] | None = None,
        shared: bool = False,
    ) -> Iterator[None]:
        """Hold lock ``name`` (exclusively, or shared with other shared holders),
        waiting (bounded) for conflicting holders to finish."""
        lease = self._acquire(name, what, timeout, on_wait, shared)
        try:
            yield
        except BaseException:
            lost = lease.release()
            if lost:
                _log.error("lock %s was lost while held: %s", name, lost)
            raise
        lost = lease.release()
        if lost:
            raise ProviderError(
                f"lost the lock {name} while holding it ({lost}): another run may have "
                "overlapped this one, so its results may be disturbed; check the API server"
            )

    def run_active(self, namespace: str) -> bool:
        """True while the run that owns ``namespace`` still holds (renews) its lock."""
        lease = self._call(functools.partial(self._read, lease_name(f"run-{namespace}")))
        return lease is not None and not expired(lease)

    def sweep_run_locks(self, namespaces: Collection[str] | None = None) -> list[str]:
        """Delete the run Leases whose holders died (expired); only those of
        ``namespaces`` if given. Returns the namespaces swept. A full sweep
        (no ``namespaces``) also deletes the expired node Leases such holders
        left: an expired Lease is nobody's, and a new machine has none."""
        swept = []
        if namespaces is None:
            for lease in self._call(functools.partial(self._list, f"{MANAGED_BY}={KFS}")):
                lock = (lease.metadata.annotations or {}).get(NAME_ANNOTATION, "")
                if not lock.startswith("run-") and expired(lease):
                    self._call(functools.partial(self.delete, lease))
        for lease in self._call(functools.partial(self._list, f"{MODE_LABEL}={EXCLUSIVE}")):
            lock = (lease.metadata.annotations or {}).get(NAME_ANNOTATION, "")
            if not lock.startswith("run-"):
                continue
            namespace = lock[len("run-") :]
            if namespaces is not None and namespace not in namespaces:
                continue
            if expired(lease) and self._call(functools.partial(self.delete, lease)):
                swept.append(namespace)
        return sorted(swept)

    # -- acquiring ----------------------------------------------------------------
    def _acquire(
        self,
        name: str,
        what: str,
        timeout: float,
        on_wait: Callable[[str], None] | None,
        shared: bool,
    ) -> _Held:
        holder_id = secrets.token_hex(4)
        identity = f"{socket.gethostname()}/{os.getpid()}/{holder_id}"
        mine: list[_Held] = []  # the exclusive Lease, once created, while readers leave

        def attempt() -> _Held | None:
            if shared:
                return self._try_shared(name, holder_id, identity)
            if not mine:
                lease = self._take(lease_name(name), name, EXCLUSIVE, identity)
                if lease is None:
                    return None
                mine.append(_Held(self, lease))
            return mine[0] if not self._live_shared(name) else None

        try:
            try:
                got = self._call(attempt)
            except TransientError:
                got = None
            if got is None:
                if on_wait is not None:
                    on_wait(f"waiting for {what}")
                got = wait_for(
                    lambda: self._call(attempt), what=what, timeout=timeout, interval=self.poll
                )
        except BaseException:
            for held in mine:  # a writer that gave up lets readers in again
                held.release()
            raise
        return got

    def _try_shared(self, name: str, holder_id: str, identity: str) -> _Held | None:
        own = self.api.create_namespaced_lease(
            self.namespace,
            self._body(shared_lease_name(name, holder_id), name, SHARED, identity),
            _request_timeout=self.request_timeout,
        )
        try:
            writer = self._read(lease_name(name))
            if writer is not None and expired(writer):
                self.delete(writer)  # its holder died; a taker's replace wins over this
                writer = None
        except BaseException:
            with contextlib.suppress(ApiException, urllib3.exceptions.HTTPError, OSError):
                self.delete(own)
            raise
        if writer is None:
            return _Held(self, own)
        self.delete(own)
        return None

    def _take(self, lease: str, lock: str, mode: str, identity: str) -> Any | None:
        """Create Lease ``lease``, or take it over if its holder is gone; None if held."""
        body = self._body(lease, lock, mode, identity)
        try:
            return self.api.create_namespaced_lease(
                self.namespace, body, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = self._read(lease)
        if current is None or not expired(current):
            return None  # just released (create again next time), or held
        body.metadata.resource_version = current.metadata.resource_version
        body.spec.lease_transitions = (current.spec.lease_transitions or 0) + 1
        try:
            return self.api.replace_namespaced_lease(
                lease, self.namespace, body, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # another taker was first
                return None
            raise

    def _live_shared(self, lock: str) -> list[Any]:
        live = []
        for lease in self._list(f"{LOCK_LABEL}={dns_name(lock)},{MODE_LABEL}={SHARED}"):
            if (lease.metadata.annotations or {}).get(NAME_ANNOTATION) != lock:
                continue
            if expired(lease):
                self.delete(lease)  # a reader that died: tidy up
            else:
                live.append(lease)
        return live

    # -- API calls ----------------------------------------------------------------
    def _body(self, name: str, lock: str, mode: str, identity: str) -> Any:
        now = _now()
        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={MANAGED_BY: KFS, LOCK_LABEL: dns_name(lock), MODE_LABEL: mode},
                annotations={NAME_ANNOTATION: lock},
            ),
            spec=client.V1LeaseSpec(
                holder_identity=identity,
                lease_duration_seconds=self.duration,
                acquire_time=now,
                renew_time=now,
            ),
        )

    def _read(self, name: str) -> Any | None:
        try:
            return self.api.read_namespaced_lease(
                name, self.namespace, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _list(self, selector: str) -> list[Any]:
        return list(
            self.api.list_namespaced_lease(
                self.namespace,
                label_selector=f"{MANAGED_BY}={KFS},{selector}",
                _request_timeout=self.request_timeout,
            ).items
        )

    def delete(self, lease: Any) -> bool:
        """Delete ``lease`` as read (a precondition on its resourceVersion); False if
        it was changed or deleted meanwhile."""
        options = client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=lease.metadata.resource_version)
        )
        try:
            self.api.delete_namespaced_lease(
                lease.metadata.name,
                self.namespace,
                body=options,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def _call(self, fn: Callable[[], T]) -> T:
        """Run API calls: a retryable refusal becomes TransientError (waits retry
        it), an API server that does not answer ClusterUnreachableError."""
        try:
            return fn()
        except ApiException as exc:
            if is_transient(exc):
                raise TransientError(f"lock Leases: {exc.status} {exc.reason}") from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ClusterUnreachableError(
                f"the API server that keeps the lock Leases does not answer: {exc}"
            ) from exc
