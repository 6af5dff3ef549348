"""`kfs audit` against the real API server: a vulnerable and a fixed object for each
check, deployed into a throwaway namespace; every check must fire on the first and
stay quiet on the second. Everything runs on the simulated nodes (kwok), so the
privileged, host-PID and host-mounting pods never run anything on this machine."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from failure_stories.audit import LATENCY_CRITICAL, collect
from failure_stories.cli.audit import audit
from failure_stories.core.wait import wait_for
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.providers.base import SIMULATED_NODE_LABEL
from failure_stories.providers.kube import Kube

Obj = dict[str, Any]

RESTRICTED_POD: Obj = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534}


def container(name: str, command: list[str] | None = None, **extra: Any) -> Obj:
    return {
        "name": name,
        "image": TOOLBOX_IMAGE,
        "imagePullPolicy": "Never",
        "command": command or ["sleep", "infinity"],
        "securityContext": {"allowPrivilegeEscalation": False},
        **extra,
    }


def pod_spec(*containers: Obj, node: str | None = None, **extra: Any) -> Obj:
    selector = {SIMULATED_NODE_LABEL: "true"}
    if node:
        selector["kubernetes.io/hostname"] = node
    return {
        "nodeSelector": selector,
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "securityContext": dict(RESTRICTED_POD),
        "containers": list(containers),
        **extra,
    }


def workload(kind: str, name: str, spec: Obj, replicas: int = 1, **labels: str) -> Obj:
    body: Obj = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name, **labels}}, "spec": spec},
    }
    if kind == "Deployment":
        body["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": body,
    }


def pod(name: str, spec: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": spec,
    }


def service(name: str, kind: str, selector: str, **extra: Any) -> Obj:
    metadata: Obj = {"name": name, "annotations": extra.pop("annotations", {})}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": kind,
            "selector": {"app": selector},
            "ports": [{"port": 80, "targetPort": 4040}],
            **extra,
        },
    }


def host_dir_pod(name: str, path: str) -> Obj:
    mount = {"name": "host", "mountPath": "/host", "readOnly": True}
    return pod(
        name,
        pod_spec(
            container(name, volumeMounts=[mount]),
            volumes=[{"name": "host", "hostPath": {"path": path}}],
        ),
    )


def bound(account: str, kind: str, role: str, rule: Obj | None = None) -> list[Obj]:
    """A ServiceAccount, its RoleBinding to ``kind``/``role``, and the Role if ``rule``."""
    rbac = "rbac.authorization.k8s.io"
    objs: list[Obj] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
        {
            "apiVersion": f"{rbac}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{account}-{role}"},
            "roleRef": {"apiGroup": rbac, "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account}],
        },
    ]
    if rule is not None:
        objs.insert(
            0,
            {
                "apiVersion": f"{rbac}/v1",
                "kind": "Role",
                "metadata": {"name": role},
                "rules": [{"apiGroups": [""], **rule}],
            },
        )
    return objs


def configmap(name: str, key: str, text: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {key: text},
    }


FLUENT_BIT_FRAGILE = """\
[SERVICE]
    Flush        1
