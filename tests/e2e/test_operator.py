"""The RedisFailover operator against the real cluster: it must survive its own death.

The operator keeps no memory: every decision is derived from the pods, their
labels and what each Redis answers. These tests kill it (SIGKILL) at several
points of a safe rollout, and also hand it the exact half-finished state that
a kill in the middle of a failover leaves, and check that the result is still
correct: one master, every instance current and holding every key.

Runs in its own namespace with its own namespace-scoped operator process, so
it can share the cluster with scenario runs (local provider only: the operator
runs on the host and talks to pod IPs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.core.wait import wait_for
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.operator import redis_failover as rf
from failure_stories.operator import runtime as operator_runtime
from failure_stories.providers.base import Provider
from failure_stories.providers.kube import Kube

pytestmark = pytest.mark.e2e

KEYS = 50_000
NAME = "store"


@pytest.fixture
def operator(
    kfs_provider: Provider, kube: Kube, namespace: str, tmp_path: Path
) -> Iterator[operator_runtime.HostOperator]:
    if kfs_provider.name != "local":
        pytest.skip("the operator runs as a host process on the local provider only")
    operator_runtime.ensure_crds(kube)
    op = operator_runtime.HostOperator(
        kube.kubeconfig, tmp_path / "operator", name=f"e2e-{namespace}", namespaces=(namespace,)
    )
    op.start()
    yield op
    op.stop()
    print(f"operator log: {op.log_path}")


def _custom(kube: Kube) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube.api)


def _get(kube: Kube, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = _custom(kube).get_namespaced_custom_object(
        rf.GROUP, rf.VERSION, namespace, rf.PLURAL, NAME
    )
    return obj


def _apply(kube: Kube, namespace: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": f"{rf.GROUP}/{rf.VERSION}",
        "kind": rf.KIND,
        "metadata": {"name": NAME},
        "spec": {"image": TOOLBOX_IMAGE, **spec},
    }
    kube.apply([body], namespace)


def _converged(kube: Kube, namespace: str) -> dict[str, Any] | None:
    obj = _get(kube, namespace)
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c["type"] == "Ready"), {})
    if (
        ready.get("status") == "True"
        and ready.get("observedGeneration") == (obj["metadata"]["generation"])
    ):
        return obj
    return None


def _pods(kube: Kube, namespace: str) -> list[Any]:
    return [
        p
        for p in kube.pods(namespace, f"{rf.LABEL_OWNER}={NAME}")
        if p.metadata.deletion_timestamp is None
    ]


def _redis(kube: Kube, namespace: str, pod: str, *args: str) -> str:
    code, out, err = kube.exec(namespace, pod, ["redis-cli", *args])
    assert code == 0, f"redis-cli {' '.join(args)} in {pod}: {err}"
    return out.strip()


def _info(kube: Kube, namespace: str, pod: str) -> rf.RedisState:
    return rf.RedisState.from_info(rf.parse_info(_redis(kube, namespace, pod, "info")))


def _fill(kube: Kube, namespace: str, pod: str) -> None:
    fill = f"python3 /opt/kfs/workloads/redis_fill.py --keys {KEYS} | redis-cli --pipe"
    code, out, err = kube.exec(namespace, pod, ["sh", "-c", fill])
    assert code == 0 and f"replies: {KEYS}" in out, err or out


def _assert_correct(kube: Kube, namespace: str, replicas: int) -> None:
    """One master, every pod current, every replica following it with every key."""
    obj = wait_for(
        lambda: _converged(kube, namespace), what="the rollout converged", timeout=180, interval=1
    )
    spec = rf.parse_spec(obj["spec"], TOOLBOX_IMAGE)

    def all_synced() -> bool:
        pods = _pods(kube, namespace)
        masters = [p for p in pods if p.metadata.labels[rf.LABEL_ROLE] == rf.ROLE_MASTER]
        if len(pods) != replicas or len(masters) != 1:
            return False
        states = {p.metadata.name: _info(kube, namespace, p.metadata.name) for p in pods}
        ip = masters[0].status.pod_ip
        return all(
            rf.is_synced(s) and s.master_host == ip
            for n, s in states.items()
            if n != masters[0].metadata.name
        )

    wait_for(all_synced, what="every replica synced with the one master", timeout=90, interval=1)
    pods = _pods(kube, namespace)
    master = next(p for p in pods if p.metadata.labels[rf.LABEL_ROLE] == rf.ROLE_MASTER)
    assert _get(kube, namespace)["status"]["master"] == master.metadata.name
    assert {p.metadata.labels[rf.LABEL_HASH] for p in pods} == {spec.template_hash}
    keys = {p.metadata.name: _info(kube, namespace, p.metadata.name).keys for p in pods}
    assert set(keys.values()) == {KEYS}, keys
    failovers = _get(kube, namespace)["status"].get("failovers") or []
    assert all(f["synced"] for f in failovers), json.dumps(failovers, indent=1)


def test_operator_killed_during_a_safe_rollout_still_ends_correct(
    operator: operator_runtime.HostOperator, kube: Kube, namespace: str
) -> None:
    _apply(kube, namespace, {"replicas": 1, "memory": "128Mi", "safety": "safe"})
    obj = wait_for(lambda: _converged(kube, namespace), what="baseline", timeout=90, interval=1)
    _fill(kube, namespace, obj["status"]["master"])

    # The Flant edit, under the safe policy.
    _apply(kube, namespace, {"replicas": 3, "memory": "96Mi", "safety": "safe"})

    def replicas_created() -> bool:
        return len(_pods(kube, namespace)) == 3

    def a_replica_synced() -> bool:
        return any(
            rf.ANN_SYNCED_TO in (p.metadata.annotations or {}) for p in _pods(kube, namespace)
        )

    first_master = obj["status"]["master"]

    def failed_over() -> bool:
        # Seen on the pods, as the operator itself derives it: a kill between a
        # promotion and its status record leaves the promotion unrecorded.
        if (_get(kube, namespace).get("status") or {}).get("failovers"):
            return True
        masters = [
            p.metadata.name
            for p in _pods(kube, namespace)
            if p.metadata.labels.get(rf.LABEL_ROLE) == rf.ROLE_MASTER
        ]
        return bool(masters) and first_master not in masters

    crashes = 0
    for stage, reached in (
        ("new replicas created", replicas_created),
        ("a replica synced", a_replica_synced),
        ("the master failed over", failed_over),
    ):
        wait_for(reached, what=stage, timeout=120, interval=0.2)
        operator.crash()
        crashes += 1
        operator.start()
    assert crashes == 3
    _assert_correct(kube, namespace, replicas=3)


def test_operator_restarted_in_the_middle_of_a_failover_converges(
    operator: operator_runtime.HostOperator, kube: Kube, namespace: str
) -> None:
    """Build by hand the state a kill between "promote" and "relabel" leaves behind."""
    _apply(kube, namespace, {"replicas": 3, "memory": "128Mi", "safety": "safe"})
    obj = wait_for(lambda: _converged(kube, namespace), what="3 instances", timeout=120, interval=1)
    master = obj["status"]["master"]
    _fill(kube, namespace, master)
    wait_for(
        lambda: all(
            _info(kube, namespace, p.metadata.name).keys == KEYS for p in _pods(kube, namespace)
        ),
        what="the keys on every replica",
        timeout=60,
        interval=1,
    )
    operator.crash()
    target = next(p.metadata.name for p in _pods(kube, namespace) if p.metadata.name != master)
    # Half a failover: the replica is promoted and labelled with a newer epoch,
    # the old master still carries its label and is still a writable master.
    _redis(kube, namespace, target, "replicaof", "no", "one")
    kube.core.patch_namespaced_pod(
        target,
        namespace,
        {
            "metadata": {
                "labels": {rf.LABEL_ROLE: rf.ROLE_MASTER},
                "annotations": {rf.ANN_EPOCH: "9"},
            }
        },
    )
    masters = [
        p for p in _pods(kube, namespace) if p.metadata.labels[rf.LABEL_ROLE] == rf.ROLE_MASTER
    ]
    assert len(masters) == 2
    operator.start()
    _assert_correct(kube, namespace, replicas=3)
    assert _get(kube, namespace)["status"]["master"] == target


def test_invalid_spec_is_reported_and_nothing_is_created(
    operator: operator_runtime.HostOperator, kube: Kube, namespace: str
) -> None:
    _apply(kube, namespace, {"replicas": 1, "memory": "12 apples", "safety": "safe"})

    def reported() -> bool:
        conditions = (_get(kube, namespace).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["reason"] == "InvalidSpec" for c in conditions)

    wait_for(reported, what="the InvalidSpec condition", timeout=60, interval=0.5)
    events = kube.core.list_namespaced_event(namespace).items
    assert any(e.reason == "InvalidSpec" and "quantity" in e.message for e in events)
    assert _pods(kube, namespace) == []
    try:
        kube.core.read_namespaced_service(rf.master_service_name(NAME), namespace)
    except ApiException as exc:
        assert exc.status == 404
    else:
        pytest.fail("a Service was created for an invalid spec")
