"""The prometheuskube-missing-logs story's exposure audit (`kfs audit`): does a live cluster show
the pattern this incident grew from? Pure functions over a Snapshot."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

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


def _shipper_kind(w: Workload, c: Obj, config: str) -> str | None:
    argv = " ".join(_argv(c))
    if "shipper.py" in argv:
        return "shipper.py"
    names = " ".join(
        [str(c.get("image")), argv, str(c.get("name")), w.name, *w.labels.values()]
    ).lower()
    if "fluent-bit" in names or "fluentbit" in names or re.search(r"^\s*\[INPUT\]", config, re.M):
        return "fluent-bit"
    if "fluentd" in names or "<source>" in config:
        return "fluentd"
    if re.search(r"\bvector\b", names):
        return "vector"
    return None


_POSITION_FIX = (
    "keep a position database on a hostPath that outlives the pod (fluent-bit tail DB, "
    "fluentd pos_file, our shipper's --state-dir), so a restarted shipper resumes where "
    "its predecessor stopped"
)


_RETRY_FIX = (
    "retry until the backend accepts (fluent-bit Retry_Limit no_limits, our shipper's "
    "--retry-limit none) with a filesystem buffer (storage.type filesystem) on a hostPath"
)


def _option(argv: list[str], name: str) -> str | None:
    """The value of --name VALUE or --name=VALUE; '' for a bare flag; None if absent."""
    for i, arg in enumerate(argv):
        if arg == name:
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            return "" if nxt.startswith("--") else nxt
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _shell_argv(c: Obj) -> list[str]:
    """argv, with `sh -c "..."` scripts split into words too."""
    out: list[str] = []
    for arg in _argv(c):
        try:
            out += shlex.split(arg) if " " in arg else [arg]
        except ValueError:
            out.append(arg)
    return out


def _check_shipper_py(w: Workload, c: Obj) -> Iterator[Finding]:
    argv = _shell_argv(c)
    state = next(
        (v for v in (_option(argv, o) for o in ("--state-dir", "--position-db")) if v is not None),
        None,
    )
    if state is None and _option(argv, "--durable") is None:
        yield w.finding(
            STORY,
            "position-db",
            HIGH,
            f"shipper.py in container {c.get('name')} runs without --state-dir: no position "
            "database and a memory buffer, so a restart loses what was buffered and skips "
            "what was written while it was down",
            _POSITION_FIX,
        )
    elif state and not on_host_path(w.spec, c, state):
        yield w.finding(
            STORY,
            "position-db-not-on-host",
            MEDIUM,
            f"shipper.py keeps its state in {state}, which is not on a hostPath volume: "
            "it dies with the pod",
            "mount a hostPath (DirectoryOrCreate) at the state directory",
        )
    limit = _option(argv, "--retry-limit")
    if limit is None or limit.lower() not in ("none", "false", "no_limits"):
        yield w.finding(
            STORY,
            "retry-limit",
            MEDIUM,
            f"shipper.py gives up on a chunk after {limit or '1 (the default)'} retries: "
            "while the backend rejects writes (HTTP 429) chunks are dropped for good",
            _RETRY_FIX,
        )


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
            kind = _shipper_kind(w, c, config)
            if kind == "shipper.py":
                yield from _check_shipper_py(w, c)
            elif kind == "fluent-bit":
                yield from _check_fluentbit(w, c, configs)
            elif kind == "fluentd":
                yield from _check_fluentd(w, c, config)
            elif kind == "vector":
                yield from _check_vector(w, c, config)


CHECKS = (check_log_shippers,)
