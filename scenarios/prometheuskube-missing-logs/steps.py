"""PrometheusKube 2020: the log backend pushes back, the shipper restarts, lines vanish.

The shipper is the real OpenTelemetry Collector (filelog -> otlphttp), in the
fragile configuration of fault.yaml and the durable one of mitigation.yaml."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes.client.rest import ApiException
from websocket import WebSocketException

from failure_stories import (
    OTELCOL_IMAGE,
    REAL_NODE_LABEL,
    RunContext,
    RunError,
    ScenarioDefinitionError,
    TransientError,
    WaitTimeout,
    pod_ready,
    sample,
    wait_for,
)

LINES_PER_SECOND = 20
FAULT_SECONDS = 15
# The shipper is restarted this long into the fault, while chunks are failing.
RESTART_AFTER_SECONDS = 5
# The audited window goes on this long after the backend recovers.
AFTER_FAULT_SECONDS = 5
BASELINE_SECONDS = 12
# The freshness alert: the newest line in the backend is older than this.
ALERT_LAG_SECONDS = 10.0
# Settling: the window is final when every line arrived, or when nothing new of it
# arrived for this long while the shipper was already past its end.
SETTLE_QUIET_SECONDS = 8
SAMPLE_EVERY = 1.0
STATE_ROOT = "/var/lib/kfs-shipper"
SHIPPER = "app=shipper"
# The ConfigMaps of the collector's two configurations (fault.yaml, mitigation.yaml).
FRAGILE_CONFIG = "otelcol-fragile"
DURABLE_CONFIG = "otelcol-durable"
METRICS_PORT = 8888
# The collector's own count of log records its exporter gave up on (retries
# exhausted) and could not queue (queue full): what its dashboard would show.
DROPPED_METRICS = (
    "otelcol_exporter_send_failed_log_records",
    "otelcol_exporter_enqueue_failed_log_records",
)


# -- talking to the pods ---------------------------------------------------------------


def _one_ready(ctx: RunContext, selector: str, exclude: frozenset[str] = frozenset()) -> Any:
    pods = [
        p
        for p in ctx.kube.pods(ctx.namespace, selector)
        if p.metadata.deletion_timestamp is None and p.metadata.name not in exclude
    ]
    ready = [p for p in pods if pod_ready(p)]
    return ready[0] if len(ready) == 1 and len(pods) == 1 else None


def _exec_once(ctx: RunContext, pod: str, argv: list[str]) -> str:
    what = f"{' '.join(argv[:4])} in {pod}"
    # A busy API server or a restarting pod: all worth another try.
    try:
        code, out, err = ctx.kube.exec(ctx.namespace, pod, argv, timeout=20)
    except (ApiException, OSError, WebSocketException, WaitTimeout) as exc:
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if code != 0:
        raise TransientError(f"{what} failed ({code}): {err.strip()[-200:]}")
    return out


def _exec(ctx: RunContext, pod: str, argv: list[str]) -> str:
    return wait_for(
        lambda: _exec_once(ctx, pod, argv), what=f"{argv[0]} in {pod}", timeout=30, interval=1
    )


def _sink(ctx: RunContext, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    argv = ["curl", "-sS", "-m", "5", f"http://127.0.0.1:9200{path}"]
    if data is not None:
        argv[1:1] = ["-X", "POST", "-H", "Content-Type: application/json", "-d", json.dumps(data)]
    out = _exec(ctx, ctx.state["sink_pod"], argv)
    result: dict[str, Any] = json.loads(out)
    return result


def _app_seq(ctx: RunContext) -> int:
    """The last sequence number the application has written (its own count)."""
    return int(_exec(ctx, "app", ["cat", "/tmp/seq"]).strip())


def prometheus_sum(text: str, name: str) -> float | None:
    """The sum over all label sets of a metric in Prometheus' text format (a
    counter may carry the `_total` suffix); None if it is not there at all."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric, _, rest = line.partition(" ")
        base = metric.split("{", 1)[0]
        if base in (name, f"{name}_total"):
            total += float(rest.split()[0])
            seen = True
    return total if seen else None


