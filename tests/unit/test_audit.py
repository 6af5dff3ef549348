"""The exposure audit's checks, from hand-written objects: each one fires on the
vulnerable shape and stays quiet on the fixed one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from failure_stories import audit as A
from failure_stories.cli import audit as audit_cli
from failure_stories.core.errors import ClusterUnreachableError

Obj = dict[str, Any]

# A pod spec that trips no check of its own, for objects that test something else.
SAFE_SPEC: Obj = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 65534},
    "containers": [{"name": "app", "image": "example/app:1"}],
}


def docs(text: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(text) if d]


def deployment(
    name: str,
    replicas: int = 3,
    spec: Obj | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    kind: str = "Deployment",
    namespace: str = "shop",
) -> Obj:
    pod_labels = {"app": name, **(labels or {})}
    obj: Obj = {
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": spec or SAFE_SPEC},
        },
    }
    if kind != "DaemonSet":
        obj["spec"]["replicas"] = replicas
    return obj


def pod(name: str, spec: Obj, labels: dict[str, str] | None = None, **status: Any) -> Obj:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels or {"app": name}},
        "spec": spec,
        "status": {"phase": "Running", **status},
    }


def checks(findings: list[A.Finding], name: str, story: str | None = None) -> dict[str, str]:
    """{check: severity} of the findings about objects called ``name`` (of one story)."""
    return {
        f.check: f.severity
        for f in findings
        if f.name == name and (story is None or f.story == story)
    }


# -- moonlight-anti-affinity -----------------------------------------------------------

ANTI_AFFINITY: Obj = {
    "podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": A.HOSTNAME_KEY}
        ]
    }
}


def _web(**spec: Any) -> Obj:
    return deployment("web", spec={**SAFE_SPEC, **spec})


def test_replicas_without_anti_affinity_are_flagged_and_spread_ones_are_not():
    bare = A.audit(A.Snapshot(deployments=[_web()]))
    assert checks(bare, "web") == {"no-anti-affinity": A.MEDIUM}
    fixed = _web(affinity=ANTI_AFFINITY)
    assert checks(A.audit(A.Snapshot(deployments=[fixed])), "web") == {}


def test_preferred_anti_affinity_and_spread_constraints_count_as_spreading():
    preferred = _web(
        affinity={
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {
                                "matchExpressions": [
                                    {"key": "app", "operator": "In", "values": ["web"]}
                                ]
                            },
                            "topologyKey": A.HOSTNAME_KEY,
                        },
                    }
                ]
            }
        }
    )
    spread = _web(
        topologySpreadConstraints=[
            {
                "maxSkew": 1,
                "topologyKey": A.HOSTNAME_KEY,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "web"}},
            }
        ]
    )
    for obj in (preferred, spread):
        assert checks(A.audit(A.Snapshot(deployments=[obj])), "web") == {}


def test_anti_affinity_that_selects_other_pods_or_zones_keeps_nothing_apart():
    other = _web(
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": A.HOSTNAME_KEY}
                ]
            }
        }
    )
    assert "no-anti-affinity" in checks(A.audit(A.Snapshot(deployments=[other])), "web")
    single = deployment("web", replicas=1)
    assert checks(A.audit(A.Snapshot(deployments=[single])), "web") == {}
    sts = deployment("db", kind="StatefulSet")
    assert "no-anti-affinity" in checks(A.audit(A.Snapshot(statefulsets=[sts])), "db")


def _ready_pod(name: str, node: str) -> Obj:
    p = pod(name, {**SAFE_SPEC, "nodeName": node}, labels={"app": "web"})
    p["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-1"}]
    p["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return p


def test_ready_replicas_all_on_one_node_are_reported():
    web = _web(affinity=ANTI_AFFINITY)
    together = A.Snapshot(deployments=[web], pods=[_ready_pod("a", "n1"), _ready_pod("b", "n1")])
    assert checks(A.audit(together), "web") == {"replicas-on-one-node": A.INFO}
    apart = A.Snapshot(deployments=[web], pods=[_ready_pod("a", "n1"), _ready_pod("b", "n2")])
    assert checks(A.audit(apart), "web") == {}


# -- buffer-cpu-throttling -------------------------------------------------------------


def _api(limits: Obj, labels: dict[str, str] | None = None, **kw: Any) -> Obj:
    spec = {
        **SAFE_SPEC,
        "containers": [
            {"name": "api", "image": "x", "resources": {"requests": {"cpu": "200m"}, **limits}}
        ],
    }
    return deployment("api", replicas=1, spec=spec, labels=labels, **kw)


def test_cpu_limit_on_latency_critical_workload_is_flagged():
    critical = {A.LATENCY_CRITICAL: "true"}
    found = A.audit(A.Snapshot(deployments=[_api({"limits": {"cpu": "200m"}}, critical)]))
    assert checks(found, "api") == {"cpu-limit-on-latency-critical": A.MEDIUM}
    assert "20 ms of CPU per 100 ms" in found[0].message
    fixed = _api({"limits": {"memory": "256Mi"}}, critical)
    assert A.audit(A.Snapshot(deployments=[fixed])) == []
    by_annotation = _api({"limits": {"cpu": "1"}}, annotations=critical)
    assert "cpu-limit-on-latency-critical" in checks(
        A.audit(A.Snapshot(deployments=[by_annotation])), "api"
    )


def test_cpu_limits_on_unlabelled_workloads_are_only_counted():
    found = A.audit(A.Snapshot(deployments=[_api({"limits": {"cpu": "500m"}})]))
    assert [(f.check, f.severity, f.object) for f in found] == [
        ("cpu-limits-elsewhere", A.INFO, "Cluster/unlabelled-workloads")
    ]
    assert found[0].message.startswith("1 containers in 1 workloads")


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ("4.15.0-1044-gke", {"old-kernel": A.MEDIUM}),
        ("4.19.84-coreos", {"old-kernel": A.LOW}),
        ("5.4.0-1009-aws", {}),
        ("6.1.0-18-amd64", {}),
        ("kwok-0.7.0", {}),
    ],
)
def test_kernels_before_the_cfs_fix_are_flagged(kernel: str, expected: dict[str, str]):
    node = {"metadata": {"name": "n1"}, "status": {"nodeInfo": {"kernelVersion": kernel}}}
    found = A.audit(A.Snapshot(nodes=[node]))
    assert checks(found, "n1") == expected
    if expected == {"old-kernel": A.LOW}:
        assert "backport" in found[0].message


def test_cpu_quantities():
    assert A.cpu_cores("250m") == 0.25
    assert A.cpu_cores("2") == 2.0
    assert A.cpu_cores(1.5) == 1.5
    assert A.cpu_cores("lots") is None


# -- flant-redis-data-loss -------------------------------------------------------------


def _redis(probe: Obj | None, kind: str = "StatefulSet", volumes: list[Obj] | None = None) -> Obj:
    container: Obj = {
        "name": "redis",
        "image": "redis:7.2",
        "command": ["redis-server", "--replicaof", "redis-0.redis", "6379"],
    }
    if probe is not None:
        container["readinessProbe"] = probe
    exporter = {"name": "metrics", "image": "oliver006/redis_exporter:v1.55"}
    spec = {**SAFE_SPEC, "containers": [container, exporter], "volumes": volumes or []}
    return deployment("redis", replicas=3, spec=spec, kind=kind)


PING = {"exec": {"command": ["redis-cli", "ping"]}, "periodSeconds": 5}
AWARE = {
    "exec": {
        "command": [
            "sh",
            "-c",
            "redis-cli info replication | grep -q master_link_status:up && "
            "redis-cli info replication | grep -q master_sync_in_progress:0",
        ]
    }
}


def test_redis_ready_on_ping_or_without_probe_is_flagged():
    for probe in (PING, None, {"tcpSocket": {"port": 6379}}):
        found = A.audit(A.Snapshot(statefulsets=[_redis(probe)]))
        assert checks(found, "redis", "flant-redis-data-loss") == {"redis-readiness": A.HIGH}, probe
    assert (
        checks(A.audit(A.Snapshot(statefulsets=[_redis(AWARE)])), "redis", "flant-redis-data-loss")
        == {}
    )


def test_redis_probe_scripts_are_read_from_mounted_configmaps():
    script_probe = {"exec": {"command": ["sh", "-c", "/health/ping_readiness_local.sh 1"]}}
    volumes = [{"name": "health", "configMap": {"name": "redis-health"}}]

    def cm(body: str) -> Obj:
        return {
            "metadata": {"name": "redis-health", "namespace": "shop"},
            "data": {"ping_readiness_local.sh": body},
        }

    sts = _redis(script_probe, volumes=volumes)
    pinged = A.Snapshot(statefulsets=[sts], configmaps=[cm('[ "$(redis-cli ping)" = PONG ]')])
    assert checks(A.audit(pinged), "redis", "flant-redis-data-loss") == {"redis-readiness": A.HIGH}
    aware = A.Snapshot(
        statefulsets=[sts],
        configmaps=[cm("redis-cli info replication | grep master_link_status:up")],
    )
    assert checks(A.audit(aware), "redis", "flant-redis-data-loss") == {}


def test_redis_probes_the_audit_cannot_read_are_low_and_our_own_probe_passes():
    baked = {"exec": {"command": ["/usr/local/bin/check-redis.sh"]}}
    found = A.audit(A.Snapshot(statefulsets=[_redis(baked)]))
    assert checks(found, "redis", "flant-redis-data-loss") == {"redis-readiness": A.LOW}
    message = next(f.message for f in found if f.story == "flant-redis-data-loss")
    assert "unless it checks replication" in message
    # The RedisFailover operator's safe probe (images/workloads/redis_ready.py).
    ours = {"exec": {"command": ["python3", "/opt/kfs/workloads/redis_ready.py"]}}
    assert (
        checks(A.audit(A.Snapshot(statefulsets=[_redis(ours)])), "redis", "flant-redis-data-loss")
        == {}
    )


def test_a_standalone_redis_pod_is_a_lesser_risk():
    spec = {
        **SAFE_SPEC,
        "containers": [{"name": "cache", "image": "redis:7", "readinessProbe": PING}],
    }
    found = A.audit(A.Snapshot(pods=[pod("cache", spec)]))
    assert checks(found, "cache") == {"redis-readiness": A.MEDIUM}


# -- jwplayer-exposed-dashboard --------------------------------------------------------


def service(name: str, kind: str, annotations: dict[str, str] | None = None, **spec: Any) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "shop", "annotations": annotations or {}},
        "spec": {"type": kind, "selector": {"app": name}, **spec},
    }


def test_external_dashboard_services_are_high_and_internal_ones_pass():
    found = A.audit(A.Snapshot(services=[service("weave-scope-app", "NodePort")]))
    assert checks(found, "weave-scope-app") == {"external-service": A.HIGH}
    assert A.audit(A.Snapshot(services=[service("weave-scope-app", "ClusterIP")])) == []
    internal = service(
        "grafana",
        "LoadBalancer",
        {"service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"},
    )
    assert A.audit(A.Snapshot(services=[internal])) == []
    gke = service("grafana", "LoadBalancer", {"networking.gke.io/load-balancer-type": "Internal"})
    assert A.audit(A.Snapshot(services=[gke])) == []


def test_other_external_services_are_medium_and_source_ranges_lower_it():
    public = A.audit(A.Snapshot(services=[service("shop-api", "LoadBalancer")]))
    assert checks(public, "shop-api") == {"external-service": A.MEDIUM}
    fenced = service("shop-api", "LoadBalancer", loadBalancerSourceRanges=["192.0.2.0/24"])
    assert checks(A.audit(A.Snapshot(services=[fenced])), "shop-api") == {"external-service": A.LOW}
    ips = service("shop-api", "ClusterIP", externalIPs=["192.0.2.7"])
    assert "external-service" in checks(A.audit(A.Snapshot(services=[ips])), "shop-api")


def test_a_dashboard_is_recognised_by_the_image_behind_the_service():
    spec = {**SAFE_SPEC, "containers": [{"name": "app", "image": "weaveworks/scope:1.13"}]}
    snap = A.Snapshot(
        services=[service("monitor", "LoadBalancer")],
        deployments=[deployment("monitor", replicas=1, spec=spec)],
    )
    assert checks(A.audit(snap), "monitor") == {"external-service": A.HIGH}


HOSTILE_SPEC: Obj = {
    "hostPID": True,
    "containers": [
        {
            "name": "probe",
            "image": "weaveworks/scope:1.13",
            "securityContext": {"privileged": True, "runAsUser": 0},
            "volumeMounts": [{"name": "host", "mountPath": "/host"}],
        }
    ],
    "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
}
RESTRICTED_SPEC: Obj = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 65534},
    "containers": [
        {
            "name": "probe",
            "image": "weaveworks/scope:1.13",
            "securityContext": {"privileged": False, "allowPrivilegeEscalation": False},
        }
    ],
}


def test_privileged_host_pid_root_and_host_root_mount_are_flagged():
    found = A.audit(
        A.Snapshot(daemonsets=[deployment("agent", spec=HOSTILE_SPEC, kind="DaemonSet")])
    )
    assert checks(found, "agent") == {
        "privileged": A.HIGH,
        "host-pid": A.HIGH,
        "host-root-mount": A.HIGH,
        "root-user": A.MEDIUM,
    }
    fixed = deployment("agent", spec=RESTRICTED_SPEC, kind="DaemonSet")
    assert A.audit(A.Snapshot(daemonsets=[fixed])) == []


def test_unset_user_is_a_low_root_finding_and_system_namespaces_are_lowered():
    unset = pod("app", {"containers": [{"name": "app", "image": "x"}]})
    assert checks(A.audit(A.Snapshot(pods=[unset])), "app") == {"root-user": A.LOW}
    system = deployment("kube-proxy", spec=HOSTILE_SPEC, kind="DaemonSet", namespace="kube-system")
    found = checks(A.audit(A.Snapshot(daemonsets=[system])), "kube-proxy")
    assert found["privileged"] == A.MEDIUM
    assert found["root-user"] == A.LOW


def test_pods_owned_by_workloads_are_audited_through_their_template_only():
    owned = pod("web-1-abc", HOSTILE_SPEC)
    owned["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-1"}]
    done = pod("job-1", HOSTILE_SPEC)
    done["status"]["phase"] = "Succeeded"
    assert A.audit(A.Snapshot(pods=[owned, done])) == []


# A small training lab in the shape of the public vulnerable clusters (our own
# manifests): a build agent talking to the node's runtime, a log reader on /var/run,
# and service accounts that hold the cluster. The hardened twin keeps the workloads
# but none of the two attacker paths.
VULNERABLE_LAB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: build-agent, namespace: ci}
spec:
  selector: {matchLabels: {app: build-agent}}
  template:
    metadata: {labels: {app: build-agent}}
    spec:
      serviceAccountName: builder
      securityContext: {runAsNonRoot: true, runAsUser: 1000}
      containers:
      - name: agent
        image: example/agent:2
        volumeMounts: [{name: sock, mountPath: /var/run/docker.sock}]
      volumes:
      - name: sock
        hostPath: {path: /var/run/docker.sock, type: Socket}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: log-reader, namespace: ops}
spec:
  selector: {matchLabels: {app: log-reader}}
  template:
    metadata: {labels: {app: log-reader}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 1000}
      containers:
      - name: reader
        image: example/reader:1
        volumeMounts: [{name: run, mountPath: /host/run, readOnly: true}]
      volumes:
      - name: run
        hostPath: {path: /var/run/}
---
apiVersion: v1
kind: Pod
metadata: {name: crictl-shell, namespace: ops}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000}
  containers:
  - name: shell
    image: example/crictl:1
    volumeMounts: [{name: cri, mountPath: /run/containerd}]
  volumes:
  - name: cri
    hostPath: {path: /run/containerd}
status: {phase: Running}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: builder-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {kind: ServiceAccount, name: builder, namespace: ci}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: dashboard-everything}
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dashboard-read}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: dashboard-everything}
subjects:
- {kind: User, name: "system:serviceaccount:ops:dashboard"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-boss, namespace: ops}
rules:
- apiGroups: [""]
  resources: [pods, pods/exec]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: everyone-pod-boss, namespace: ops}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-boss}
subjects:
- {kind: Group, name: "system:serviceaccounts:ops"}
"""
HARDENED_LAB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: build-agent, namespace: ci}
spec:
  selector: {matchLabels: {app: build-agent}}
  template:
    metadata: {labels: {app: build-agent}}
    spec:
      serviceAccountName: builder
      securityContext: {runAsNonRoot: true, runAsUser: 1000}
      containers:
      - name: agent
        image: example/agent:2
        volumeMounts: [{name: cache, mountPath: /cache}]
      volumes:
      - name: cache
        hostPath: {path: /var/cache/agent}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: log-reader, namespace: ops}
