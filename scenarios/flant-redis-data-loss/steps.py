"""Flant 2019, on the real spotahome redis-operator: a replica counted ready before it
held any data, a master taken away meanwhile, and the dataset gone.

Setup runs the real operator (v1.3.0-rc1, built from its module) with its defaults.
The latent fault (inject) is one setting: ``customReadinessProbe`` as a bare ping.
The event (expose) is Flant's edit, one more instance and less memory, with the
master evicted through the Eviction API (as a node drain does: it waits for the
PodDisruptionBudget the operator made). Each window starts from a fresh
one-instance failover holding the dataset under the current configuration (made
without waiting for the operator's 30 s rounds: see _nudge), and
measures from Redis and Sentinel themselves (a watcher in the cluster samples every
instance's INFO): who was promoted, with how many keys and which replication
offset, and what the master holds once it all settled.
"""

from __future__ import annotations

import contextlib
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
    redis_operator,
    sample,
    wait_for,
    watch,
)

KEYS = 300_000
VALUE_BYTES = 100
NAME = "cache"
MASTER_SERVICE = f"rfrm-{NAME}"
SENTINEL_SERVICE = f"rfs-{NAME}"
STATEFULSET = f"rfr-{NAME}"
REDIS_SELECTOR = f"app.kubernetes.io/component=redis,app.kubernetes.io/name={NAME}"
FAILOVER_SELECTOR = f"app.kubernetes.io/part-of=redis-failover,app.kubernetes.io/name={NAME}"
WRITER = "writer"
DATA_BASE = "/var/tmp/kfs-redis"
WORKLOADS = "/opt/kfs/workloads"
WATCH = "/opt/kfs/watch"  # the ConfigMap redis-watch
BEFORE = {"REPLICAS": "1", "MEMORY": "256Mi"}
AFTER = {"REPLICAS": "2", "MEMORY": "192Mi"}
# Redis's own test setting for a slow snapshot: microseconds per key while writing
# an RDB. 300,000 keys then take about as long to snapshot as gigabytes would,
# longer than the old master lives after its eviction (the operator's preStop
# hook keeps it up 30 s), so the new replica's first sync cannot finish in time.
SNAPSHOT_DELAY_US = 100
# kubectl drain retries a refused eviction every 5 s; a bit faster here.
EVICT_EVERY = 2.0
EVICT_WITHIN = 240.0
SETTLE_WITHIN = 240.0
UID = 1000  # the operator runs Redis as uid/gid 1000

# --------------------------------------------------------------------------- reads


def _custom(ctx: RunContext) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(ctx.kube.api)


