"""The in-cluster operator kind and existing users get: the image built offline,
loaded into the nodes, and the Deployment of operator/deployment.yaml.

The same image and manifests are exercised on the local provider's real node: the
operator runs from its own image as user 65534 with a read-only root, reaches
Redis pods over the pod network, and does all its work with its ServiceAccount:
rbac.yaml for RedisFailovers, plus gameday-rbac.yaml (`--gamedays`) for a GameDay
that changes the cluster from inside it, its node-level steps through the node agent.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.core.wait import wait_for
from failure_stories.gameday.resource import GROUP as GD_GROUP
from failure_stories.gameday.resource import KIND as GD_KIND
from failure_stories.gameday.resource import PLURAL as GD_PLURAL
from failure_stories.gameday.resource import VERSION as GD_VERSION
from failure_stories.images import TOOLBOX_IMAGE
from failure_stories.operator import image as operator_image
from failure_stories.operator import redis_failover as rf
from failure_stories.operator import runtime
from failure_stories.providers.agent import agent_namespaces
from failure_stories.providers.base import REAL_NODE_LABEL, Provider
from failure_stories.providers.kube import KFS as KFS_LABEL
from failure_stories.providers.kube import MANAGED_BY, Kube

pytestmark = pytest.mark.e2e

NAME = "cache"


def _get(custom: client.CustomObjectsApi, ns: str, group: str, plural: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(group, rf.VERSION, ns, plural, NAME)
    return obj


def _converged(custom: client.CustomObjectsApi, ns: str) -> dict[str, Any] | None:
    obj = _get(custom, ns, rf.GROUP, rf.PLURAL)
    st = obj.get("status") or {}
    ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
    return obj if ready.get("status") == "True" and st.get("readyReplicas") == 2 else None


def test_operator_image_runs_the_in_cluster_deployment(kfs_provider: Provider, kube: Kube) -> None:
    if kfs_provider.name != "local":
        pytest.skip("builds and loads the image itself; on kind, `kfs operator install` does")
    archive = operator_image.build()
    kfs_provider.load_images({operator_image.OPERATOR_IMAGE: archive})
    op = runtime.InClusterOperator(kube, node_selector={REAL_NODE_LABEL: "true"}, gamedays=True)
    team = f"team-rf-{secrets.token_hex(3)}"
    kube.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=team, labels={MANAGED_BY: KFS_LABEL}))
    )
    custom = client.CustomObjectsApi(kube.api)
    try:
        op.install()
        (pod,) = kube.pods(runtime.SYSTEM_NAMESPACE, runtime.OPERATOR_SELECTOR)
        assert pod.spec.containers[0].image == operator_image.OPERATOR_IMAGE
        assert pod.spec.service_account_name == "kfs-operator"
        sc = pod.spec.containers[0].security_context
        assert sc.read_only_root_filesystem is True and sc.allow_privilege_escalation is False

        kube.apply(
            [
                {
                    "apiVersion": f"{rf.GROUP}/{rf.VERSION}",
                    "kind": rf.KIND,
                    "metadata": {"name": NAME},
                    "spec": {"replicas": 2, "memory": "64Mi", "safety": "safe"},
                },
                {
                    "apiVersion": f"{GD_GROUP}/{GD_VERSION}",
                    "kind": GD_KIND,
                    "metadata": {"name": NAME},
                    "spec": {"scenario": "jwplayer-exposed-dashboard"},
                },
            ],
            team,
        )
        obj = wait_for(
            lambda: _converged(custom, team),
            what="the RedisFailover converged by the in-cluster operator",
            timeout=180,
            interval=1,
        )
        master = obj["status"]["master"]
        assert master in {rf.pod_name(NAME, 0), rf.pod_name(NAME, 1)}
        # The operator's defaults gave the pods the toolbox image from its env.
        redis_pods = kube.pods(team, f"{rf.LABEL_OWNER}={NAME}")
        assert {p.spec.containers[0].image for p in redis_pods} == {TOOLBOX_IMAGE}
        code, out, err = kube.exec(team, master, ["redis-cli", "INFO", "replication"])
        assert code == 0, err
        assert "role:master" in out and "connected_slaves:1" in out

        # The GameDay ran from inside the cluster: the story's node steps went
        # through the node agent, and it proved both directions.
        def finished() -> dict[str, Any] | None:
            st = dict(_get(custom, team, GD_GROUP, GD_PLURAL).get("status") or {})
            return st if st.get("state") in ("Finished", "Failed", "Reverted") else None

        st = wait_for(finished, what="the in-cluster GameDay to finish", timeout=300, interval=1)
        assert st["state"] == "Finished" and st["verdict"] == "passed", json.dumps(st)
        assert st["measurements"]["symptom"]["miner_processes_detected"] >= 1
        assert agent_namespaces(kube) == {}
    finally:
        for group, plural in ((rf.GROUP, rf.PLURAL), (GD_GROUP, GD_PLURAL)):
            try:
                custom.delete_namespaced_custom_object(group, rf.VERSION, team, plural, NAME)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        kube.delete_namespace(team)
        removed = op.uninstall()
    assert "deleted Deployment kfs-operator" in removed
    assert "deleted ClusterRoleBinding kfs-operator-gamedays" in removed
    assert runtime.SYSTEM_NAMESPACE not in {
        n.metadata.name for n in kube.core.list_namespace().items
    }
