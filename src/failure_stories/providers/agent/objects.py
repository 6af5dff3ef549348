"""The agent's Kubernetes objects: its namespace (privileged Pod Security level,
labelled with the run it serves), a service account that may read its own pods
(the thaw channel, see scripts), and one pod per node."""

from __future__ import annotations

import hashlib
from typing import Any

from failure_stories.providers.agent.scripts import THAWER
from failure_stories.providers.kube import KFS, MANAGED_BY, RUN_LABEL

AGENT_LABEL = "kfs.dev/node-agent"
NODE_ANNOTATION = "kfs.dev/node"
SERVICE_ACCOUNT = "kfs-node-agent"


def namespace_name(run_namespace: str) -> str:
    return f"{run_namespace[:57]}-agent"


def pod_name(node: str) -> str:
    # Node names may be 253 characters long; pod names must stay DNS labels.
    return f"agent-{node[:40].lower()}-{hashlib.sha256(node.encode()).hexdigest()[:6]}"


def setup_objects(namespace: str, run_namespace: str) -> list[dict[str, Any]]:
    labels = {MANAGED_BY: KFS, RUN_LABEL: run_namespace, AGENT_LABEL: "true"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {
                    **labels,
                    # The agent needs host namespaces: say so, instead of relying
                    # on the cluster's default level.
                    "pod-security.kubernetes.io/enforce": "privileged",
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": SERVICE_ACCOUNT,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
    ]


def pod(
    namespace: str, run_namespace: str, node: str, image: str, api_server: str = ""
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(node),
            "namespace": namespace,
            "labels": {MANAGED_BY: KFS, RUN_LABEL: run_namespace, AGENT_LABEL: "true"},
            "annotations": {NODE_ANNOTATION: node},
        },
        "spec": {
            "nodeName": node,  # no scheduler: it must land on this node, tainted or not
            "hostPID": True,
            "hostNetwork": True,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "serviceAccountName": SERVICE_ACCOUNT,
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 1,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "agent",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-u", "-c", THAWER],
                    "securityContext": {"privileged": True},
                    "env": [
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        # The thaw channel (see scripts): the address kfs itself uses.
                        {"name": "KFS_API_SERVERS", "value": api_server},
                    ],
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                }
            ],
        },
    }
