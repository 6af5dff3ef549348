"""JW Player 2019: an exposed, unauthenticated dashboard runs a cryptominer called gcc.

The dashboard (workloads/dashboard.py) is a DELIBERATELY VULNERABLE stand-in
that runs shell commands sent over HTTP; the "miner" (fakeminer.py) is a harmless,
self-limiting busy loop named gcc. Both live only in this run's namespace.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from failure_stories import (
    OutsideHost,
    ProviderError,
    RefusedError,
    RunContext,
    WaitTimeout,
    wait_for,
)

OUTSIDE_NET = "203.0.113.0/24"
DASHBOARD_PORT = 4040
MINER_SECONDS = 120
MINER_CMD = (
    f"nohup python3 /opt/kfs/workloads/fakeminer.py --seconds {MINER_SECONDS} "
    ">/dev/null 2>&1 & echo started"
)
# Detector: each scan lists the node's processes, then measures the CPU of the
# suspects over this interval (on the node, with the node's clock).
CPU_INTERVAL = 3.0
SCANS = 2
# One busy thread capped by the dashboard's 500m limit burns about 0.5 cores; an
# idle or I/O-bound process stays near 0. 0.2 leaves room for a busy neighbour.
BURNING_CORES = 0.2
BUILD_LABEL = "kfs.dev/build-job"
# ps cuts a column that is not the last one to its default width; a pod's cgroup
# line (one path per v1 hierarchy) runs to about 1,500 characters.
PS_FORMAT = "pid=,cgroup:4096=,comm="
PSA_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}

# -- the detector's pure logic (unit-tested in tests/unit/test_jwplayer_detector.py)

# Compiler drivers and their back ends, optionally versioned (gcc-12) or
# target-prefixed (avr-gcc): the names a miner hides behind. The kernel keeps
# only 15 characters of comm, so long cross-compiler names never match; a
# disguise has to stay short to look like a compiler in top anyway.
_COMPILER = re.compile(
    r"^(?:[a-z0-9_]+-(?:[a-z0-9_]+-)*)?(?:gcc|g\+\+|cc|c\+\+|cc1|cc1plus|clang|clang\+\+)"
    r"(?:-\d+(?:\.\d+)*)?$"
)
# The pod UID in a cgroup path, for both kubelet cgroup drivers:
#   cgroupfs: .../kubepods/burstable/pod1b4e...-.../<container id>
#   systemd:  .../kubepods-burstable-pod1b4e..._....slice/cri-containerd-<id>.scope
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
)


@dataclass(frozen=True)
class PsRow:
    pid: int
    cgroup: str
    comm: str


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    owner_kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    pid: int
    comm: str
    cores: float
    pod_uid: str
    pod: PodInfo | None  # None: the API no longer knows the pod


def parse_ps(text: str) -> list[PsRow]:
    """Rows of `ps -e -ww -o pid=,cgroup:4096=,comm=` (comm last: it may hold spaces)."""
    rows = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit():
            rows.append(PsRow(int(parts[0]), parts[1], parts[2].strip()))
    return rows


def is_compiler_name(comm: str) -> bool:
    return bool(_COMPILER.match(comm))


def pod_uid_from_cgroup(cgroup: str) -> str | None:
    """The UID of the pod owning a process, or None if it is not in a pod's cgroup."""
    if "kubepods" not in cgroup:
        return None
    match = _POD_UID.search(cgroup)
    return match.group(1).replace("_", "-") if match else None


def stat_ticks(line: str) -> tuple[int, int]:
    """(pid, utime + stime in clock ticks) from one /proc/<pid>/stat line."""
    pid = int(line.split(" ", 1)[0])
    # comm sits in parentheses and may hold spaces or ")"; fields follow the last ")".
    fields = line.rsplit(")", 1)[1].split()
    return pid, int(fields[11]) + int(fields[12])