def _object(ctx: RunContext) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = _custom(ctx).get_namespaced_custom_object(
            redis_operator.GROUP, redis_operator.VERSION, ctx.namespace, redis_operator.PLURAL, NAME
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def _pods(ctx: RunContext, selector: str = REDIS_SELECTOR) -> list[Any]:
    return ctx.kube.pods(ctx.namespace, selector)


def _redis(ctx: RunContext, host: str, *args: str, port: int = 6379, timeout: float = 30) -> str:
    """redis-cli from the writer pod (the client's point of view)."""
    try:
        code, out, err = ctx.kube.exec(
            ctx.namespace,
            WRITER,
            ["redis-cli", "-h", host, "-p", str(port), *args],
            timeout=timeout,
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


def parse_info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.replace("\r", "").splitlines() if ":" in line)


def _info(ctx: RunContext, host: str) -> dict[str, str]:
    return parse_info(_redis(ctx, host, "info", "replication", timeout=10))


def _service_ip(ctx: RunContext, name: str) -> str:
    return str(ctx.kube.core.read_namespaced_service(name, ctx.namespace).spec.cluster_ip)


def _sentinels_follow(ctx: RunContext, ip: str) -> bool:
    """Every Sentinel names ``ip`` as the master."""
    sentinels = [
        p for p in _pods(ctx, f"app.kubernetes.io/component=sentinel,app.kubernetes.io/name={NAME}")
    ]
    if len(sentinels) < 3 or not all(p.status.pod_ip for p in sentinels):
        return False
    for pod in sentinels:
        said = _redis(
            ctx, pod.status.pod_ip, "sentinel", "get-master-addr-by-name", "mymaster", port=26379
        )
        if said.splitlines()[:1] != [ip]:
            return False
    return True


def _record_keys(ctx: RunContext) -> None:
    """One point of the plotted "keys" series: what a client sees on the master Service."""
    with contextlib.suppress(TransientError, ApiException):
        ctx.record("keys", _keys(ctx, _service_ip(ctx, MASTER_SERVICE), timeout=5))


def _rdb_keys_loaded(ctx: RunContext, pod: str) -> float:
    """Keys a pod loaded from its own RDB file at start (-1 if it loaded none)."""
    try:
        log = ctx.kube.core.read_namespaced_pod_log(pod, ctx.namespace, container="redis")
    except ApiException:
        return -1
    found = re.search(r"keys loaded: (\d+)", str(log))
    return float(found.group(1)) if found else -1


# --------------------------------------------------------------------------- the failover


def _failover(ctx: RunContext, size: dict[str, str]) -> list[dict[str, Any]]:
    """failover.yaml with the current configuration (fault.yaml merged in if unsafe)."""
    objs = ctx.manifest("failover.yaml", **size)
    if ctx.state.get("config") == "unsafe":
        fault = ctx.manifest("fault.yaml")[0]
        objs[0]["spec"]["redis"].update(fault["spec"]["redis"])
    return objs


def _delete_failover(ctx: RunContext) -> None:
    """Delete the RedisFailover and everything it made, volumes' claims included.

    The pods are deleted at once: the operator's preStop hook would keep a master
    up 30 s, which matters during the story but not when throwing it away."""
    with contextlib.suppress(ApiException):
        _custom(ctx).delete_namespaced_custom_object(
            redis_operator.GROUP, redis_operator.VERSION, ctx.namespace, redis_operator.PLURAL, NAME
        )
    for pod in _pods(ctx, FAILOVER_SELECTOR):
        with contextlib.suppress(ApiException):
            ctx.kube.core.delete_namespaced_pod(
                pod.metadata.name, ctx.namespace, grace_period_seconds=0
            )

    def gone() -> bool:
        claims = ctx.kube.core.list_namespaced_persistent_volume_claim(ctx.namespace).items
        return _object(ctx) is None and not _pods(ctx, FAILOVER_SELECTOR) and not claims

    wait_for(gone, what="the RedisFailover, its pods and claims deleted", timeout=180, interval=1)


def _nudge(ctx: RunContext) -> None:
    """Touch an annotation on the RedisFailover: the operator handles the update at
    once, as it does any edit, instead of on its next 30 s resync. Only the
    preparation of a window is hurried so; its event runs at the operator's pace.
    (The operator copies the object's annotations onto the StatefulSet's own
    metadata, never into the pod template, so no pod is restarted by it.)"""
    ctx.state["nudges"] = ctx.state.get("nudges", 0) + 1
    body = {"metadata": {"annotations": {"kfs.dev/nudge": str(ctx.state["nudges"])}}}
    with contextlib.suppress(ApiException):
        _custom(ctx).patch_namespaced_custom_object(
            redis_operator.GROUP,
            redis_operator.VERSION,
            ctx.namespace,
            redis_operator.PLURAL,
            NAME,
            body,
        )


def _volumes(ctx: RunContext, window: int) -> None:
    """A fresh hostPath volume per instance for this window (the node has no provisioner)."""
    node = ctx.state["node"]
    for index in range(int(AFTER["REPLICAS"])):
        path = f"{ctx.state['data_dir']}/w{window}/{index}"
        ctx.node_shell.node_exec(node, ["install", "-d", "-o", str(UID), "-g", str(UID), path])
        objs = ctx.manifest(
            "volumes.yaml",
            PV_NAME=f"{ctx.namespace}-w{window}-{index}",
            INDEX=str(index),
            PATH_ON_NODE=path,
        )
        ctx.kube.apply(objs, ctx.namespace)
        ctx.state["volumes"].append(objs[0])


def _fresh_failover(ctx: RunContext) -> None:
    """One master holding KEYS keys, under the current configuration, watched by
    three Sentinels; reused when the last one made is still untouched."""
    config = ctx.state["config"]
    if ctx.state.get("fresh") == config:
        return
    started = time.monotonic()
    _delete_failover(ctx)
    ctx.state["windows"] += 1
    _volumes(ctx, ctx.state["windows"])
    ctx.kube.apply(_failover(ctx, BEFORE), ctx.namespace)
    master = f"{STATEFULSET}-0"

    def ready() -> str | None:
        # The operator makes the only instance master, then points the Sentinels
        # at it, each on one of its rounds: nudged, not waited for.
        pods = [p for p in _pods(ctx) if p.metadata.name == master and p.status.pod_ip]
        if pods and _info(ctx, pods[0].status.pod_ip).get("role") == "master":
            ip = str(pods[0].status.pod_ip)
            if _sentinels_follow(ctx, ip):
                return ip
        _nudge(ctx)
        return None

    ip = wait_for(ready, what=f"{master} master, watched by 3 Sentinels", timeout=180, interval=2)
    fill = f"python3 {WORKLOADS}/redis_fill.py --keys {KEYS} --value-bytes {VALUE_BYTES}"
    code, out, err = ctx.kube.exec(
        ctx.namespace, master, ["sh", "-c", f"{fill} | redis-cli --pipe"], timeout=180
    )
    if code != 0 or f"errors: 0, replies: {KEYS}" not in out:
        raise RunError(f"filling {master} failed ({code}): {(err or out).strip()[-200:]}")
    written = _keys(ctx, ip)
    if written != KEYS:
        raise RunError(f"{master} holds {written} keys after writing {KEYS}")
    # On disk before the event, so the old master really comes back with it.
    _redis(ctx, ip, "save", timeout=60)
    _redis(ctx, ip, "config", "set", "rdb-key-save-delay", str(SNAPSHOT_DELAY_US))
    pod = ctx.kube.core.read_namespaced_pod(master, ctx.namespace)
    ctx.state.update(keys_written=written, fresh=config, master=(master, pod.metadata.uid, ip))
    wait_for(
        lambda: _keys(ctx, _service_ip(ctx, MASTER_SERVICE)) == written,
        what="the master Service answering",
        timeout=60,
    )
    ctx.record("keys", written)
    ctx.log(
        f"fresh failover ({config} configuration): {master} ({ip}) holds {written} keys, "
        f"saved; {time.monotonic() - started:.0f}s"
    )


# --------------------------------------------------------------------------- the event


def _evict(ctx: RunContext, pod: str, uid: str) -> bool:
    """One eviction request, as kubectl drain sends it; True once the pod is going."""
    body = client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace=ctx.namespace),
        delete_options=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
    )
    try:
        ctx.kube.core.create_namespaced_pod_eviction(pod, ctx.namespace, body)
    except ApiException as exc:
        if exc.status in (404, 409):  # gone already, or replaced (another uid)
            return True
        if exc.status == 429:  # the PodDisruptionBudget says no, for now
            return False
        raise
    return True