[INPUT]
    Name         tail
    Path         /var/log/containers/*.log
[OUTPUT]
    Name         es
    Match        *
"""
FLUENT_BIT_DURABLE = """\
[SERVICE]
    Flush        5
    storage.path /var/log/flb-storage/
[INPUT]
    Name         tail
    Path         /var/log/containers/*.log
    DB           /var/log/flb_kube.db
    storage.type filesystem
[OUTPUT]
    Name         es
    Match        *
    Retry_Limit  no_limits
"""


def log_shipper(name: str, config: str) -> list[Obj]:
    shipper = container(
        "fluent-bit",
        volumeMounts=[
            {"name": "varlog", "mountPath": "/var/log", "readOnly": True},
            {"name": "config", "mountPath": "/fluent-bit/etc/"},
        ],
    )
    spec = pod_spec(
        shipper,
        volumes=[
            {"name": "varlog", "hostPath": {"path": "/var/log", "type": "Directory"}},
            {"name": "config", "configMap": {"name": f"{name}-config"}},
        ],
    )
    return [
        configmap(f"{name}-config", "fluent-bit.conf", config),
        workload("DaemonSet", name, spec),
    ]


def aws_node(name: str, external_snat: str) -> Obj:
    env = [{"name": "AWS_VPC_K8S_CNI_EXTERNALSNAT", "value": external_snat}]
    return workload("DaemonSet", name, pod_spec(container("aws-node", env=env)))


REPLICATION_AWARE = [
    "sh",
    "-c",
    "redis-cli info replication | grep -q master_link_status:up && "
    "redis-cli info replication | grep -q master_sync_in_progress:0",
]


def redis(name: str, probe: list[str]) -> Obj:
    server = container(
        "redis",
        ["redis-server", "--replicaof", "10.96.0.99", "6379"],
        readinessProbe={"exec": {"command": probe}, "periodSeconds": 5},
    )
    return pod(name, pod_spec(server))


def manifests(node: str) -> list[Obj]:
    anti_affinity = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"app": "web-apart"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    limited = container("api", resources={"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}})
    unlimited = container("api", resources={"requests": {"cpu": "100m"}})
    shell = container("shell")
    shell["securityContext"] = {"privileged": True, "runAsUser": 0}
    shell["volumeMounts"] = [{"name": "host", "mountPath": "/host"}]
    root_spec = pod_spec(
        shell,
        hostPID=True,
        volumes=[{"name": "host", "hostPath": {"path": "/", "type": "Directory"}}],
    )
    root_spec["securityContext"] = {}
    masq = {"nonMasqueradeCIDRs": ["10.244.0.0/16", "0.0.0.0/0"], "resyncInterval": "60s"}
    masq_fixed = {"nonMasqueradeCIDRs": ["10.244.0.0/16", "10.96.0.0/16"], "resyncInterval": "60s"}
    return [
        # moonlight: two replicas pinned to one node, no anti-affinity / spread apart
        workload("Deployment", "web-together", pod_spec(container("web"), node=node), replicas=2),
        workload(
            "Deployment",
            "web-apart",
            pod_spec(container("web"), affinity=anti_affinity),
            replicas=2,
        ),
        # buffer: latency-critical with and without a CPU limit
        workload("Deployment", "api-limited", pod_spec(limited), **{LATENCY_CRITICAL: "true"}),
        workload("Deployment", "api-unlimited", pod_spec(unlimited), **{LATENCY_CRITICAL: "true"}),
        # flant: ready on PING vs ready once replication has caught up
        redis("redis-ping", ["redis-cli", "ping"]),
        redis("redis-aware", REPLICATION_AWARE),
        # jwplayer: an exposed dashboard vs the same one inside the cluster; a pod
        # with the node's powers vs a restricted one
        pod("dashboard", pod_spec(container("dashboard"))),
        service("dashboard", "NodePort", "dashboard"),
        service("dashboard-internal", "ClusterIP", "dashboard"),
        service(
            "dashboard-internal-lb",
            "LoadBalancer",
            "dashboard",
            annotations={"networking.gke.io/load-balancer-type": "Internal"},
            allocateLoadBalancerNodePorts=False,
        ),
        pod("node-shell", root_spec),
        pod("restricted", pod_spec(container("restricted"))),
        # jwplayer: the runtime's socket (through its directory) vs another host dir;
        # service accounts bound to cluster-admin or a wildcard role vs a narrow one
        host_dir_pod("runtime-shell", "/run/containerd"),
        host_dir_pod("log-reader", "/var/log"),
        *bound("ci", "ClusterRole", "cluster-admin"),
        *bound("builder", "Role", "pod-boss", {"resources": ["pods"], "verbs": ["*"]}),
        *bound("reader", "Role", "pod-reader", {"resources": ["pods"], "verbs": ["get"]}),
        # prometheuskube: a fluent-bit without/with a position database
        *log_shipper("logs-fragile", FLUENT_BIT_FRAGILE),
        *log_shipper("logs-durable", FLUENT_BIT_DURABLE),
        # mindtickle: external SNAT on, and non-masquerade CIDRs with/without the internet
        aws_node("aws-node", "true"),
        aws_node("aws-node-fixed", "false"),
        configmap("ip-masq-agent", "config", yaml.safe_dump(masq)),
        configmap("ip-masq-agent-fixed", "config", yaml.safe_dump(masq_fixed)),
    ]


# (object, check) that must fire, and objects about which nothing may be said.
EXPECTED = {
    ("Deployment/{ns}/web-together", "no-anti-affinity"),
    ("Deployment/{ns}/web-together", "replicas-on-one-node"),
    ("Deployment/{ns}/api-limited", "cpu-limit-on-latency-critical"),
    ("Pod/{ns}/redis-ping", "redis-readiness"),
    ("Service/{ns}/dashboard", "external-service"),
    ("Pod/{ns}/node-shell", "privileged"),
    ("Pod/{ns}/node-shell", "host-pid"),
    ("Pod/{ns}/node-shell", "host-root-mount"),
    ("Pod/{ns}/node-shell", "root-user"),
    ("DaemonSet/{ns}/logs-fragile", "position-db"),
    ("DaemonSet/{ns}/logs-fragile", "retry-limit"),
    ("DaemonSet/{ns}/aws-node", "external-snat"),
    ("DaemonSet/{ns}/aws-node-fixed", "external-snat"),
    ("ConfigMap/{ns}/ip-masq-agent", "non-masquerade-cidr"),
    ("Pod/{ns}/runtime-shell", "runtime-socket"),
    ("ServiceAccount/{ns}/ci", "cluster-admin-binding"),
    ("ServiceAccount/{ns}/builder", "wildcard-role-binding"),
}
QUIET = [
    "Deployment/{ns}/web-apart",
    "Deployment/{ns}/api-unlimited",
    "Pod/{ns}/redis-aware",
    "Pod/{ns}/dashboard",
    "Service/{ns}/dashboard-internal",
    "Service/{ns}/dashboard-internal-lb",
    "Pod/{ns}/restricted",
    "DaemonSet/{ns}/logs-durable",
    "ConfigMap/{ns}/ip-masq-agent-fixed",
    "Pod/{ns}/log-reader",
    "ServiceAccount/{ns}/reader",
]


def _schedulable_simulated_node(kube: Kube) -> str:
    """A Ready simulated node without taints. Right after a cold `cluster up` the
    node lifecycle controller may not have lifted its not-ready taint yet (this
    test runs first in a fresh session): wait for it, never skip."""

    def untainted() -> str | None:
        for node in kube.core.list_node(label_selector=f"{SIMULATED_NODE_LABEL}=true").items:
            if kube.node_ready(node) and not node.spec.unschedulable and not node.spec.taints:
                return str(node.metadata.name)
        return None

    return wait_for(untainted, what="a Ready, untainted simulated node", timeout=60)


@pytest.fixture
def deployed(kube: Kube, namespace: str) -> str:
    """The vulnerable and fixed objects, in a namespace the fixture deletes."""
    kube.apply(copy.deepcopy(manifests(_schedulable_simulated_node(kube))), namespace)
    # The one check that reads live state: where the ready replicas sit.
    kube.wait_rollout(namespace, "web-together", timeout=90)
    return namespace


def test_each_check_fires_on_the_vulnerable_object_only(kube: Kube, deployed: str):
    args = ["--kubeconfig", str(kube.kubeconfig), "--namespace", deployed, "--json"]
    if kube.context:
        args += ["--context", kube.context]
    out = CliRunner().invoke(audit, args)
    assert out.exception is None or isinstance(out.exception, SystemExit), out.output
    findings = json.loads(out.output)
    seen = {(f["object"], f["check"]) for f in findings}
    for obj, check in EXPECTED:
        assert (obj.format(ns=deployed), check) in seen, f"{check} did not fire on {obj}"
    for obj in QUIET:
        said = [f for f in findings if f["object"] == obj.format(ns=deployed)]
        assert said == [], f"findings on the fixed object {obj}: {said}"
    by_key = {(f["object"], f["check"]): f for f in findings}
    dashboard = by_key[(f"Service/{deployed}/dashboard", "external-service")]
    assert dashboard["severity"] == "high"
    assert "ClusterIP" in dashboard["fix"]
    masq = by_key[(f"ConfigMap/{deployed}/ip-masq-agent", "non-masquerade-cidr")]
    assert "0.0.0.0/0" in masq["message"]
    # Either external-SNAT value can be the wrong one: both are reported, as info.
    for name, value in (("aws-node", "true"), ("aws-node-fixed", "false")):
        snat = by_key[(f"DaemonSet/{deployed}/{name}", "external-snat")]
        assert snat["severity"] == "info"
        assert f"AWS_VPC_K8S_CNI_EXTERNALSNAT={value}:" in snat["message"]
    # High findings (the exposed dashboard, the privileged pod...) fail the audit.
    assert out.exit_code == 1
    # Namespaced findings stay in the namespace asked for.
    assert all(
        f"/{deployed}/" in f["object"]
        for f in findings
        if not f["object"].startswith(("Node/", "Cluster/"))
    )


def test_collect_only_lists(kube: Kube, deployed: str):
    """The audit is read-only: every API call it makes is a list."""
    calls: list[str] = []

    class Recorder:
        def __init__(self, api: Any) -> None:
            self._api = api

        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(self._api, name)

    spy = SimpleNamespace(api=kube.api, core=Recorder(kube.core), apps=Recorder(kube.apps))
    snap = collect(spy, deployed)
    assert calls
    assert all(name.startswith("list_") for name in calls), calls
    assert {d["metadata"]["name"] for d in snap.daemonsets} >= {"logs-fragile", "aws-node"}
    assert snap.service_cidrs  # ServiceCIDR objects exist on 1.34