def parse_cpu_sample(text: str, clk_tck: int) -> dict[int, float]:
    """CPU cores used per pid between two snapshots, from the node command's output.

    Each snapshot is /proc/uptime followed by the suspects' /proc/<pid>/stat lines;
    the two are separated by a line "---". A pid missing from either side exited.
    """
    first, _, second = text.partition("\n---\n")

    def snapshot(part: str) -> tuple[float, dict[int, int]]:
        lines = [x for x in part.strip().splitlines() if x.strip()]
        uptime = float(lines[0].split()[0])
        return uptime, dict(stat_ticks(x) for x in lines[1:])

    t0, before = snapshot(first)
    t1, after = snapshot(second)
    wall = t1 - t0
    if wall <= 0:
        return {}
    return {
        pid: round((after[pid] - before[pid]) / clk_tck / wall, 3)
        for pid in before.keys() & after.keys()
    }


def is_build_pod(pod: PodInfo) -> bool:
    """Compilers are expected in build jobs: pods run by a Job or marked as builds."""
    return pod.labels.get(BUILD_LABEL) == "true" or bool({"Job", "CronJob"} & set(pod.owner_kinds))


def classify(
    rows: Iterable[PsRow],
    cores: Mapping[int, float],
    pods: Mapping[str, PodInfo],
    threshold: float = BURNING_CORES,
) -> list[Finding]:
    """Compiler-named processes in a pod's cgroup, burning CPU, outside build jobs."""
    found = []
    for row in rows:
        uid = pod_uid_from_cgroup(row.cgroup)
        if uid is None or not is_compiler_name(row.comm):
            continue
        used = cores.get(row.pid, 0.0)
        if used < threshold:
            continue
        pod = pods.get(uid)
        if pod is not None and is_build_pod(pod):
            continue
        found.append(Finding(row.pid, row.comm, used, uid, pod))
    return found


def suspects(rows: Iterable[PsRow]) -> list[PsRow]:
    return [r for r in rows if is_compiler_name(r.comm) and pod_uid_from_cgroup(r.cgroup)]


# -- the detector on the node ----------------------------------------------------------

# A suspect may exit between ps and the second snapshot (its cat then fails): the
# script ends in `true` so that a vanished pid reads as "exited", never as an error.
_SAMPLE = (
    'cat /proc/uptime; for p in "$@"; do cat /proc/$p/stat 2>/dev/null; done; echo ---; '
    'sleep "$KFS_INTERVAL"; '
    'cat /proc/uptime; for p in "$@"; do cat /proc/$p/stat 2>/dev/null; done; true'
)


def _ps(ctx: RunContext) -> list[PsRow]:
    return parse_ps(
        ctx.node_shell.node_exec(ctx.state["node"], ["ps", "-e", "-ww", "-o", PS_FORMAT])
    )


def _pods_by_uid(ctx: RunContext) -> dict[str, PodInfo]:
    return {
        p.metadata.uid: PodInfo(
            p.metadata.namespace,
            p.metadata.name,
            dict(p.metadata.labels or {}),
            tuple(o.kind for o in p.metadata.owner_references or []),
        )
        for p in ctx.kube.core.list_pod_for_all_namespaces().items
    }


def _scan(ctx: RunContext) -> list[Finding]:
    """One scan: list processes, then measure the suspects' CPU over CPU_INTERVAL.

    The node command always sleeps the interval, suspects or not, so that every
    phase watches the node for the same time.
    """
    rows = _ps(ctx)
    pids = [str(r.pid) for r in suspects(rows)]
    out = ctx.node_shell.node_exec(
        ctx.state["node"],
        ["env", f"KFS_INTERVAL={CPU_INTERVAL:g}", "sh", "-c", _SAMPLE, "kfs-sample", *pids],
    )
    cores = parse_cpu_sample(out, ctx.state["clk_tck"])
    return classify(rows, cores, _pods_by_uid(ctx))


def _detect(ctx: RunContext) -> dict[str, float]:
    # Every pod this run has had, so a miner that outlived its (deleted) pod still
    # counts as ours.
    seen: set[str] = ctx.state.setdefault("pod_uids", set())
    ours: dict[int, Finding] = {}
    for _ in range(SCANS):
        seen.update(p.metadata.uid for p in ctx.kube.pods(ctx.namespace))
        for f in _scan(ctx):
            if f.pod_uid in seen:
                ours[f.pid] = f
                ctx.record("miner_cpu_cores", f.cores)
            else:
                # Other tenants of this shared node are reported, never counted.
                where = f"{f.pod.namespace}/{f.pod.name}" if f.pod else "an unknown pod"
                ctx.log(f"detector: {f.comm} pid {f.pid} in {where} at {f.cores} cores")
    for f in ours.values():
        where = f"{f.pod.namespace}/{f.pod.name}" if f.pod else f"(deleted) {f.pod_uid}"
        ctx.log(f"detector: {f.comm!r} pid {f.pid} in pod {where} burns {f.cores} cores")
    return {
        "miner_processes_detected": len(ours),
        "miner_cpu_cores_max": max((f.cores for f in ours.values()), default=0.0),
    }