def expose(ctx: RunContext) -> None:
    """Flant's edit (2 instances, less memory), and the master evicted meanwhile."""
    ctx.kube.apply(_failover(ctx, AFTER), ctx.namespace)
    ctx.state["fresh"] = None
    edited = time.monotonic()
    pod, uid, _ = ctx.state["master"]
    ctx.log(f"edited: replicas 1 -> 2, memory 256Mi -> 192Mi; evicting {pod} (PDB permitting)")
    admitted = watch(
        lambda: _evict(ctx, pod, uid), every=EVICT_EVERY, within=EVICT_WITHIN, what="eviction"
    )
    ctx.state["evicted_after"] = round(time.monotonic() - edited, 1) if admitted else -1.0
    ctx.log(
        f"{pod} evicted {ctx.state['evicted_after']}s after the edit"
        if admitted
        else f"{pod} not evicted within {EVICT_WITHIN:.0f}s: the budget never allowed it"
    )


# --------------------------------------------------------------------------- the window


def _start_background(
    ctx: RunContext, script: str, args: str, tag: str, where: str = WORKLOADS
) -> tuple[str, str]:
    out, stop = f"/tmp/{script}-{tag}.jsonl", f"/tmp/{script}-{tag}.stop"
    log = f"/tmp/{script}-{tag}.log"
    cmd = (
        f"nohup python3 {where}/{script}.py {args} --out {out} --stop-file {stop} "
        f">{log} 2>&1 </dev/null &"
    )
    code, _, err = ctx.kube.exec(ctx.namespace, WRITER, ["sh", "-c", cmd])
    if code != 0:
        raise RunError(f"cannot start {script}: {err.strip()}")
    return out, stop


