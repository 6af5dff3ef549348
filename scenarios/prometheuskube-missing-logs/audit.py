"""The prometheuskube-missing-logs story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from failure_stories.audit.model import (
    HIGH,
    INFO,
    MEDIUM,
    Finding,
    Obj,
    Snapshot,
    Workload,
    _argv,
    _configmap_text,
    _mounted_configmaps,
    on_host_path,
    workloads,
)

STORY = "prometheuskube-missing-logs"
# What its checks look for, as the audit report says it.
LOOKS_FOR = "log shippers that lose lines when they restart or the backend pushes back"


def fluentbit_sections(text: str) -> list[tuple[str, dict[str, str]]]:
    """[SECTION] blocks of a classic fluent-bit config (keys lower-cased), or the
    sections of its YAML format (pipeline.inputs/outputs, service)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, dict) and ("pipeline" in doc or "service" in doc):
        out: list[tuple[str, dict[str, str]]] = []
        if isinstance(doc.get("service"), dict):
            out.append(("SERVICE", {str(k).lower(): str(v) for k, v in doc["service"].items()}))
        pipeline = doc.get("pipeline")
        if not isinstance(pipeline, dict):
            pipeline = {}
        for key, section in (("inputs", "INPUT"), ("outputs", "OUTPUT"), ("filters", "FILTER")):
            for item in pipeline.get(key) or []:
                if isinstance(item, dict):
                    out.append((section, {str(k).lower(): str(v) for k, v in item.items()}))
        return out
    sections: list[tuple[str, dict[str, str]]] = []
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "@")):
            continue
        header = re.fullmatch(r"\[\s*([A-Za-z_]+)\s*\]", line)
        if header:
            current = {}
            sections.append((header.group(1).upper(), current))
            continue
        if current is not None:
            key, *value = re.split(r"\s+", line, maxsplit=1)
            current[key.lower()] = value[0].strip() if value else ""
    return sections


def otelcol_config(configs: dict[str, str]) -> dict[str, Any] | None:
    """The first mounted file that is an OpenTelemetry Collector configuration."""
    for text in configs.values():
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("receivers"), dict) and "service" in doc:
            return doc
    return None


def _shipper_kind(w: Workload, c: Obj, config: str, configs: dict[str, str]) -> str | None:
    argv = " ".join(_argv(c))
    names = " ".join(
        [str(c.get("image")), argv, str(c.get("name")), w.name, *w.labels.values()]
    ).lower()
    if "otelcol" in names or "opentelemetry-collector" in names:
        return "otelcol"
    if otelcol_config(configs) is not None:
        return "otelcol"
    if "fluent-bit" in names or "fluentbit" in names or re.search(r"^\s*\[INPUT\]", config, re.M):
        return "fluent-bit"
    if "fluentd" in names or "<source>" in config:
        return "fluentd"
    if re.search(r"\bvector\b", names):
        return "vector"
    return None


_POSITION_FIX = (
    "keep a position database on a hostPath that outlives the pod (fluent-bit tail DB, "
    "fluentd pos_file, the collector's filelog `storage: file_storage`), so a restarted "
    "shipper resumes where its predecessor stopped"
)


_RETRY_FIX = (
    "retry until the backend accepts (fluent-bit Retry_Limit no_limits, the collector's "
    "retry_on_failure.max_elapsed_time: 0) with a buffer on a hostPath (storage.type "
    "filesystem, the collector's sending_queue.storage)"
)

