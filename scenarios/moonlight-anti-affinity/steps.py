"""Moonlight 2019: replicas stacked on one node, then that node fails."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from kubernetes.utils import parse_quantity

from failure_stories import (
    SIMULATED_NODE_LABEL,
    RunContext,
    ScenarioDefinitionError,
    sample,
    wait_for,
    watch,
)

WEB = "app=web"
# Room left on each busy node: two web replicas (250m each), so anti-affinity
# has somewhere to go while the scheduler still prefers the "idle" node.
ROOM_MILLICPU = 500
# After the controller marks the node NotReady, watch this long for recovery.
HOLD_SECONDS = 5.0
# How long a window waits for the controller to notice the failed node (8 s grace
# period here): a node never marked NotReady is measured as such, not an error.
NOTICE_WITHIN_SECONDS = 60.0


def _millicpu(quantity: str) -> int:
    return int(parse_quantity(quantity) * 1000)


def setup(ctx: RunContext) -> None:
    nodes = sorted(
        ctx.kube.core.list_node(label_selector=f"{SIMULATED_NODE_LABEL}=true").items,
        key=lambda n: n.metadata.name,
    )
    if len(nodes) < 3:
        raise ScenarioDefinitionError(
            f"needs 3 schedulable nodes labelled {SIMULATED_NODE_LABEL}=true, found {len(nodes)}"
        )
    a, b, c = nodes[:3]
    # The provider does not wait for simulated nodes on a warm cluster; with the
    # node lock held, only a run that has just reverted its fault can be behind one.
    names = [n.metadata.name for n in (a, b, c)]
    wait_for(
        lambda: all(ctx.kube.node_ready(n) for n in names),
        what=f"nodes {', '.join(names)} Ready",
        timeout=90,
    )
    cpu = min(_millicpu(n.status.allocatable["cpu"]) for n in (b, c))
    ctx.variables.update(
        NODE_A=a.metadata.name,
        NODE_B=b.metadata.name,
        NODE_C=c.metadata.name,
        BATCH_CPU=f"{cpu - ROOM_MILLICPU}m",
    )
    ctx.apply("baseline.yaml")
    ctx.kube.wait_rollout(ctx.namespace, "web")
    _wait_all_behind_service(ctx)


def _wait_all_behind_service(ctx: RunContext) -> None:
    # A finished rollout is not yet a full Service: the EndpointSlice follows
    # the pods' readiness a moment later (longer on a busy node; once in the
    # bench, steady state saw 2 of 3 endpoints right after the rollout).
    replicas = ctx.kube.apps.read_namespaced_deployment("web", ctx.namespace).spec.replicas
    wait_for(
        lambda: ctx.kube.ready_endpoints(ctx.namespace, "web") >= replicas,
        what=f"all {replicas} web replicas behind the Service",
        timeout=60,
    )


def _placement(ctx: RunContext) -> Counter[str]:
    pods = [p for p in ctx.kube.pods(ctx.namespace, WEB) if p.metadata.deletion_timestamp is None]
    return Counter(p.spec.node_name for p in pods)


def steady_state(ctx: RunContext) -> dict[str, float]:
    placement = _placement(ctx)
    ctx.log(f"web replicas per node: {dict(placement)}")
    ready = ctx.kube.ready_endpoints(ctx.namespace, "web")
    ctx.record("ready_endpoints", ready)
    return {"ready_endpoints": ready, "distinct_nodes": len(placement)}


def _restore(ctx: RunContext, node: str) -> None:
    ctx.node_failure.start_node(node)
    wait_for(lambda: ctx.kube.node_ready(node), what=f"node {node} Ready again", timeout=60)


class Outage:
    """Ready endpoints sampled every ``every`` seconds: the fewest seen, and the
    time with none at all (each empty sample stands for one interval)."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.samples: list[int] = []

    def observe(self, ready: int) -> None:
        self.samples.append(ready)

    @property
    def fewest(self) -> int:
        return min(self.samples) if self.samples else 0

    @property
    def seconds(self) -> float:
        return round(sum(1 for r in self.samples if r == 0) * self.every, 2)


def _watch_failure(ctx: RunContext) -> dict[str, float]:
    """Fail the node holding most replicas (the event) and sample the Service's
    ready endpoints until the node is NotReady, then a bit more."""
    every = 0.25
    outage = Outage(every)
    seen: dict[str, Any] = {"not_ready_at": None}
    with ctx.expose():
        node = ctx.state["failed_node"]

        def probe() -> None:
            ready = ctx.kube.ready_endpoints(ctx.namespace, "web")
            ctx.record("ready_endpoints", ready)
            outage.observe(ready)
            if seen["not_ready_at"] is None and not ctx.kube.node_ready(node):
                seen["not_ready_at"] = time.monotonic()

        def noticed_and_held() -> bool:
            probe()
            at = seen["not_ready_at"]
            return at is not None and time.monotonic() - at >= HOLD_SECONDS

        if not watch(
            noticed_and_held,
            every=every,
            within=NOTICE_WITHIN_SECONDS,
            what=f"the control plane to notice node {node} is down",
        ):
            ctx.log(f"node {node} was not marked NotReady within {NOTICE_WITHIN_SECONDS:g}s")
        # Endpoint removal lags the node condition by a controller sync; keep sampling
        # at the same cadence so fault and fix are observed over equal windows.
        sample(probe, every=every, duration=2.0, what="endpoints after the failure")
    at = seen["not_ready_at"]
    return {
        "distinct_nodes": len(ctx.state["placement"]),
        "ready_endpoints_min_during_node_failure": outage.fewest,
        "outage_seconds": outage.seconds,
        "node_not_ready_after_seconds": -1.0
        if at is None
        else round(at - ctx.state["failed_at"], 2),
    }


def inject(ctx: RunContext) -> None:
    """The latent fault: a node that looks empty to the scheduler (a CPU hog without
    requests) beside nodes full of requests, and web redeployed into that cluster."""
    ctx.apply("fault.yaml")
    for name in ("cpu-hog", "batch-b", "batch-c"):
        ctx.kube.wait_rollout(ctx.namespace, name)
    restarted = {"kfs.dev/redeployed-at": str(time.time())}
    ctx.kube.apps.patch_namespaced_deployment(
        "web", ctx.namespace, {"spec": {"template": {"metadata": {"annotations": restarted}}}}
    )
    ctx.kube.wait_rollout(ctx.namespace, "web", timeout=180)
    _wait_all_behind_service(ctx)
    ctx.log(f"web replicas per node: {dict(_placement(ctx))}")


def expose(ctx: RunContext) -> Iterator[None]:
    """The event: the node holding most web replicas stops heartbeating, as a
    panicked machine does; it comes back when the window ends."""
    placement = _placement(ctx)
    node = placement.most_common(1)[0][0]
    ctx.state.update(placement=placement, failed_node=node, failed_at=time.monotonic())
    ctx.log(f"failing node {node} (holds {placement[node]} of {sum(placement.values())} replicas)")
    ctx.defer(f"restore node {node}", lambda: _restore(ctx, node))
    ctx.node_failure.stop_node(node)
    yield
    _restore(ctx, node)


def symptom(ctx: RunContext) -> dict[str, float]:
    return _watch_failure(ctx)


def mitigate(ctx: RunContext) -> None:
    ctx.apply("mitigation.yaml")
    ctx.kube.wait_rollout(ctx.namespace, "web", timeout=180)
    _wait_all_behind_service(ctx)
    ctx.log(f"web replicas per node: {dict(_placement(ctx))}")


def verify(ctx: RunContext) -> dict[str, float]:
    return _watch_failure(ctx)
