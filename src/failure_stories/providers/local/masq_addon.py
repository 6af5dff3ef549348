"""The local cluster's SNAT owner: kfs's masq agent as a DaemonSet on the real
node, in kube-system, installed by `kfs cluster up`.

The CNI bridge does not masquerade (ipMasq false, see node.py): this agent
does, so the node's pod egress is a setting of one component that stories can
change, as ip-masq-agent's or aws-node's is on a cloud cluster. Its ConfigMap
keeps the cluster's own ranges (pods, Services) un-NATed and masquerades
everything else. `up` creates the ConfigMap only when it is missing: a story
that has edited it owns it until its teardown restores it."""

from __future__ import annotations

import hashlib
from typing import Any

from kubernetes.client.rest import ApiException

from failure_stories.core import paths
from failure_stories.core.wait import wait_for
from failure_stories.providers import snat
from failure_stories.providers.base import REAL_NODE_LABEL
from failure_stories.providers.kube import Kube
from failure_stories.providers.local import layout as L

NAMESPACE = "kube-system"
NAME = "kfs-masq-agent"
CHAIN = "KFS-MASQ-AGENT"
LABELS = {"k8s-app": NAME}
# The cluster's own ranges keep pod addresses; everything else leaves as the node.
CONFIG = snat.config_text([L.CLUSTER_CIDR, L.SERVICE_CIDR])
# A host-network pod cannot reach the Service address here (it is fenced, see
# hostnet.FENCED): the agent asks the API server where kfs itself does.
API_SERVER = f"https://{L.BRIDGE_IP}:{L.API_PORT}"


def _script_digest() -> str:
    return hashlib.sha256((paths.IMAGES / "workloads" / snat.SCRIPT).read_bytes()).hexdigest()


def objects(image: str) -> list[dict[str, Any]]:
    """ServiceAccount, Role (read its ConfigMap), RoleBinding and DaemonSet."""
    meta = {"name": NAME, "namespace": NAMESPACE, "labels": LABELS}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [NAME],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": LABELS},
                "template": {
                    "metadata": {
                        "labels": LABELS,
                        # The image's tag stays v1: a new script rolls the pod by this.
                        "annotations": {"kfs.dev/masq-agent-sha256": _script_digest()},
                    },
                    "spec": {
                        "serviceAccountName": NAME,
                        "hostNetwork": True,
                        "nodeSelector": {REAL_NODE_LABEL: "true"},
                        "tolerations": [{"operator": "Exists"}],
                        "priorityClassName": "system-node-critical",
                        "terminationGracePeriodSeconds": 2,
                        "containers": [
                            {
                                "name": "masq-agent",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "command": [
                                    "python3",
                                    f"/opt/kfs/workloads/{snat.SCRIPT}",
                                    "--chain",
                                    CHAIN,
                                    "--configmap",
                                    f"{NAMESPACE}/{NAME}",
                                    "--cluster-cidr",
                                    L.CLUSTER_CIDR,
                                    "--api-server",
                                    API_SERVER,
                                ],
                                "securityContext": {"privileged": True},
                                "resources": {"requests": {"cpu": "5m", "memory": "24Mi"}},
                            }
                        ],
                    },
                },
            },
        },
    ]


def ensure(kube: Kube, image: str) -> None:
    """Install or update the addon; its ConfigMap only if there is none."""
    try:
        kube.core.read_namespaced_config_map(NAME, NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise
        body = {"metadata": {"name": NAME, "labels": LABELS}, "data": {snat.CONFIG_KEY: CONFIG}}
        kube.core.create_namespaced_config_map(NAMESPACE, body)
    kube.apply(objects(image), NAMESPACE)

    def running() -> bool:
        ds = kube.apps.read_namespaced_daemon_set(NAME, NAMESPACE)
        st = ds.status
        return bool(
            st.desired_number_scheduled
            and st.observed_generation == ds.metadata.generation
            and st.updated_number_scheduled == st.desired_number_scheduled
            and st.number_ready == st.desired_number_scheduled
        )

    wait_for(running, what=f"the masq agent DaemonSet {NAMESPACE}/{NAME}", timeout=90)
