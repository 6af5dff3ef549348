"""Run and node locks as Leases (providers.leases), against the running local
cluster's real API server: what two CI machines sharing a cluster rely on.

Connects to the cluster that is already up (no session fixture brings one up
or down); Leases are short (DURATION) so expiry is seen in seconds, and every
lock name carries a random token, so runs of this file never meet."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from failure_stories.core.errors import ProviderError, WaitTimeout
from failure_stories.core.wait import sample, wait_for
from failure_stories.providers.kube import KFS, MANAGED_BY, Kube
from failure_stories.providers.leases import (
    LOCK_LABEL,
    MODE_LABEL,
    NAME_ANNOTATION,
    NAMESPACE,
    LeaseLocks,
    lease_name,
)

DURATION = 3  # seconds; renewed every second
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def cluster() -> Kube:
    from failure_stories.providers.local import LocalProvider

    kube = Kube(LocalProvider().kubeconfig)
    kube.ping()
    return kube


@pytest.fixture
def locks(cluster: Kube) -> LeaseLocks:
    return LeaseLocks(cluster, duration=DURATION, poll=0.2)


def _ours(cluster: Kube, token: str) -> list[Any]:
    """Every kfs Lease in default whose lock name carries ``token``."""
    leases = client.CoordinationV1Api(cluster.api).list_namespaced_lease(
        NAMESPACE, label_selector=f"{MANAGED_BY}={KFS}"
    )
    return [
        lease
        for lease in leases.items
        if token in (lease.metadata.annotations or {}).get(NAME_ANNOTATION, "")
    ]


@pytest.fixture
def token(cluster: Kube) -> Iterator[str]:
    """A random part for this test's lock names; whatever a failed test left goes."""
    token = f"e2e{secrets.token_hex(3)}"
    yield token
    api = client.CoordinationV1Api(cluster.api)
    for lease in _ours(cluster, token):
        api.delete_namespaced_lease(lease.metadata.name, NAMESPACE)