# The file_storage extension's default directory (on Linux).
_FILE_STORAGE_DEFAULT = "/var/lib/otelcol/file_storage"
# retry_on_failure.max_elapsed_time when it is not set.
_DEFAULT_MAX_ELAPSED = "300s"
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: object) -> float | None:
    """A collector duration ("300s", "5m", "1h30m", 0) in seconds; None if unreadable."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


def _storage_dir(doc: dict[str, Any], name: str) -> str | None:
    """Where a file_storage extension keeps its files (None: another kind of storage)."""
    if name.split("/", maxsplit=1)[0] != "file_storage":
        return None
    ext = (doc.get("extensions") or {}).get(name) or {}
    return str(ext.get("directory") or _FILE_STORAGE_DEFAULT)


# The filelog receiver's type, under its current name and its deprecated alias.
_FILELOG = {"file_log", "filelog"}


def _is_filelog(name: str) -> bool:
    return name.split("/", maxsplit=1)[0] in _FILELOG


def _log_pipelines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pipelines = (doc.get("service") or {}).get("pipelines") or {}
    return [
        p for k, p in pipelines.items() if str(k).split("/")[0] == "logs" and isinstance(p, dict)
    ]


def _check_filelog(w: Workload, c: Obj, doc: dict[str, Any], name: str) -> Iterator[Finding]:
    recv = doc["receivers"].get(name) or {}
    storage = recv.get("storage")
    if not storage:
        start = str(recv.get("start_at", "end"))
        then = (
            "starts each file at its end (start_at: end), so lines written meanwhile are never read"
            if start == "end"
            else "reads each file from its beginning again, sending it twice"
        )
        yield w.finding(
            STORY,
            "position-db",
            HIGH,
            f"collector receiver {name} has no `storage`: its file offsets die with the "
            f"process, and a restarted collector {then}",
            _POSITION_FIX,
        )
        return
    where = _storage_dir(doc, str(storage))
    if where is not None and not on_host_path(w.spec, c, where):
        yield w.finding(
            STORY,
            "position-db-not-on-host",
            MEDIUM,
            f"collector receiver {name} keeps its offsets in {storage} at {where}, which is "
            "not on a hostPath volume: they die with the pod",
            "mount a hostPath (DirectoryOrCreate) at the file_storage directory",
        )


def _check_exporter(w: Workload, doc: dict[str, Any], name: str) -> Iterator[Finding]:
    exp = (doc.get("exporters") or {}).get(name) or {}
    queue = exp.get("sending_queue") or {}
    retry = exp.get("retry_on_failure") or {}
    persistent = queue.get("enabled", True) is not False and bool(queue.get("storage"))
    retrying = retry.get("enabled", True) is not False
    limit = retry.get("max_elapsed_time", _DEFAULT_MAX_ELAPSED)
    if retrying and duration_seconds(limit) == 0.0 and persistent:
        return
    problems = []
    if not retrying:
        problems.append("does not retry, so data the backend refuses is dropped")
    elif duration_seconds(limit) != 0.0:
        problems.append(f"gives up after max_elapsed_time {limit} and drops the data")
    if not persistent:
        problems.append("keeps its sending queue in memory, which dies with the pod")
    yield w.finding(
        STORY,
        "retry-limit",
        MEDIUM,
        f"collector exporter {name} " + "; it ".join(problems),
        _RETRY_FIX,
    )


def _check_otelcol(w: Workload, c: Obj, configs: dict[str, str]) -> Iterator[Finding]:
    doc = otelcol_config(configs)
    if doc is None:
        yield w.finding(
            STORY,
            "config-not-found",
            INFO,
            f"OpenTelemetry Collector container {c.get('name')}: no configuration found in a "
            "mounted ConfigMap, so its offsets, queue and retries cannot be checked",
            "check by hand that filelog has `storage` and the exporters a persistent queue",
        )
        return
    pipelines = _log_pipelines(doc)
    receivers = sorted({str(r) for p in pipelines for r in p.get("receivers") or []})
    for name in (r for r in receivers if _is_filelog(r)):
        yield from _check_filelog(w, c, doc, name)
    if any(_is_filelog(r) for r in receivers):
        for name in sorted({str(e) for p in pipelines for e in p.get("exporters") or []}):
            yield from _check_exporter(w, doc, name)


def _check_fluentbit(w: Workload, c: Obj, configs: dict[str, str]) -> Iterator[Finding]:
    # Each file on its own: a YAML config parses only without its neighbours.
    sections = [s for text in configs.values() for s in fluentbit_sections(text)]
    tails = [s for n, s in sections if n == "INPUT" and s.get("name", "").lower() == "tail"]
    if not sections:
        yield w.finding(
            STORY,
            "config-not-found",
            INFO,
            f"fluent-bit container {c.get('name')}: no config found in a mounted ConfigMap, "
            "so its position database and retries cannot be checked",
            "check by hand that every tail input has DB on a hostPath and outputs retry",
        )
        return
    for tail in tails:
        path = tail.get("path", "?")
        db = tail.get("db")
        if not db:
            yield w.finding(
                STORY,
                "position-db",
                HIGH,
                f"fluent-bit tail input {path} has no DB: after a restart it starts at the "
                "end of each file (Read_from_Head false), so lines written meanwhile are "
                "never read",
                _POSITION_FIX,
            )
        elif not on_host_path(w.spec, c, db):
            yield w.finding(
                STORY,
                "position-db-not-on-host",
                MEDIUM,
                f"fluent-bit tail input {path} keeps its DB at {db}, which is not on a "
                "hostPath volume: it dies with the pod",
                "put DB under a hostPath mount (e.g. /var/log/flb_kube.db)",
            )
    outputs = [s for n, s in sections if n == "OUTPUT"]
    memory = any(s.get("storage.type", "memory").lower() == "memory" for s in tails) or not tails
    for out in outputs:
        limit = out.get("retry_limit", "1")
        if limit.strip().lower() == "1" and memory:
            yield w.finding(
                STORY,
                "retry-limit",
                MEDIUM,
                f"fluent-bit output {out.get('name', '?')} (match {out.get('match', '*')}) "
                f"has Retry_Limit {limit if 'retry_limit' in out else '1 (the default)'} and "
                "the inputs buffer in memory: chunks the backend rejects twice are dropped, "
                "and buffered chunks die with the pod",
                _RETRY_FIX,
            )


def _check_fluentd(w: Workload, c: Obj, config: str) -> Iterator[Finding]:
    sources = re.findall(r"<source>(.*?)</source>", config, re.S)
    if not sources:
        yield w.finding(
            STORY,
            "config-not-found",
            INFO,
            f"fluentd container {c.get('name')}: no <source> found in a mounted ConfigMap, "
            "so its pos_file cannot be checked",
            "check by hand that every tail source has a pos_file on a hostPath",
        )
        return
    for body in sources:
        if not re.search(r"@type\s+tail\b", body):
            continue
        path = (re.search(r"^\s*path\s+(\S+)", body, re.M) or [None, "?"])[1]
        pos = re.search(r"^\s*pos_file\s+(\S+)", body, re.M)
        if pos is None:
            yield w.finding(
                STORY,
                "position-db",
                HIGH,
                f"fluentd tail source {path} has no pos_file: a restarted fluentd does not "
                "know where it stopped",
                _POSITION_FIX,
            )
        elif not on_host_path(w.spec, c, pos.group(1)):
            yield w.finding(
                STORY,
                "position-db-not-on-host",
                MEDIUM,
                f"fluentd tail source {path} keeps its pos_file at {pos.group(1)}, which is "
                "not on a hostPath volume: it dies with the pod",
                "put pos_file under a hostPath mount",
            )


def _check_vector(w: Workload, c: Obj, config: str) -> Iterator[Finding]:
    m = re.search(r"data_dir\s*[=:]\s*[\"']?([^\"'\s]+)", config)
    data_dir = m.group(1) if m else "/var/lib/vector"
    if not on_host_path(w.spec, c, data_dir):
        yield w.finding(
            STORY,
            "position-db-not-on-host",
            MEDIUM,
            f"vector keeps its checkpoints (and disk buffers) in data_dir {data_dir}, which "
            "is not on a hostPath volume: a new pod starts without them",
            "mount a hostPath at vector's data_dir",
        )


def check_log_shippers(snap: Snapshot) -> Iterator[Finding]:
    for w in workloads(snap):
        if w.kind != "DaemonSet":
            continue
        configs = _configmap_text(w.namespace, _mounted_configmaps(w.spec), snap)
        config = "\n".join(configs.values())
        for c in w.containers:
            kind = _shipper_kind(w, c, config, configs)
            if kind == "otelcol":
                yield from _check_otelcol(w, c, configs)
            elif kind == "fluent-bit":
                yield from _check_fluentbit(w, c, configs)
            elif kind == "fluentd":
                yield from _check_fluentd(w, c, config)
            elif kind == "vector":
                yield from _check_vector(w, c, config)


CHECKS = (check_log_shippers,)
