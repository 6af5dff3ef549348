"""Flant 2019: a Redis operator promotes a replica that never synced, and the data is gone."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shlex
import time
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories import (
    RunContext,
    RunError,
    TransientError,
    WaitTimeout,
    sample,
    start_operator,
    wait_for,
)
from failure_stories import redis_failover as rf

KEYS = 300_000
VALUE_BYTES = 100
NAME = "cache"
WRITER = "writer"
DATA_BASE = "/var/tmp/kfs-redis"
WORKLOADS = "/opt/kfs/workloads"
ROLLOUT_TIMEOUT = 240


# --------------------------------------------------------------------------- reads


def _custom(ctx: RunContext) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(ctx.kube.api)


def _object(ctx: RunContext) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = _custom(ctx).get_namespaced_custom_object(
            rf.GROUP, rf.VERSION, ctx.namespace, rf.PLURAL, NAME
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def _converged(ctx: RunContext) -> dict[str, Any] | None:
    """The RedisFailover once its operator reports Ready for the current generation."""
    obj = _object(ctx)
    if obj is None:
        return None
    generation = obj["metadata"].get("generation")
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready and ready.get("status") == "True" and ready.get("observedGeneration") == generation:
        return obj
    return None


def _pods(ctx: RunContext) -> list[Any]:
    return [
        p
        for p in ctx.kube.pods(ctx.namespace, f"{rf.LABEL_OWNER}={NAME}")
        if p.metadata.deletion_timestamp is None
    ]


def _redis(ctx: RunContext, host: str, *args: str, timeout: float = 30) -> str:
    """redis-cli from the writer pod (the client's point of view)."""
    try:
        code, out, err = ctx.kube.exec(
            ctx.namespace, WRITER, ["redis-cli", "-h", host, *args], timeout=timeout
        )
    except WaitTimeout as exc:  # a stuck exec stream: worth another try
        raise TransientError(str(exc)) from exc
    if code != 0 or out.startswith(("ERR", "LOADING", "Could not connect")):
        raise TransientError(f"redis-cli -h {host} {' '.join(args)}: {(err or out).strip()}")
    return out.strip()


def _keys(ctx: RunContext, host: str, timeout: float = 30) -> int:
    """Keys in database 0 (the dataset; the writer writes to database 1)."""
    text = _redis(ctx, host, "-n", "0", "dbsize", timeout=timeout)
    try:
        return int(text)
    except ValueError as exc:
        raise TransientError(f"dbsize on {host} answered {text!r}") from exc


def _service_ip(ctx: RunContext) -> str:
    svc = ctx.kube.core.read_namespaced_service(rf.master_service_name(NAME), ctx.namespace)
    return str(svc.spec.cluster_ip)


def _record_keys(ctx: RunContext) -> None:
    """One point of the plotted "keys" series: what a client sees on the master Service."""
    # No master behind the Service right now, or a slow exec: no point (the gap
    # shows in the plot), and never long enough to hold up the wait it sits in.
    with contextlib.suppress(TransientError, ApiException):
        ctx.record("keys", _keys(ctx, _service_ip(ctx), timeout=5))


# --------------------------------------------------------------------------- actions


def _rm_data(ctx: RunContext, node: str, path: str) -> None:
    ctx.node_shell.node_exec(node, ["rm", "-rf", path])
    ctx.node_shell.node_exec(node, ["rmdir", "--ignore-fail-on-non-empty", DATA_BASE], check=False)


def _delete_failover(ctx: RunContext) -> None:
    """Delete the RedisFailover; its pods and Service go with it (owner references)."""
    try:
        _custom(ctx).delete_namespaced_custom_object(
            rf.GROUP, rf.VERSION, ctx.namespace, rf.PLURAL, NAME
        )
    except ApiException as exc:
        if exc.status != 404:
            raise

    def gone() -> bool:
        services = ctx.kube.core.list_namespaced_service(
            ctx.namespace, label_selector=f"{rf.LABEL_OWNER}={NAME}"
        ).items
        everything = ctx.kube.pods(ctx.namespace, f"{rf.LABEL_OWNER}={NAME}")
        return _object(ctx) is None and not everything and not services

    wait_for(gone, what="the RedisFailover, its pods and Service deleted", timeout=120, interval=1)


def _create_baseline(ctx: RunContext, safety: str) -> None:
    """One master holding KEYS keys of VALUE_BYTES bytes, under the given policy,
    in data directories of its own (a later failover must not load its RDB files)."""
    created = ctx.state.get("created", 0) + 1
    ctx.state.update(created=created, safety=safety, edited=False)
    ctx.variables["DATA_DIR"] = f"{ctx.state['data_root']}/{created}"
    ctx.apply("baseline.yaml", SAFETY=safety)
    obj = wait_for(
        lambda: _converged(ctx), what=f"the {safety} baseline ready", timeout=120, interval=1
    )
    ctx.kube.wait_pod_running(ctx.namespace, WRITER)
    master = obj["status"]["master"]
    started = time.monotonic()
    fill = f"python3 {WORKLOADS}/redis_fill.py --keys {KEYS} --value-bytes {VALUE_BYTES}"
    code, out, err = ctx.kube.exec(
        ctx.namespace, master, ["sh", "-c", f"{fill} | redis-cli --pipe"], timeout=120
    )
    if code != 0 or f"errors: 0, replies: {KEYS}" not in out:
        raise RunError(f"filling {master} failed ({code}): {(err or out).strip()[-200:]}")
    ip = ctx.kube.core.read_namespaced_pod(master, ctx.namespace).status.pod_ip
    written = _keys(ctx, ip)
    if written != KEYS:
        raise RunError(f"{master} holds {written} keys after writing {KEYS}")
    ctx.state["keys_written"] = written
    ctx.log(f"{safety} baseline: {master} holds {written} keys ({time.monotonic() - started:.1f}s)")
    # A new Service is routable once kube-proxy programmed it.
    wait_for(
        lambda: _keys(ctx, _service_ip(ctx)) == written,
        what="the master Service answering",
        timeout=30,
    )
    ctx.record("keys", written)


def _start_writer(ctx: RunContext, tag: str) -> float:
    """Start the writer loop in the background; return the wall-clock start of the change."""
    out, stop = f"/tmp/writes-{tag}.jsonl", f"/tmp/writer-{tag}.stop"
    cmd = (
        f"nohup python3 {WORKLOADS}/redis_writer.py --host {_service_ip(ctx)} "
        f"--out {out} --stop-file {stop} >/dev/null 2>&1 </dev/null &"
    )
    code, _, err = ctx.kube.exec(ctx.namespace, WRITER, ["sh", "-c", cmd])
    if code != 0:
        raise RunError(f"cannot start the writer: {err.strip()}")
    ctx.state["writer"] = (out, stop)
    count = f"grep -c '\"ok\": true' {shlex.quote(out)} || true"

    def writing() -> bool:
        code, text, _ = ctx.kube.exec(ctx.namespace, WRITER, ["sh", "-c", count])
        return code == 0 and text.strip().isdigit() and int(text) >= 5

    wait_for(writing, what="the writer's first successful writes", timeout=30)
    return time.time()


def _stop_writer(ctx: RunContext, since: float, until: float) -> dict[str, Any]:
    out, stop = ctx.state["writer"]
    ctx.kube.exec(ctx.namespace, WRITER, ["touch", stop])
    code, text, err = ctx.kube.exec(
        ctx.namespace,
        WRITER,
        [
            "python3",
            f"{WORKLOADS}/redis_writer.py",
            "--summarize",
            out,
            "--since",
            str(since),
            "--until",
            str(until),
        ],
    )
    if code != 0:
        raise RunError(f"writer summary failed: {err.strip()[-200:]}")
    summary: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return summary


def _replicas_synced(ctx: RunContext) -> bool:
    """Every replica follows the labelled master with its link up and no sync running.

    Read from each Redis directly (not from the operator), so a naive operator
    that calls the rollout done early cannot make us count keys too soon.
    """
    pods = _pods(ctx)
    master = next((p for p in pods if p.metadata.labels.get(rf.LABEL_ROLE) == rf.ROLE_MASTER), None)
    if master is None or not master.status.pod_ip:
        return False
    for pod in pods:
        if pod is master or not pod.status.pod_ip:
            continue
        state = rf.RedisState.from_info(rf.parse_info(_redis(ctx, pod.status.pod_ip, "info")))
        if not rf.is_synced(state) or state.master_host != master.status.pod_ip:
            return False
    return True


def _rdb_keys_loaded(ctx: RunContext, pod: str) -> float:
    """Keys a pod loaded from its own RDB file at start (-1 if it loaded none)."""
    try:
        log = ctx.kube.core.read_namespaced_pod_log(pod, ctx.namespace, container="redis")
    except ApiException:
        return -1
    found = re.search(r"keys loaded: (\d+)", str(log))
    return float(found.group(1)) if found else -1


# --------------------------------------------------------------------------- the change


def _prepare_window(ctx: RunContext) -> None:
    """Each window edits a one-instance failover holding the dataset, under the
    policy in force: one that an earlier window edited is made again."""
    if ctx.state["edited"]:
        _delete_failover(ctx)
        _create_baseline(ctx, ctx.state["safety"])


def _measure_change(ctx: RunContext) -> dict[str, float]:
    """Start the writer, make the edit (the event), wait for the operator to finish
    it, then count what survived."""
    _prepare_window(ctx)
    # Its own writer files: a second window under one policy must not find the
    # first one's stop file.
    tag = f"{ctx.state['safety']}-{ctx.state['created']}"
    ctx.state["since"] = _start_writer(ctx, tag)
    ctx.expose()
    since = ctx.state["since"]

    def done() -> dict[str, Any] | None:
        _record_keys(ctx)
        return _converged(ctx)

    obj = wait_for(done, what=f"the {tag} rollout", timeout=ROLLOUT_TIMEOUT, interval=1)
    # When the operator declared the rollout done (its Ready condition turning
    # True), not when this loop happened to look.
    ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    rollout_seconds = dt.datetime.fromisoformat(ready["lastTransitionTime"]).timestamp() - since

    def synced() -> bool:
        _record_keys(ctx)
        return _replicas_synced(ctx)

    wait_for(
        synced,
        what="every replica synced with the new master",
        timeout=90,
        interval=1,
    )
    # A few more points for the plot, and time for kube-proxy to follow the label.
    sample(lambda: _record_keys(ctx), every=1, duration=3, what="keys after the rollout")
    writes = _stop_writer(ctx, since, time.time())

    status = obj.get("status") or {}
    failovers = status.get("failovers") or []
    pods = {p.metadata.name: p.status.pod_ip for p in _pods(ctx)}
    master = status["master"]
    on_master = _keys(ctx, pods[master])
    per_pod = {name: _keys(ctx, ip) for name, ip in pods.items()}
    written = ctx.state["keys_written"]
    first = failovers[0] if failovers else {}
    rejoined = first.get("from", "")
    ctx.log(
        f"{tag}: master {master} holds {on_master}/{written} keys; pods {per_pod}; "
        f"failovers: {[(f['from'], f['pod'], f['replicaState']) for f in failovers]}; "
        f"writes: {writes}"
    )
    out = {
        "keys_written": float(written),
        "keys_on_master": float(on_master),
        "keys_lost_ratio": lost_ratio(on_master, written),
        "promoted_unsynced_replica": 1.0 if any(not f["synced"] for f in failovers) else 0.0,
        "promoted_replica_keys": float(first.get("keys", -1)),
        "instances_with_all_keys": float(holding_all(per_pod, written)),
        "write_unavailability_seconds": float(writes["unavailable_seconds"]),
        "longest_write_outage_seconds": float(writes["longest_outage_seconds"]),
        "rollout_seconds": round(rollout_seconds, 1),
    }
    if rejoined in pods:
        # The old master came back with its RDB file; what it holds now tells
        # whether it kept the data or replicated an empty master over it.
        out["rejoined_master_rdb_keys"] = _rdb_keys_loaded(ctx, rejoined)
        out["rejoined_master_keys_after_sync"] = float(per_pod[rejoined])
    if ctx.state["safety"] == "safe":
        # The new replicas' first full sync (the old master only resynced a delta).
        out["replica_full_sync_seconds"] = max(
            (
                float((p.metadata.annotations or {}).get(rf.ANN_SYNCED_AFTER, "0"))
                for p in _pods(ctx)
                if p.metadata.name != rejoined
            ),
            default=0.0,
        )
    return out


# --------------------------------------------------------------------------- phases


def setup(ctx: RunContext) -> None:
    nodes = ctx.kube.core.list_node(label_selector="kfs.dev/real-node=true").items
    if not nodes:
        raise RunError("no node labelled kfs.dev/real-node=true")
    node = nodes[0].metadata.name
    data_dir = f"{DATA_BASE}/{ctx.namespace}"
    ctx.state["data_root"] = data_dir
    ctx.defer(f"remove {data_dir} on {node}", lambda: _rm_data(ctx, node, data_dir))
    start_operator(ctx)
    ctx.defer("delete the RedisFailover and wait for its pods", lambda: _delete_failover(ctx))
    # Without the latent fault: the operator's safe policy.
    _create_baseline(ctx, "safe")


def lost_ratio(kept: int, written: int) -> float:
    """The share of the written keys that are gone (more kept than written: none)."""
    return round(max(0.0, 1 - kept / written), 4)


def holding_all(per_pod: dict[str, int], written: int) -> int:
    """Instances that hold at least every written key."""
    return sum(1 for n in per_pod.values() if n >= written)


def steady_state(ctx: RunContext) -> dict[str, float]:
    written = ctx.state["keys_written"]
    seen = wait_for(lambda: _keys(ctx, _service_ip(ctx)), what="keys via the Service", timeout=30)
    ctx.record("keys", seen)
    return {
        "keys_written": float(written),
        "keys_on_master": float(seen),
        "keys_lost_ratio": lost_ratio(seen, written),
    }


def inject(ctx: RunContext) -> None:
    """The latent fault: the failover made again under the naive policy (a probe
    that is a bare ping, pods replaced in index order, the first ready promoted)."""
    _delete_failover(ctx)
    _create_baseline(ctx, "naive")


# The Flant edit (replicas 1 -> 3, memory 256Mi -> 192Mi) under each policy.
_EDIT = {"naive": "fault.yaml", "safe": "mitigation.yaml"}


def expose(ctx: RunContext) -> None:
    """The event: the Flant edit, applied to the failover under its current policy."""
    safety = ctx.state["safety"]
    ctx.apply(_EDIT[safety])
    ctx.state["edited"] = True
    ctx.log(f"applied the Flant edit (replicas 1 -> 3, memory 256Mi -> 192Mi) under {safety}")


def symptom(ctx: RunContext) -> dict[str, float]:
    return _measure_change(ctx)


def mitigate(ctx: RunContext) -> None:
    """The fix: the failover under the safe policy."""
    _delete_failover(ctx)
    _create_baseline(ctx, "safe")


def verify(ctx: RunContext) -> dict[str, float]:
    return _measure_change(ctx)