spec:
  selector: {matchLabels: {app: log-reader}}
  template:
    metadata: {labels: {app: log-reader}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 1000}
      containers:
      - name: reader
        image: example/reader:1
        volumeMounts: [{name: logs, mountPath: /var/log, readOnly: true}]
      volumes:
      - name: logs
        hostPath: {path: /var/log}
      - name: lock
        hostPath: {path: /run/lock/reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: builder, namespace: ci}
rules:
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, patch]
- apiGroups: [""]
  resources: [configmaps]
  resourceNames: [build-settings]
  verbs: ["*"]
- nonResourceURLs: ["*"]
  verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: builder, namespace: ci}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: builder}
subjects:
- {kind: ServiceAccount, name: builder}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: admins}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {kind: Group, name: "platform-admins"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:controller:namespace-controller"}
rules:
- apiGroups: ["*"]
  resources: ["*"]
  verbs: [delete, deletecollection, get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: "system:controller:namespace-controller"
  labels: {kubernetes.io/bootstrapping: rbac-defaults}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: "system:controller:namespace-controller"
subjects:
- {kind: ServiceAccount, name: namespace-controller, namespace: kube-system}
"""


def jw(found: list[A.Finding]) -> list[tuple[str, str, str]]:
    return sorted(
        (f.check, f.object, f.severity)
        for f in found
        if f.story == "jwplayer-exposed-dashboard" and f.check != "root-user"
    )


def test_runtime_sockets_and_service_accounts_holding_the_cluster_are_flagged():
    found = A.audit(A.Snapshot.of(docs(VULNERABLE_LAB)))
    assert jw(found) == [
        ("cluster-admin-binding", "ServiceAccount/ci/builder", A.HIGH),
        ("runtime-socket", "DaemonSet/ops/log-reader", A.HIGH),
        ("runtime-socket", "Deployment/ci/build-agent", A.HIGH),
        ("runtime-socket", "Pod/ops/crictl-shell", A.HIGH),
        ("wildcard-role-binding", "ServiceAccount/ops/*", A.MEDIUM),
        ("wildcard-role-binding", "ServiceAccount/ops/dashboard", A.HIGH),
    ]
    by = {(f.check, f.object): f.message for f in found}
    assert (
        "volume run (hostPath /var/run/, holds /run/containerd/containerd.sock)"
        in by[("runtime-socket", "DaemonSet/ops/log-reader")]
    )
    admin = by[("cluster-admin-binding", "ServiceAccount/ci/builder")]
    assert "ClusterRoleBinding builder-admin grants service account ci/builder cluster-admin" in (
        admin
    )
    assert "its token is mounted in Deployment/build-agent" in admin
    assert "reads every secret, starts privileged pods" in admin
    everyone = by[("wildcard-role-binding", "ServiceAccount/ops/*")]
    assert "every service account of namespace ops Role pod-boss (* on core/pods" in everyone
    assert "in namespace ops" in everyone


def test_narrow_roles_other_host_paths_and_human_admins_are_not_flagged():
    assert jw(A.audit(A.Snapshot.of(docs(HARDENED_LAB)))) == []


@pytest.mark.parametrize(
    ("path", "flagged"),
    [
        ("/run/containerd/containerd.sock", True),
        ("/var/run/containerd/containerd.sock", True),
        ("/var/run/docker.sock", True),
        ("/run/crio/crio.sock", True),
        ("/var/run/crio", True),
        ("/run", True),
        ("/var/run", True),
        ("//run/./containerd/", True),
        ("/var", False),  # /var/run in it is a link the container resolves to its own /run
        ("/run/containerd-other", False),
        ("/run/user/1000", False),
        ("/var/lib/containerd", False),
        ("/", False),  # the host-root-mount finding's
    ],
)
def test_runtime_socket_paths(path: str, flagged: bool):
    spec = {**SAFE_SPEC, "volumes": [{"name": "v", "hostPath": {"path": path}}]}
    found = checks(A.audit(A.Snapshot(pods=[pod("p", spec)])), "p")
    assert ("runtime-socket" in found) is flagged, found


def test_system_agents_on_the_socket_are_lowered_and_unreadable_rbac_is_said():
    spec = {**SAFE_SPEC, "volumes": [{"name": "v", "hostPath": {"path": "/run/containerd"}}]}
    agent = deployment("node-agent", spec=spec, kind="DaemonSet", namespace="kube-system")
    snap = A.Snapshot(daemonsets=[agent], unreadable={"clusterrolebindings": "403 Forbidden"})
    found = A.audit(snap)
    assert checks(found, "node-agent") == {"runtime-socket": A.MEDIUM}
    assert checks(found, "clusterrolebindings") == {"rbac-unreadable": A.INFO}


# -- prometheuskube-missing-logs -------------------------------------------------------

FLUENT_BIT_FRAGILE = """\
[SERVICE]
    Flush        1
[INPUT]
    Name         tail
    Path         /var/log/containers/*.log
    Tag          kube.*
[OUTPUT]
    Name         es
    Match        *
    Host         elasticsearch
"""
# A tab separates DB from its value, as it may in real configs.
FLUENT_BIT_DURABLE = """\
[SERVICE]
    Flush        5
    storage.path /var/log/flb-storage/
[INPUT]
    Name         tail
    Path         /var/log/containers/*.log
    DB\t/var/log/flb_kube.db
    storage.type filesystem
[OUTPUT]
    Name         es
    Match        *
    Retry_Limit  no_limits
"""


def shipper_ds(name: str, container: Obj, config: str | None = None) -> tuple[Obj, list[Obj]]:
    volumes: list[Obj] = [{"name": "varlog", "hostPath": {"path": "/var/log"}}]
    container = {
        "volumeMounts": [{"name": "varlog", "mountPath": "/var/log"}],
        **container,
    }
    cms: list[Obj] = []
    if config is not None:
        volumes.append({"name": "config", "configMap": {"name": f"{name}-config"}})
        container["volumeMounts"] = [
            *container["volumeMounts"],
            {"name": "config", "mountPath": "/fluent-bit/etc/"},
        ]
        cms.append(
            {
                "metadata": {"name": f"{name}-config", "namespace": "shop"},
                "data": {"fluent-bit.conf": config},
            }
        )
    spec = {**SAFE_SPEC, "containers": [container], "volumes": volumes}
    return deployment(name, spec=spec, kind="DaemonSet"), cms


def _shippers(name: str, container: Obj, config: str | None = None) -> dict[str, str]:
    ds, cms = shipper_ds(name, container, config)
    return checks(A.audit(A.Snapshot(daemonsets=[ds], configmaps=cms)), name)


FLUENT_BIT = {"name": "fluent-bit", "image": "fluent/fluent-bit:1.9"}


def test_fluent_bit_without_db_and_with_one_retry_in_memory_is_flagged():
    assert _shippers("logs", FLUENT_BIT, FLUENT_BIT_FRAGILE) == {
        "position-db": A.HIGH,
        "retry-limit": A.MEDIUM,
    }
    assert _shippers("logs", FLUENT_BIT, FLUENT_BIT_DURABLE) == {}


def test_fluent_bit_db_outside_a_host_path_dies_with_the_pod():
    config = FLUENT_BIT_DURABLE.replace("/var/log/flb_kube.db", "/tmp/flb_kube.db")
    assert _shippers("logs", FLUENT_BIT, config) == {"position-db-not-on-host": A.MEDIUM}


def test_fluent_bit_yaml_config_and_detection_by_config_alone():
    yaml_config = """\
service:
  flush: 1
pipeline:
  inputs:
    - name: tail
      path: /var/log/containers/*.log
  outputs:
    - name: es
      match: "*"
"""
    assert _shippers("logs", FLUENT_BIT, yaml_config) == {
        "position-db": A.HIGH,
        "retry-limit": A.MEDIUM,
    }
    # A container that does not name itself: the mounted [INPUT] config gives it away.
    anonymous = {"name": "agent", "image": "example/agent:1", "command": ["sleep", "infinity"]}
    assert _shippers("agent", anonymous, FLUENT_BIT_FRAGILE)["position-db"] == A.HIGH
    assert _shippers("agent", anonymous, FLUENT_BIT_DURABLE) == {}
    assert _shippers("logs", FLUENT_BIT) == {"config-not-found": A.INFO}


def test_fluentd_needs_a_pos_file():
    fluentd = {"name": "fluentd", "image": "fluent/fluentd:v1.16"}
    fragile = "<source>\n  @type tail\n  path /var/log/containers/*.log\n</source>\n"
    durable = fragile.replace("</source>", "  pos_file /var/log/fluentd.pos\n</source>")
    assert _shippers("fluentd", fluentd, fragile) == {"position-db": A.HIGH}
    assert _shippers("fluentd", fluentd, durable) == {}


OTELCOL = {"name": "otelcol", "image": "otel/opentelemetry-collector-contrib:0.165.0"}
OTELCOL_FRAGILE = """\
receivers:
  filelog:
    include: [/var/log/pods/*/*/*.log]
exporters:
  otlphttp:
    endpoint: http://logs.example:4318
service:
  pipelines:
    logs: {receivers: [filelog], exporters: [otlphttp]}
"""
OTELCOL_DURABLE = """\
extensions:
  file_storage: {directory: /var/log/otelcol}
receivers:
  filelog:
    include: [/var/log/pods/*/*/*.log]
    storage: file_storage
exporters:
  otlphttp:
    endpoint: http://logs.example:4318
    sending_queue: {storage: file_storage}
    retry_on_failure: {max_elapsed_time: 0}
service:
  extensions: [file_storage]
  pipelines:
    logs: {receivers: [filelog], exporters: [otlphttp]}
"""


def test_collector_defaults_lose_offsets_queue_and_data_after_five_minutes():
    assert _shippers("logs", OTELCOL, OTELCOL_FRAGILE) == {
        "position-db": A.HIGH,
        "retry-limit": A.MEDIUM,
    }
    assert _shippers("logs", OTELCOL, OTELCOL_DURABLE) == {}
    # Recognised by its configuration alone, whatever the image is called.
    anonymous = {"name": "agent", "image": "example/agent:1"}
    assert _shippers("agent", anonymous, OTELCOL_DURABLE) == {}
    assert _shippers("agent", anonymous, OTELCOL_FRAGILE)["position-db"] == A.HIGH
    assert _shippers("logs", OTELCOL) == {"config-not-found": A.INFO}


def test_collector_storage_off_the_host_or_a_retry_limit_is_flagged():
    in_pod = OTELCOL_DURABLE.replace("/var/log/otelcol", "/tmp/otelcol")
    assert _shippers("logs", OTELCOL, in_pod) == {"position-db-not-on-host": A.MEDIUM}
    limited = OTELCOL_DURABLE.replace("max_elapsed_time: 0", "max_elapsed_time: 2s")
    assert _shippers("logs", OTELCOL, limited) == {"retry-limit": A.MEDIUM}
    memory_queue = OTELCOL_DURABLE.replace("sending_queue: {storage: file_storage}", "")
    assert _shippers("logs", OTELCOL, memory_queue) == {"retry-limit": A.MEDIUM}


def test_vector_checkpoints_must_be_on_a_host_path():
    vector = {"name": "vector", "image": "timberio/vector:0.34.0-debian"}
    assert _shippers("vector", vector, 'data_dir = "/vector-data"') == {
        "position-db-not-on-host": A.MEDIUM
    }
    assert _shippers("vector", vector, 'data_dir = "/var/log/vector"') == {}


def test_only_daemonsets_are_audited_as_shippers():
    ds, cms = shipper_ds("logs", FLUENT_BIT, FLUENT_BIT_FRAGILE)
    ds["kind"] = "Deployment"
    assert A.audit(A.Snapshot(deployments=[ds], configmaps=cms)) == []


# -- mindtickle-external-snat ----------------------------------------------------------

KNOWN = A.Snapshot(
    nodes=[
        {
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.3.4"}]},
        }
    ],
    service_cidrs=["10.96.0.0/16"],
)


def masq(name: str, cidrs: list[str]) -> Obj:
    body = yaml.safe_dump({"nonMasqueradeCIDRs": cidrs, "resyncInterval": "60s"})
    return {"metadata": {"name": name, "namespace": "kube-system"}, "data": {"config": body}}


def _snat(*, configmaps: list[Obj] | None = None, daemonsets: list[Obj] | None = None) -> Any:
    snap = A.Snapshot(
        nodes=KNOWN.nodes,
        service_cidrs=KNOWN.service_cidrs,
        configmaps=configmaps or [],
        daemonsets=daemonsets or [],
    )
    return [f for f in A.audit(snap) if f.story == "mindtickle-external-snat"]


@pytest.mark.parametrize(
    ("cidr", "severity"),
    [
        ("0.0.0.0/0", A.HIGH),
        ("203.0.113.0/24", A.HIGH),
        ("10.0.0.0/8", A.MEDIUM),
        ("172.20.0.0/16", A.MEDIUM),  # no range the cluster uses
        ("10.244.0.0/16", None),  # the pod network
        ("10.96.0.0/16", None),  # the service network
        ("10.0.0.0/16", None),  # the nodes' VPC
    ],
)
def test_non_masquerade_cidrs_beyond_the_cluster_are_flagged(cidr: str, severity: str | None):
    found = _snat(configmaps=[masq("ip-masq-agent", [cidr])])
    assert [f.severity for f in found] == ([severity] if severity else [])
    if severity:
        assert found[0].check == "non-masquerade-cidr"
        assert cidr in found[0].message


def test_the_kfs_masq_agents_config_is_audited_as_ip_masq_agents_is():
    """MindTickle's own fault, as the local cluster holds it mid-run: the agent's
    ConfigMap in ip-masq-agent's format, under its own name."""
    config = "nonMasqueradeCIDRs: [10.244.0.0/16, 10.96.0.0/16, 198.51.100.0/24]\n"
    cm = {"metadata": {"name": "kfs-masq-agent", "namespace": "kube-system"}}
    found = _snat(configmaps=[{**cm, "data": {"config": config}}])
    assert [(f.object, f.severity) for f in found] == [
        ("ConfigMap/kube-system/kfs-masq-agent", A.HIGH)
    ]
    assert "198.51.100.0/24" in found[0].message
    fixed = config.replace(", 198.51.100.0/24", "")
    assert _snat(configmaps=[{**cm, "data": {"config": fixed}}]) == []


def _aws_node(env: list[Obj]) -> Obj:
    spec = {
        **SAFE_SPEC,
        "containers": [{"name": "aws-node", "image": "amazon-k8s-cni", "env": env}],
    }
    return deployment("aws-node", spec=spec, kind="DaemonSet", namespace="kube-system")


def _snat_var(value: str) -> list[Obj]:
    return [{"name": "AWS_VPC_K8S_CNI_EXTERNALSNAT", "value": value}]


def test_external_snat_is_reported_with_what_it_means():
    on = _snat(daemonsets=[_aws_node(_snat_var("true"))])
    assert [(f.check, f.severity) for f in on] == [("external-snat", A.INFO)]
    assert "NAT gateway" in on[0].message
    off = _snat(daemonsets=[_aws_node(_snat_var("false"))])
    assert [(f.check, f.severity) for f in off] == [("external-snat", A.INFO)]
    assert "=false" in off[0].message
    # Not set at all: the CNI's default, false; recognised by its image.
    default = _snat(daemonsets=[_aws_node([])])
    assert "=false (the default)" in default[0].message
    other = deployment("agent", kind="DaemonSet")
    assert _snat(daemonsets=[other]) == []


def test_excluded_snat_cidrs_are_judged_like_non_masquerade_ones():
    excluded = [{"name": "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "value": "10.96.0.0/16,0.0.0.0/0"}]
    found = _snat(daemonsets=[_aws_node(excluded)])
    assert sorted((f.check, f.severity) for f in found) == [
        ("external-snat", A.INFO),
        ("non-masquerade-cidr", A.HIGH),
    ]


# -- the report and the command --------------------------------------------------------


def test_findings_are_ordered_by_story_then_severity_and_serialise():
    snap = A.Snapshot(
        services=[service("grafana", "NodePort")],
        deployments=[_web()],
        configmaps=[masq("ip-masq-agent", ["0.0.0.0/0"])],
    )
    found = A.audit(snap)
    # In the stories' order, as `kfs list` names them.
    assert [f.story for f in found] == [
        "jwplayer-exposed-dashboard",
        "mindtickle-external-snat",
        "moonlight-anti-affinity",
    ]
    assert A.has_high(found)
    row = found[0].to_dict()
    assert set(row) == {"story", "check", "object", "severity", "message", "fix"}
    assert row["object"] == "Service/shop/grafana"


class FakeKube:
    def ping(self) -> str:
        return "v1.34.4"


@pytest.mark.parametrize(("high", "code"), [(True, 1), (False, 0)])
def test_audit_command_prints_json_and_exits_1_only_on_high(monkeypatch, high, code):
    snap = A.Snapshot(services=[service("grafana" if high else "api", "ClusterIP")])
    if high:
        snap.services[0]["spec"]["type"] = "NodePort"
    seen: list[str | None] = []

    def fake_collect(kube: Any, namespace: str | None = None) -> A.Snapshot:
        seen.append(namespace)
        return snap

    monkeypatch.setattr(audit_cli, "connect", lambda *_: (FakeKube(), "fake"))
    monkeypatch.setattr(audit_cli, "collect", fake_collect)
    out = CliRunner().invoke(audit_cli.audit, ["--json", "--namespace", "shop"])
    assert out.exit_code == code, out.output
    assert seen == ["shop"]
    rows = json.loads(out.output)
    assert [r["severity"] for r in rows] == (["high"] if high else [])
    table = CliRunner().invoke(audit_cli.audit, [])
    assert table.exit_code == code
    assert "jwplayer-exposed-dashboard" in table.output


def test_unknown_context_is_one_clear_error(tmp_path: Path, monkeypatch):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "prod",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(audit_cli, "_local_kubeconfig", lambda: None)
    with pytest.raises(ClusterUnreachableError, match=r"unknown kube context 'staging'.*prod"):
        audit_cli.connect(None, "staging")
    kube, target = audit_cli.connect(None, None)
    assert kube.context is None
    assert "current context" in target