def shipper_dropped(text: str) -> dict[str, Any]:
    """What the collector's metrics say it dropped; {} if it says nothing."""
    values = [prometheus_sum(text, m) for m in DROPPED_METRICS]
    found = [v for v in values if v is not None]
    if not found and "otelcol_" not in text:
        return {}
    return {"records_dropped": int(sum(found))}


def _shipper_metrics(ctx: RunContext) -> dict[str, Any]:
    """The running collector's own counters, read from its Prometheus endpoint
    (from the sink's pod: the collector's image holds nothing but the collector)."""
    pod = _one_ready(ctx, SHIPPER)
    if pod is None or not pod.status.pod_ip:
        return {}
    url = f"http://{pod.status.pod_ip}:{METRICS_PORT}/metrics"
    return shipper_dropped(_exec(ctx, ctx.state["sink_pod"], ["curl", "-sS", "-m", "3", url]))


# -- setup and teardown ----------------------------------------------------------------


def _real_node(ctx: RunContext) -> str:
    nodes = ctx.kube.core.list_node(label_selector=f"{REAL_NODE_LABEL}=true").items
    if not nodes:
        raise ScenarioDefinitionError(f"needs a node labelled {REAL_NODE_LABEL}=true")
    return str(sorted(n.metadata.name for n in nodes)[0])


