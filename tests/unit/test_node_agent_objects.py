"""The node agent's objects and the fit check's node rules, on real client objects."""

from __future__ import annotations

import re

from kubernetes import client

from failure_stories.providers import fit
from failure_stories.providers.agent import objects, scripts

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_names_stay_dns_labels_for_long_runs_and_nodes() -> None:
    run = "kfs-prometheuskube-missing-logs-" + "x" * 30
    assert len(objects.namespace_name(run)) <= 63
    assert DNS_LABEL.match(objects.namespace_name(run))
    node = "ip-10-0-12-34.eu-west-1.compute.internal" * 3
    name = objects.pod_name(node)
    assert len(name) <= 63
    # Two nodes that share a long prefix still get their own pods.
    assert objects.pod_name(node + "a") != objects.pod_name(node + "b")


def test_agent_pod_reaches_the_node_and_nothing_else() -> None:
    pod = objects.pod("ns-agent", "ns", "worker-1", "localhost/kfs/toolbox:v1")
    spec = pod["spec"]
    assert spec["nodeName"] == "worker-1"
    assert spec["hostPID"] and spec["hostNetwork"]
    assert spec["containers"][0]["securityContext"] == {"privileged": True}
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert pod["metadata"]["labels"]["kfs.dev/run"] == "ns"
    namespace = objects.setup_objects("ns-agent", "ns")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    role = next(o for o in objects.setup_objects("ns-agent", "ns") if o["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]


def test_scripts_are_python_the_toolbox_can_run() -> None:
    compile(scripts.THAWER, "thawer", "exec")
    compile(scripts.WATCHDOG, "watchdog", "exec")
    assert scripts.THAW_ANNOTATION in scripts.THAWER


def _node(name: str, *, kwok: bool = False, taint: str | None = None, cordoned: bool = False):
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name, annotations={"kwok.x-k8s.io/node": "fake"} if kwok else {}
        ),
        spec=client.V1NodeSpec(
            unschedulable=cordoned,
            taints=[client.V1Taint(key="k", effect=taint)] if taint else None,
        ),
        status=client.V1NodeStatus(
            node_info=client.V1NodeSystemInfo(
                architecture="amd64",
                boot_id="",
                container_runtime_version="" if kwok else "containerd://1.6.20",
                kernel_version="",
                kube_proxy_version="",
                kubelet_version="kwok-simulated" if kwok else "v1.34.4",
                machine_id="",
                operating_system="linux",
                os_image="",
                system_uuid="",
            )
        ),
    )


def test_simulated_and_schedulable_nodes() -> None:
    assert fit.simulated(_node("a", kwok=True))
    assert not fit.simulated(_node("b"))
    assert fit.schedulable(_node("c"))
    assert fit.schedulable(_node("d", taint="PreferNoSchedule"))
    assert not fit.schedulable(_node("e", taint="NoSchedule"))
    assert not fit.schedulable(_node("f", cordoned=True))