def _lines(ctx: RunContext, path: str) -> list[dict[str, Any]]:
    code, text, err = ctx.kube.exec(ctx.namespace, WRITER, ["cat", path], timeout=60)
    if code != 0:
        # What the background process said, and how long the pod has been up.
        _, said, _ = ctx.kube.exec(
            ctx.namespace,
            WRITER,
            ["sh", "-c", f"tail -n 5 {path[: -len('.jsonl')]}.log; ls /tmp; uptime"],
        )
        raise RunError(f"cannot read {path}: {err.strip()[-200:]}; {said.strip()[-400:]}")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _writer_summary(ctx: RunContext, out: str, since: float, until: float) -> dict[str, Any]:
    argv = ["python3", f"{WORKLOADS}/redis_writer.py", "--summarize", out]
    argv += ["--since", str(since), "--until", str(until)]
    code, text, err = ctx.kube.exec(ctx.namespace, WRITER, argv)
    if code != 0:
        raise RunError(f"writer summary failed: {err.strip()[-200:]}")
    summary: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return summary


def _settled(ctx: RunContext) -> bool:
    """Two instances, one master, the other its replica with the link up and no sync,
    the evicted master replaced: Redis's own view, not the operator's."""
    _record_keys(ctx)
    _, uid, _ = ctx.state["master"]
    pods = [p for p in _pods(ctx) if p.status.pod_ip and p.metadata.deletion_timestamp is None]
    if len(pods) != int(AFTER["REPLICAS"]) or any(p.metadata.uid == uid for p in pods):
        return False
    infos = {p.status.pod_ip: _info(ctx, p.status.pod_ip) for p in pods}
    masters = [ip for ip, i in infos.items() if i.get("role") == "master"]
    if len(masters) != 1:
        return False
    return all(
        i.get("master_host") == masters[0]
        and i.get("master_link_status") == "up"
        and i.get("master_sync_in_progress") == "0"
        for ip, i in infos.items()
        if ip != masters[0]
    )