def _remove_state(ctx: RunContext, node: str, host_dir: str) -> None:
    """Stop the shipper first, so no pod recreates the hostPath, then delete it."""
    try:
        ctx.kube.apps.delete_namespaced_daemon_set("shipper", ctx.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
    wait_for(
        lambda: not ctx.kube.pods(ctx.namespace, SHIPPER),
        what="the shipper pods gone",
        timeout=90,
        interval=1,
    )
    ctx.node_shell.node_exec(node, ["rm", "-rf", "--one-file-system", host_dir])
    # The parent is ours too; leave it only if another run is using it.
    ctx.node_shell.node_exec(node, ["rmdir", STATE_ROOT], check=False)


def _wait_shipper_rollout(ctx: RunContext) -> str:
    def done() -> str:
        ctx.kube.refuse_unstartable(ctx.namespace, SHIPPER)
        ds = ctx.kube.apps.read_namespaced_daemon_set("shipper", ctx.namespace)
        st = ds.status
        settled = (
            (st.observed_generation or 0) >= (ds.metadata.generation or 0)
            and (st.desired_number_scheduled or 0) == 1
            and (st.updated_number_scheduled or 0) == 1
            and (st.number_ready or 0) == 1
        )
        pod = _one_ready(ctx, SHIPPER) if settled else None
        return "" if pod is None else str(pod.metadata.name)

    return wait_for(done, what="the shipper DaemonSet rolled out", timeout=120, interval=1)


def _wait_shipping(ctx: RunContext) -> dict[str, Any]:
    def fresh() -> dict[str, Any]:
        s = _sink(ctx, "/stats")
        lag = s["freshness_lag_seconds"]
        return s if lag is not None and lag < 5 and not s["rejecting"] else {}

    return wait_for(fresh, what="fresh lines arriving at the sink", timeout=90, interval=1)


def _roll_shipper(ctx: RunContext, manifest: str, config: str, **extra: str) -> str:
    """Apply one of the collector's configurations and wait until it ships."""
    ctx.apply(manifest, **extra)
    pod = _wait_shipper_rollout(ctx)
    ds = ctx.kube.apps.read_namespaced_daemon_set("shipper", ctx.namespace)
    mounted = ds.spec.template.spec.volumes[0].config_map
    if mounted is None or mounted.name != config:
        raise RunError(f"the shipper DaemonSet does not run the {config} configuration")
    _wait_shipping(ctx)
    return pod


def _check_sink(ctx: RunContext) -> None:
    # The backend is the outside world, not the system under test: check that it
    # takes OTLP (an older toolbox image's sink answered 404) and that its 429
    # switch works before anything depends on it, and leave it off.
    argv = ["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"]
    argv += ["-H", "Content-Type: application/x-protobuf", "--data-binary", ""]
    code = _exec(ctx, ctx.state["sink_pod"], [*argv, "http://127.0.0.1:9200/v1/logs"]).strip()
    if code != "200":
        raise RunError(
            f"the log sink answered HTTP {code} to an empty OTLP export: the toolbox image "
            f"on the node is not this checkout's (rebuild and import it: `kfs cluster up`)"
        )
    on = _sink(ctx, "/fault", {"reject": True, "seconds": 1})
    off = _sink(ctx, "/fault", {"reject": False})
    if not on["rejecting"] or off["rejecting"]:
        raise RunError("the sink did not switch its 429 fault on and off")


def setup(ctx: RunContext) -> None:
    node = _real_node(ctx)
    host_dir = f"{STATE_ROOT}/{ctx.namespace}"
    ctx.state.update(node=node, host_dir=host_dir)
    # Registered before anything can create the directory, so a failure at any
    # later point still removes it.
    ctx.defer(f"remove {host_dir} on {node}", lambda: _remove_state(ctx, node, host_dir))
    ctx.variables.update(LINES_PER_SECOND=str(LINES_PER_SECOND))
    ctx.load_image(OTELCOL_IMAGE)
    ctx.apply("sink.yaml")
    ctx.kube.wait_rollout(ctx.namespace, "logsink")
    ip = ctx.kube.core.read_namespaced_service("logsink", ctx.namespace).spec.cluster_ip
    ctx.variables["SINK_URL"] = f"http://{ip}:9200"
    sink = wait_for(lambda: _one_ready(ctx, "app=logsink"), what="the sink pod ready", timeout=60)
    ctx.state["sink_pod"] = sink.metadata.name
    _check_sink(ctx)
    ctx.apply("baseline.yaml")
    ctx.kube.wait_pod_running(ctx.namespace, "app")
    # Each durable collector keeps its own state (setup's, the fix's), so the fix
    # does not resume from offsets saved before the fault.
    _roll_shipper(ctx, "mitigation.yaml", DURABLE_CONFIG, STATE_HOST_DIR=f"{host_dir}/setup")
    ctx.log(f"app -> otelcol (durable) -> logsink {ctx.variables['SINK_URL']}/v1/logs on {node}")


# -- the event that exposes the fault --------------------------------------------------


def _probe(ctx: RunContext) -> dict[str, Any]:
    stats = _sink(ctx, "/stats")
    lag = stats["freshness_lag_seconds"]
    if lag is not None:
        ctx.record("freshness_lag_seconds", lag)
    ctx.record("sink_rejecting", 1.0 if stats["rejecting"] else 0.0)
    return stats


def _restart_shipper(ctx: RunContext) -> None:
    old = _one_ready(ctx, SHIPPER)
    if old is None:
        raise RunError("no ready shipper pod to restart")
    name = old.metadata.name
    ctx.kube.core.delete_namespaced_pod(name, ctx.namespace)
    t0 = time.monotonic()

    def replaced() -> Any:
        _probe(ctx)
        return _one_ready(ctx, SHIPPER, exclude=frozenset({name}))

    new = wait_for(replaced, what="the DaemonSet to recreate the shipper", timeout=90, interval=1)
    ctx.log(f"shipper {name} deleted; {new.metadata.name} ready after {time.monotonic() - t0:.1f}s")


def expose(ctx: RunContext) -> None:
    """The backend answers 429 for FAULT_SECONDS; RESTART_AFTER_SECONDS into it the
    shipper's pod is deleted and the DaemonSet recreates it. Over when the backend
    accepts writes again (it times the outage itself)."""
    _sink(ctx, "/fault", {"reject": True, "seconds": FAULT_SECONDS})
    ctx.log(f"sink rejects every write with 429 for {FAULT_SECONDS}s")

    def probe() -> None:
        _probe(ctx)

    sample(probe, every=SAMPLE_EVERY, duration=RESTART_AFTER_SECONDS, what="the fault")
    _restart_shipper(ctx)
    wait_for(
        lambda: not _probe(ctx)["rejecting"],
        what="the sink accepting writes again",
        timeout=FAULT_SECONDS + 60,
        interval=SAMPLE_EVERY,
    )
    ctx.log("sink accepts writes again")


# -- the measured window ---------------------------------------------------------------


def _window(ctx: RunContext, event: bool) -> dict[str, float]:
    """Audit every line the app writes in a window, around the event or without it."""
    since = _wait_shipping(ctx)["now"]
    first = _app_seq(ctx) + 1

    def probe() -> None:
        _probe(ctx)

    if event:
        sample(probe, every=SAMPLE_EVERY, duration=2, what="freshness before the event")
        ctx.expose()
        sample(probe, every=SAMPLE_EVERY, duration=AFTER_FAULT_SECONDS, what="the recovery")
        ctx.measure("fault_seconds", FAULT_SECONDS)
        ctx.measure("shipper_restart_after_seconds", RESTART_AFTER_SECONDS)
    else:
        sample(probe, every=SAMPLE_EVERY, duration=BASELINE_SECONDS, what="the baseline")
    last = _app_seq(ctx)
    query = f"/stats?from={first}&to={last}&since={since}"
    progress = {"received": -1, "at": time.monotonic()}

    def settled() -> dict[str, Any]:
        stats = _sink(ctx, query)
        if stats["freshness_lag_seconds"] is not None:
            ctx.record("freshness_lag_seconds", stats["freshness_lag_seconds"])
        w = stats["window"]
        if w["missing"] == 0:
            return stats
        if w["received"] != progress["received"]:
            progress.update(received=w["received"], at=time.monotonic())
            return {}
        past_end = stats["max_seq"] > last + 2 * LINES_PER_SECOND
        quiet = time.monotonic() - progress["at"] >= SETTLE_QUIET_SECONDS
        return stats if past_end and quiet else {}

    final = wait_for(
        settled, what="the window's lines to arrive or stop arriving", timeout=120, interval=1
    )
    w = final["window"]
    max_lag = float(final["max_lag_since_seconds"] or 0.0)
    metrics = _shipper_metrics(ctx)
    ctx.log(
        f"lines {first}..{last}: {w['received']}/{w['expected']} arrived, {w['missing']} lost "
        f"{w['missing_ranges'][:5]}, {w['duplicates']} duplicates; max freshness lag "
        f"{max_lag:.1f}s; running shipper reports {metrics.get('records_dropped', '?')} "
        "dropped records"
    )
    return log_numbers(w, max_lag, metrics)


def log_numbers(
    window: dict[str, Any], max_lag: float, shipper: dict[str, Any]
) -> dict[str, float]:
    """The sink's count of the measured window's lines, the freshness alert (it
    fires when the newest line is older than ALERT_LAG_SECONDS) and what the
    shipper itself says it dropped (-1: it does not say)."""
    return {
        "lines_written": window["expected"],
        "lines_lost": window["missing"],
        "duplicate_lines": window["duplicates"],
        "max_freshness_lag_seconds": round(max_lag, 2),
        "freshness_alert_fired": 1.0 if max_lag > ALERT_LAG_SECONDS else 0.0,
        "records_dropped_reported": float(shipper.get("records_dropped", -1)),
    }


def steady_state(ctx: RunContext) -> dict[str, float]:
    return _window(ctx, event=False)


def inject(ctx: RunContext) -> None:
    # The latent fault alone: the shipper's fragile configuration, quiet while the
    # backend accepts and the pod keeps running.
    pod = _roll_shipper(ctx, "fault.yaml", FRAGILE_CONFIG)
    ctx.log(f"shipper {pod}: no offsets, an in-memory queue, retries for 2 s")


def symptom(ctx: RunContext) -> dict[str, float]:
    return _window(ctx, event=True)


def mitigate(ctx: RunContext) -> None:
    state = f"{ctx.state['host_dir']}/fix"
    pod = _roll_shipper(ctx, "mitigation.yaml", DURABLE_CONFIG, STATE_HOST_DIR=state)
    ctx.log(f"shipper {pod}: offsets and a persistent queue in {state}")


def verify(ctx: RunContext) -> dict[str, float]:
    return _window(ctx, event=True)