def _in_thread(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_exclusive_excludes_exclusive_and_the_waiter_gets_it_after_release(
    locks: LeaseLocks, cluster: Kube, token: str
) -> None:
    name = f"node-{token}"
    release = threading.Event()
    acquired: dict[str, float] = {}
    waits: list[str] = []

    def first() -> None:
        with locks.held(name, "first"):
            acquired["first"] = time.monotonic()
            release.wait(30)
            acquired["released"] = time.monotonic()

    def second() -> None:
        with locks.held(name, "the first holder", timeout=30, on_wait=waits.append):
            acquired["second"] = time.monotonic()

    holder = _in_thread(first)
    wait_for(lambda: "first" in acquired, what="the first holder", timeout=10, interval=0.1)

    start = time.monotonic()
    with pytest.raises(WaitTimeout, match="the busy lock"), locks.held(name, "the busy lock", 1):
        pass
    assert time.monotonic() - start < 5

    waiter = _in_thread(second)
    wait_for(lambda: waits, what="the second holder to wait", timeout=10, interval=0.1)
    assert waits == ["waiting for the first holder"] and "second" not in acquired
    release.set()
    holder.join(10)
    waiter.join(10)
    assert acquired["released"] <= acquired["second"]
    assert _ours(cluster, token) == []


def test_shared_holders_coexist(locks: LeaseLocks, cluster: Kube, token: str) -> None:
    name = f"node-{token}"
    waits: list[str] = []
    with (
        locks.held(name, "a", shared=True, timeout=2, on_wait=waits.append),
        locks.held(name, "b", shared=True, timeout=2, on_wait=waits.append),
    ):
        held = _ours(cluster, token)
        assert waits == []
        assert len(held) == 2
        assert all(lease.metadata.labels[MODE_LABEL] == "shared" for lease in held)
        assert all(lease.metadata.name.startswith(f"kfs-{name}-shared-") for lease in held)
    assert _ours(cluster, token) == []


def test_exclusive_holder_keeps_shared_ones_out(
    locks: LeaseLocks, cluster: Kube, token: str
) -> None:
    name = f"node-{token}"
    with locks.held(name, "writer"):
        with (
            pytest.raises(WaitTimeout, match="the writer to end"),
            locks.held(name, "the writer to end", timeout=1.5, shared=True),
        ):
            pass
        # The reader that gave up took its own Lease away again.
        assert [lease.metadata.name for lease in _ours(cluster, token)] == [lease_name(name)]
    with locks.held(name, "free now", timeout=2, shared=True):
        pass
    assert _ours(cluster, token) == []


def test_shared_holder_keeps_an_exclusive_one_out_until_it_ends(
    locks: LeaseLocks, cluster: Kube, token: str
) -> None:
    name = f"node-{token}"
    with locks.held(name, "reader", shared=True):
        with (
            pytest.raises(WaitTimeout, match="the readers to end"),
            locks.held(name, "the readers to end", timeout=1.5),
        ):
            pass
        # The writer that gave up lets readers in again at once.
        with locks.held(name, "another reader", timeout=1, shared=True):
            pass

    release = threading.Event()
    order: list[str] = []

    def reader() -> None:
        with locks.held(name, "reader", shared=True):
            order.append("reader in")
            release.wait(30)
            order.append("reader out")

    thread = _in_thread(reader)
    wait_for(lambda: order, what="the reader", timeout=10, interval=0.1)
    threading.Timer(1.0, release.set).start()
    with locks.held(name, "the reader to end", timeout=15):
        order.append("writer in")
        # A writer waiting or holding keeps new readers out.
        with pytest.raises(WaitTimeout), locks.held(name, "the writer", timeout=1, shared=True):
            pass
    thread.join(10)
    assert order == ["reader in", "reader out", "writer in"]
    assert _ours(cluster, token) == []


def test_a_holder_renews_its_lease_while_it_holds_it(
    locks: LeaseLocks, cluster: Kube, token: str
) -> None:
    namespace = f"kfs-{token}"
    with locks.held(f"run-{namespace}", "the run"):
        # Three durations: expired long ago were it not renewed.
        sample(lambda: _check(locks.run_active(namespace)), every=0.5, duration=3 * DURATION)
    assert not locks.run_active(namespace)
    assert _ours(cluster, token) == []


def _check(ok: bool) -> None:
    assert ok


def test_a_holder_keeps_renewing_while_the_same_cluster_client_streams_an_exec(
    cluster: Kube, namespace: str, token: str
) -> None:
    """A story's `kubectl exec` (kubernetes.stream) outlasting a Lease's duration,
    on the same Kube the locks were made from: the renewals go on meanwhile.
    (On kind, during Flant's execs, a renewal through the Kube's own client once
    failed with "Handshake status 200 OK": a stream swaps its client's request
    method for a websocket while it connects. Leases now use a client of their
    own. This test guards renewal during an exec; it did not reproduce that race
    with the shared client either, so it is no proof of the cause.)"""
    from failure_stories.providers.base import toolbox_pod

    # On the real node: a simulated (kwok) node has no address to exec through.
    pod = toolbox_pod("sleeper", grace_seconds=0)
    cluster.core.create_namespaced_pod(namespace, pod)
    cluster.wait_pod_running(namespace, "sleeper", timeout=90)
    locks = LeaseLocks(cluster, duration=DURATION, poll=0.2)
    name = f"run-kfs-{token}"
    with locks.held(name, "the run"):
        before = _ours(cluster, token)[0].spec.renew_time
        code, _out, err = cluster.exec(namespace, "sleeper", ["sleep", str(2 * DURATION)])
        assert code == 0, err
        after = _ours(cluster, token)[0].spec.renew_time
    # Renewed during the exec (every DURATION/3 s), and never lost: a lost lock
    # raises on release.
    assert (after - before).total_seconds() >= DURATION, (before, after)
    assert _ours(cluster, token) == []


def _killable_holder(cluster: Kube, names: list[str], shared: str) -> subprocess.Popen[str]:
    """A python process that takes ``names`` exclusively and ``shared`` shared, then sleeps."""
    code = textwrap.dedent(
        f"""
        import contextlib, time
        from pathlib import Path
        from failure_stories.providers.kube import Kube
        from failure_stories.providers.leases import LeaseLocks
        locks = LeaseLocks(Kube(Path({str(cluster.kubeconfig)!r})), duration={DURATION})
        with contextlib.ExitStack() as stack:
            for name in {names!r}:
                stack.enter_context(locks.held(name, name, timeout=10))
            stack.enter_context(locks.held({shared!r}, "shared", timeout=10, shared=True))
            print("held", flush=True)
            time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )


def test_a_killed_holder_stays_active_until_its_lease_expires_then_is_taken_over(
    locks: LeaseLocks, cluster: Kube, token: str
) -> None:
    taken, swept, node = f"kfs-{token}-a", f"kfs-{token}-b", f"node-{token}"
    child = _killable_holder(cluster, [f"run-{taken}", f"run-{swept}"], node)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        assert locks.run_active(taken) and locks.run_active(swept)
        assert locks.sweep_run_locks({taken, swept}) == []  # live: kept
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        assert locks.run_active(taken)  # nothing released it: it must expire
        wait_for(
            lambda: not locks.run_active(taken),
            what="the killed holder's lease to expire",
            timeout=DURATION + 5,
            interval=0.1,
        )
        # Last renewed at most a third of the duration before the kill.
        assert time.monotonic() - killed >= DURATION * 2 / 3 - 0.5
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)

    assert locks.sweep_run_locks({f"kfs-{token}-other"}) == []  # only the ones named
    # Each lease is renewed on its own: the second may expire up to a renewal later.
    wait_for(
        lambda: not locks.run_active(swept),
        what="the killed holder's second lease to expire",
        timeout=DURATION + 5,
        interval=0.1,
    )
    assert locks.sweep_run_locks({swept}) == [swept]
    assert not any(
        lease.metadata.name == lease_name(f"run-{swept}") for lease in _ours(cluster, token)
    )

    with locks.held(f"run-{taken}", "the dead holder's lease", timeout=2):
        (lease,) = [
            x for x in _ours(cluster, token) if x.metadata.name == lease_name(f"run-{taken}")
        ]
        assert lease.spec.holder_identity.startswith(f"{os.uname().nodename}/{os.getpid()}/")
        assert lease.spec.lease_transitions == 1  # taken over, not created anew
        assert locks.run_active(taken)
    # The dead reader's Lease expired too: a writer gets the node lock and tidies it.
    with locks.held(node, "the dead reader", timeout=2):
        assert [x.metadata.name for x in _ours(cluster, token)] == [lease_name(node)]
    assert _ours(cluster, token) == []


def test_leases_carry_the_kfs_labels_and_are_deleted_on_release(
    locks: LeaseLocks, cluster: Kube, token: str
) -> None:
    with locks.held(f"run-kfs-{token}", "run"), locks.held(f"node-{token}", "n", shared=True):
        held = {lease.metadata.name: lease for lease in _ours(cluster, token)}
        run = held.pop(lease_name(f"run-kfs-{token}"))
        (shared,) = held.values()
        for lease in (run, shared):
            assert lease.metadata.labels[MANAGED_BY] == KFS
            assert lease.spec.lease_duration_seconds == DURATION
            assert lease.spec.holder_identity.count("/") == 2
        assert run.metadata.labels[LOCK_LABEL] == f"run-kfs-{token}"
        assert run.metadata.labels[MODE_LABEL] == "exclusive"
        assert shared.metadata.labels[LOCK_LABEL] == f"node-{token}"
    assert _ours(cluster, token) == []


def test_a_lease_lost_while_held_is_raised_on_release(
    locks: LeaseLocks, cluster: Kube, token: str
) -> None:
    name = f"node-{token}"
    with pytest.raises(ProviderError, match=f"lost the lock {name}"), locks.held(name, "x"):
        client.CoordinationV1Api(cluster.api).delete_namespaced_lease(lease_name(name), NAMESPACE)


def test_a_holder_that_cannot_renew_for_its_duration_says_so_on_release(
    cluster: Kube, token: str
) -> None:
    from failure_stories.providers.local import LocalProvider

    kube = Kube(LocalProvider().kubeconfig)  # its own connection, to cut
    locks = LeaseLocks(kube, duration=DURATION, poll=0.2)
    name = f"node-{token}"
    with pytest.raises(ProviderError, match="not renewed"), locks.held(name, "x"):
        real = kube.api.configuration.host
        kube.api.configuration.host = "https://127.0.0.1:9"  # nothing answers there
        try:
            wait_for(
                lambda: _expired_now(cluster, name),
                what="the unrenewed lease to expire",
                timeout=DURATION + 5,
                interval=0.2,
            )
        finally:
            kube.api.configuration.host = real
    assert _ours(cluster, token) == []


def _expired_now(cluster: Kube, name: str) -> bool:
    from failure_stories.providers.leases import expired

    lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(lease_name(name), NAMESPACE)
    return expired(lease)


def test_mixed_holders_never_overlap_a_writer(locks: LeaseLocks, token: str) -> None:
    name = f"node-{token}"
    guard = threading.Lock()
    inside = {"readers": 0, "writers": 0}
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def worker(shared: bool) -> None:
        try:
            for _ in range(3):
                with locks.held(name, "the others", timeout=60, shared=shared):
                    with guard:
                        inside["readers" if shared else "writers"] += 1
                        seen.append((inside["readers"], inside["writers"]))
                    time.sleep(0.2)  # hold it a moment, so holders meet
                    with guard:
                        inside["readers" if shared else "writers"] -= 1
        except BaseException as exc:
            errors.append(exc)

    threads = [_in_thread(lambda s=i % 2 == 0: worker(s)) for i in range(6)]
    for thread in threads:
        thread.join(90)
    assert errors == []
    assert len(seen) == 18
    assert all(w == 0 or (w == 1 and r == 0) for r, w in seen), seen
    assert any(r > 1 for r, _ in seen)  # readers did share it


def test_cleanup_keeps_a_run_whose_lease_is_live_and_reverts_it_once_released(
    cluster: Kube,
) -> None:
    """`kfs cleanup` on a provider that keeps its locks as Leases (kind, existing):
    the local cluster's connection with the default Provider.locks()."""
    from failure_stories.providers.base import Provider
    from failure_stories.providers.local import LocalProvider
    from failure_stories.run import cleanup

    class SharedCluster(LocalProvider):
        locks = Provider.locks  # as kind and existing do

    provider = SharedCluster()
    assert isinstance(provider.locks(), LeaseLocks)
    namespace = cluster.create_namespace("e2e-leases")
    try:
        with provider.locks().held(f"run-{namespace}", "the run"):
            done = cleanup.revert_run(provider, [namespace], node_level=False)
            assert f"kept namespace {namespace}: its run is in progress" in done
            assert not cluster.namespace_gone(namespace)
        done = cleanup.revert_run(provider, [namespace], node_level=False)
        assert f"deleted namespace {namespace}" in done
    finally:
        cluster.delete_namespace(namespace)
    assert not LeaseLocks(cluster).run_active(namespace)