def _window(ctx: RunContext, tag: str) -> dict[str, float]:
    _fresh_failover(ctx)
    written = ctx.state["keys_written"]
    old_pod, _, old_ip = ctx.state["master"]
    service = _service_ip(ctx, MASTER_SERVICE)
    writes, writes_stop = _start_background(ctx, "redis_writer", f"--host {service}", tag)
    watch_args = (
        f"--namespace {ctx.namespace} --selector {shlex.quote(REDIS_SELECTOR)} "
        f"--sentinel {_service_ip(ctx, SENTINEL_SERVICE)}"
    )
    samples_at, samples_stop = _start_background(ctx, "redis_watch", watch_args, tag, WATCH)
    since = time.time()
    with ctx.expose():
        pass
    settled = watch(lambda: _settled(ctx), every=2, within=SETTLE_WITHIN, what="settling")
    settle_seconds = round(time.time() - since, 1) if settled else -1.0
    sample(lambda: _record_keys(ctx), every=1, duration=2, what="keys after the change")
    ctx.kube.exec(ctx.namespace, WRITER, ["touch", writes_stop, samples_stop])
    until = time.time()
    summary = _writer_summary(ctx, writes, since, until)
    samples = _lines(ctx, samples_at)

    pods = {p.metadata.name: p.status.pod_ip for p in _pods(ctx) if p.status.pod_ip}
    infos = {name: _info(ctx, ip) for name, ip in pods.items()}
    per_pod = {name: _keys(ctx, ip) for name, ip in pods.items()}
    master = next((n for n, i in infos.items() if i.get("role") == "master"), None)
    on_master = per_pod.get(master, 0) if master else 0
    promo = promotion(samples, old_ip)
    switch = sentinel_switch(samples, old_ip)
    ctx.log(
        f"{tag}: promoted {promo.get('pod', 'nobody')} ({promo.get('ip', '-')}) holding "
        f"{promo.get('keys', '-')} keys at offset {promo.get('offset', '-')}; the old master "
        f"{old_pod} was at offset {promo.get('old_master_offset', '-')}; Sentinel named "
        f"{switch or 'no new master'}; now master {master} with {on_master}/{written} keys; "
        f"keys per pod {per_pod}; writes {summary}"
    )
    out = {
        "keys_written": float(written),
        "keys_on_master": float(on_master),
        "keys_lost_ratio": lost_ratio(on_master, written),
        "promoted_unsynced_replica": 1.0 if promo and promo["keys"] < written else 0.0,
        "promoted_replica_keys": float(promo["keys"]) if promo else -1.0,
        "promoted_replica_offset": float(promo["offset"]) if promo else -1.0,
        "old_master_offset": float(promo.get("old_master_offset", -1)),
        "sentinel_named_promoted": 1.0 if promo and switch == promo["ip"] else 0.0,
        "instances_with_all_keys": float(holding_all(per_pod, written)),
        "eviction_admitted_after_seconds": float(ctx.state["evicted_after"]),
        "settle_seconds": settle_seconds,
        "write_unavailability_seconds": float(summary["unavailable_seconds"]),
        "longest_write_outage_seconds": float(summary["longest_outage_seconds"]),
    }
    if old_pod in pods:
        # The old master came back with its RDB file; what it holds now tells
        # whether it kept the data or replicated an empty master over it.
        out["rejoined_master_rdb_keys"] = _rdb_keys_loaded(ctx, old_pod)
        out["rejoined_master_keys_after_sync"] = float(per_pod[old_pod])
    return out


# --------------------------------------------------------------------------- pure


def lost_ratio(kept: int, written: int) -> float:
    """The share of the written keys that are gone (more kept than written: none)."""
    return round(max(0.0, 1 - kept / written), 4)


def holding_all(per_pod: dict[str, int], written: int) -> int:
    """Instances that hold at least every written key."""
    return sum(1 for n in per_pod.values() if n >= written)


def promotion(samples: list[dict[str, Any]], old_master_ip: str) -> dict[str, Any]:
    """The first instance other than the old master that Redis reports as master.

    Its keys and replication offset are what it held in the last sample before it
    turned master (or the first one as master, if none came before), which is what
    it brought to its new role; the old master's offset is its last one seen.
    Empty if nobody else became master."""
    last: dict[str, dict[str, Any]] = {}
    old_offset = -1
    for row in samples:
        for name, pod in (row.get("pods") or {}).items():
            if "role" not in pod:
                continue
            if pod["ip"] == old_master_ip:
                old_offset = int(pod.get("master_repl_offset") or old_offset)
                continue
            if pod["role"] == "master":
                before = last.get(pod["ip"], pod)
                offset = before.get("slave_repl_offset") or before.get("master_repl_offset") or 0
                return {
                    "pod": name,
                    "ip": pod["ip"],
                    "keys": int(before["keys"]),
                    "offset": int(offset),
                    "old_master_offset": old_offset,
                    "t": row["t"],
                }
            last[pod["ip"]] = pod
    return {}


def sentinel_switch(samples: list[dict[str, Any]], old_master_ip: str) -> str:
    """The first address other than the old master's that the Sentinels named master."""
    for row in samples:
        said = row.get("sentinel")
        if (
            isinstance(said, str)
            and said != old_master_ip
            and re.match(r"^\d+\.\d+\.\d+\.\d+$", said)
        ):
            return said
    return ""