def _stop_miners(ctx: RunContext) -> None:
    """Kill stand-in miners of this run still alive (they also stop on their own)."""
    uids = {p.metadata.uid for p in ctx.kube.pods(ctx.namespace)} | ctx.state.get("pod_uids", set())
    for row in suspects(_ps(ctx)):
        if pod_uid_from_cgroup(row.cgroup) in uids:
            ctx.node_shell.node_exec(
                ctx.state["node"], ["kill", "-TERM", str(row.pid)], check=False
            )


# -- HTTP, from the outside host or from a pod -------------------------------------------

Runner = Callable[[list[str]], str]


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no HTTP answer at all (refused, timed out, unreachable)
    body: dict[str, Any]


def _curl(run: Runner, method: str, url: str, cmd: str | None = None, token: str = "") -> Reply:
    argv = ["curl", "-s", "-m", "5", "-X", method, "-o", "-", "-w", "\n%{http_code}"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    if cmd is not None:
        argv += ["-H", "Content-Type: application/json", "--data", json.dumps({"cmd": cmd})]
    out = run([*argv, url])
    text, _, code = out.rpartition("\n")
    try:
        body = json.loads(text) if text.strip() else {}
    except ValueError:
        body = {"raw": text[-200:]}
    return Reply(int(code) if code.strip().isdigit() else 0, body if isinstance(body, dict) else {})


def _from_outside(outside: OutsideHost) -> Runner:
    return lambda argv: outside.exec(argv, check=False, timeout=30)


def _from_caller(ctx: RunContext) -> Runner:
    def run(argv: list[str]) -> str:
        _code, out, _err = ctx.kube.exec(ctx.namespace, "caller", argv, timeout=30)
        return out

    return run


@dataclass
class Attack:
    exec_succeeded: bool
    uid: int  # -1 when no command ran
    statuses: tuple[int, ...]  # HTTP status of each request, 0 for no answer


def _attack(run: Runner, base: str, token: str = "") -> Attack:
    """What the intruder did: check for a shell as root, then start the miner."""
    whoami = _curl(run, "POST", f"{base}/exec", "id -u", token)
    start = _curl(run, "POST", f"{base}/exec", MINER_CMD, token)
    ran = [r for r in (whoami, start) if r.status == 200 and r.body.get("rc") == 0]
    uid = -1
    if whoami in ran and str(whoami.body.get("stdout", "")).strip().isdigit():
        uid = int(str(whoami.body["stdout"]).strip())
    return Attack(bool(ran), uid, (whoami.status, start.status))


def _exposed_base(ctx: RunContext) -> str:
    """Where the outside finds the dashboard: its NodePort on the node, or (not
    exposed) only the dashboard's own port there, which nothing serves."""
    outside: OutsideHost = ctx.state["outside"]
    svc = ctx.kube.core.read_namespaced_service("dashboard", ctx.namespace)
    port = next((p.node_port for p in svc.spec.ports if p.node_port), None) or DASHBOARD_PORT
    return f"http://{outside.node_address}:{port}"


def _attack_both_ways(ctx: RunContext) -> dict[str, float]:
    outside: OutsideHost = ctx.state["outside"]
    url = _exposed_base(ctx)
    ext = _attack(_from_outside(outside), url)
    ctx.log(
        f"attack from {outside.address} on {url}: HTTP {ext.statuses}, "
        f"exec {ext.exec_succeeded}, uid {ext.uid}"
    )
    inside = _attack(_from_caller(ctx), f"http://{ctx.state['cluster_ip']}")
    ctx.log(
        f"attack from pod caller without a token: HTTP {inside.statuses}, "
        f"exec {inside.exec_succeeded}, uid {inside.uid}"
    )
    return {
        "outside_exec_succeeded": 1.0 if ext.exec_succeeded else 0.0,
        "outside_exec_uid": ext.uid,
        "in_cluster_unauthenticated_exec_succeeded": 1.0 if inside.exec_succeeded else 0.0,
    }


# -- the vulnerable manifest, put to the API server ------------------------------------------


def _vulnerable_objects(ctx: RunContext) -> list[dict[str, Any]]:
    """The dashboard's Deployment and Service from fault.yaml, plus the Pod its
    ReplicaSet would create (Pod Security Admission judges pods, not templates)."""
    objs = [
        o
        for o in ctx.manifest("fault.yaml")
        if o["metadata"]["name"] == "dashboard" and o["kind"] in ("Deployment", "Service")
    ]
    template = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dashboard-dry-run", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }
    return [*objs, pod]


def _admission(ctx: RunContext) -> dict[str, float]:
    admitted, by_psa, by_policy = 0, 0, 0
    for obj in _vulnerable_objects(ctx):
        refusal = ctx.kube.dry_run_admission(obj, ctx.namespace)
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if refusal is None:
            admitted += 1
            ctx.log(f"dry-run: {name} would be admitted")
            continue
        ctx.log(f"dry-run: {name} refused: {refusal[:300]}")
        by_psa += "PodSecurity" in refusal
        by_policy += "ValidatingAdmissionPolicy" in refusal
    return {
        "vulnerable_manifest_admitted": 1.0 if admitted else 0.0,
        "vulnerable_objects_admitted": admitted,
        "refused_by_pod_security": by_psa,
        "refused_by_admission_policy": by_policy,
    }


# -- phases -------------------------------------------------------------------------------------


def _outside_host(ctx: RunContext) -> OutsideHost:
    """An "internet" host; waits while another run holds the same documentation range."""

    def create() -> OutsideHost | None:
        try:
            return ctx.outside_network.outside_host(OUTSIDE_NET, node=ctx.state["node"])
        except ProviderError as exc:
            if "already exists" in str(exc):
                return None
            raise

    host = wait_for(create, what=f"a free outside host on {OUTSIDE_NET}", timeout=300, interval=5)
    assert host is not None  # wait_for returns only a truthy value
    return host


def setup(ctx: RunContext) -> None:
    """The dashboard as it should run (hardened.yaml), without the guard rails."""
    ctx.variables["DASHBOARD_TOKEN"] = ctx.state["token"] = secrets.token_urlsafe(24)
    ctx.apply("baseline.yaml")
    ctx.apply("hardened.yaml")
    ctx.kube.wait_rollout(ctx.namespace, "dashboard")
    ctx.kube.wait_pod_running(ctx.namespace, "caller")
    ctx.state["cluster_ip"] = ctx.kube.wait_service_answers(
        ctx.namespace, "dashboard", from_pod="caller"
    )
    pod = ctx.kube.pods(ctx.namespace, "app=dashboard")[0]
    ctx.state["node"] = pod.spec.node_name
    ctx.state["clk_tck"] = int(
        ctx.node_shell.node_exec(ctx.state["node"], ["getconf", "CLK_TCK"]).strip()
    )
    outside = _outside_host(ctx)
    ctx.defer(f"delete outside host {outside.name}", outside.delete)
    ctx.state["outside"] = outside
    ctx.defer("stop stand-in miners of this run", lambda: _stop_miners(ctx))
    ctx.log(f"outside host {outside.address} (netns {outside.name})")


def steady_state(ctx: RunContext) -> dict[str, float]:
    inside = _curl(
        _from_caller(ctx), "GET", f"http://{ctx.state['cluster_ip']}/", token=ctx.state["token"]
    )
    exposed = _curl(_from_outside(ctx.state["outside"]), "GET", f"{_exposed_base(ctx)}/")
    return {
        "dashboard_answers": 1.0 if inside.status == 200 else 0.0,
        "outside_dashboard_reachable": 1.0 if exposed.status == 200 else 0.0,
        **_detect(ctx),
    }


def inject(ctx: RunContext) -> None:
    """The latent fault: the dashboard redeployed exposed, unauthenticated, privileged."""
    ctx.apply("fault.yaml")
    ctx.kube.wait_rollout(ctx.namespace, "dashboard")
    ctx.kube.wait_service_answers(ctx.namespace, "dashboard", from_pod="caller")
    outside: OutsideHost = ctx.state["outside"]
    # kube-proxy serves NodePorts on every node address unless nodePortAddresses
    # says otherwise; the one the outside host reaches is one, so check it answers.
    url = f"{_exposed_base(ctx)}/healthz"
    wait_for(
        lambda: _curl(_from_outside(outside), "GET", url).status == 200,
        what=f"the NodePort to answer {outside.address} at {url}",
        timeout=60,
        interval=1,
    )
    ctx.log(f"dashboard exposed at {url} to {outside.address} (netns {outside.name})")


def expose(ctx: RunContext) -> None:
    """The event: an attacker outside, and a pod without a token inside, send the
    dashboard commands (who am I, then start the miner)."""
    ctx.state["attack"] = _attack_both_ways(ctx)


def symptom(ctx: RunContext) -> dict[str, float]:
    ctx.expose()
    return {**ctx.state.pop("attack"), **_detect(ctx), **_admission(ctx)}


def _set_namespace_labels(ctx: RunContext, labels: Mapping[str, str | None]) -> None:
    ctx.kube.core.patch_namespace(ctx.namespace, {"metadata": {"labels": dict(labels)}})


def mitigate(ctx: RunContext) -> None:
    run = secrets.token_hex(3)
    ctx.variables.update(
        POLICY_WORKLOADS=f"kfs-jwplayer-no-host-access-{run}",
        POLICY_SERVICES=f"kfs-jwplayer-internal-services-{run}",
    )
    objs = [*ctx.manifest("hardened.yaml"), *ctx.manifest("mitigation.yaml")]
    for obj in objs:
        if obj["kind"].startswith("ValidatingAdmissionPolicy"):
            ctx.defer(
                f"delete {obj['kind']} {obj['metadata']['name']}",
                functools.partial(ctx.kube.delete, obj, None),
            )
    ns = ctx.kube.core.read_namespace(ctx.namespace)
    before = {k: (ns.metadata.labels or {}).get(k) for k in PSA_LABELS}
    ctx.defer(
        "restore the namespace's Pod Security labels", lambda: _set_namespace_labels(ctx, before)
    )
    _set_namespace_labels(ctx, PSA_LABELS)
    ctx.kube.apply(objs, ctx.namespace)
    ctx.kube.wait_rollout(ctx.namespace, "dashboard")
    svc = ctx.kube.core.read_namespaced_service("dashboard", ctx.namespace)
    if svc.spec.type != "ClusterIP" or any(p.node_port for p in svc.spec.ports):
        raise RefusedError(f"the dashboard Service is still exposed: {svc.spec.type}")
    ctx.kube.wait_service_answers(ctx.namespace, "dashboard", from_pod="caller")
    # A new policy is enforced once the API server has loaded it (about a second).
    # Wait for that, but let verify judge: a policy never enforced shows up there.
    try:
        wait_for(
            lambda: _admission(ctx)["vulnerable_objects_admitted"] == 0,
            what="the admission policies to be enforced",
            timeout=30,
            interval=2,
        )
    except WaitTimeout as exc:
        ctx.log(f"warning: {exc}")


def verify(ctx: RunContext) -> dict[str, float]:
    ctx.expose()
    attack = ctx.state.pop("attack")
    legit = _curl(
        _from_caller(ctx),
        "POST",
        f"http://{ctx.state['cluster_ip']}/exec",
        "id -u",
        ctx.state["token"],
    )
    ok = legit.status == 200 and legit.body.get("rc") == 0
    ctx.log(f"operator with the token: HTTP {legit.status}, uid {legit.body.get('stdout', '')!r}")
    return {
        **attack,
        "authorized_exec_succeeded": 1.0 if ok else 0.0,
        "authorized_exec_uid": int(str(legit.body["stdout"]).strip()) if ok else -1,
        **_detect(ctx),
        **_admission(ctx),
    }