# --------------------------------------------------------------------------- phases


def setup(ctx: RunContext) -> None:
    nodes = ctx.kube.core.list_node(label_selector="kfs.dev/real-node=true").items
    if not nodes:
        raise RunError("no node labelled kfs.dev/real-node=true")
    node = nodes[0].metadata.name
    data_dir = f"{DATA_BASE}/{ctx.namespace}"
    ctx.state.update(node=node, data_dir=data_dir, windows=0, volumes=[], config="safe")
    ctx.variables["STORAGE_CLASS"] = f"kfs-redis-{ctx.namespace}"
    ctx.variables["REDIS_OPERATOR_IMAGE"] = redis_operator.image()

    def remove_data() -> None:
        ctx.node_shell.node_exec(node, ["rm", "-rf", data_dir])
        ctx.node_shell.node_exec(
            node, ["rmdir", "--ignore-fail-on-non-empty", DATA_BASE], check=False
        )

    ctx.defer(f"remove {data_dir} on {node}", remove_data)
    ctx.defer("delete the run's volumes and cluster role", lambda: _delete_cluster_objects(ctx))
    # Nodes that take loaded images get it now; other clusters have it from a
    # registry (`kfs` cannot push there), as for the kfs operator's image.
    load = getattr(ctx.provider, "load_images", None)
    if load is not None:
        load(redis_operator.build_image(log=ctx.log))
    # Shared and cluster-scoped: installed when missing or older, never removed
    # (that would delete every RedisFailover in every namespace).
    ctx.kube.apply([redis_operator.crd()], None)
    wait_for(lambda: _crd_established(ctx), what=f"CRD {redis_operator.CRD_NAME}", timeout=60)
    ctx.apply("operator.yaml")
    ctx.kube.wait_rollout(ctx.namespace, "redis-operator", timeout=120)
    ctx.log(f"operator {redis_operator.describe()} running in {ctx.namespace}")
    ctx.defer("delete the RedisFailover and its pods", lambda: _delete_failover(ctx))
    script = (ctx.scenario.path / "workloads" / "redis_watch.py").read_text()
    watch_script = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "redis-watch"},
        "data": {"redis_watch.py": script},
    }
    ctx.kube.apply([watch_script], ctx.namespace)
    ctx.apply("baseline.yaml")
    ctx.kube.wait_pod_running(ctx.namespace, WRITER)
    _fresh_failover(ctx)


def _crd_established(ctx: RunContext) -> bool:
    crd = client.ApiextensionsV1Api(ctx.kube.api).read_custom_resource_definition(
        redis_operator.CRD_NAME
    )
    conditions = (crd.status.conditions or []) if crd.status else []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _delete_cluster_objects(ctx: RunContext) -> None:
    for obj in ctx.state.get("volumes", []):
        ctx.kube.delete(obj, None)
    for obj in ctx.manifest("operator.yaml"):
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            ctx.kube.delete(obj, None)


def steady_state(ctx: RunContext) -> dict[str, float]:
    written = ctx.state["keys_written"]
    seen = wait_for(
        lambda: _keys(ctx, _service_ip(ctx, MASTER_SERVICE)),
        what="keys via the Service",
        timeout=30,
    )
    ctx.record("keys", seen)
    return {
        "keys_written": float(written),
        "keys_on_master": float(seen),
        "keys_lost_ratio": lost_ratio(seen, written),
    }


def inject(ctx: RunContext) -> None:
    """The latent fault: from now on the failover's readiness probe is a bare ping."""
    ctx.state["config"] = "unsafe"
    ctx.log("configuration: customReadinessProbe = redis-cli ping (fault.yaml)")


def symptom(ctx: RunContext) -> dict[str, float]:
    return _window(ctx, "symptom")


def mitigate(ctx: RunContext) -> None:
    """The fix: the operator's own readiness probe again (no customReadinessProbe)."""
    ctx.state["config"] = "safe"
    ctx.log("configuration: the operator's default readiness probe")


def verify(ctx: RunContext) -> dict[str, float]:
    return _window(ctx, "verify")
