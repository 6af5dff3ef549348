"""The operator's install manifests: every handler file is loaded, nothing is left unfilled."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from failure_stories.operator import runtime


class FakeKube:
    kubeconfig = Path("/var/lib/kfs/local/kubeconfig/admin.kubeconfig")


def _deployment(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    return dep


def test_every_handler_file_is_in_both_deployments() -> None:
    local = runtime.LocalPodOperator(FakeKube(), Path("/var/lib/kfs/local"))  # type: ignore[arg-type]
    kind = runtime.InClusterOperator(FakeKube())  # type: ignore[arg-type]
    local_cmd = _deployment(local.manifests())["spec"]["template"]["spec"]["containers"][0]
    kind_args = _deployment(kind.manifests())["spec"]["template"]["spec"]["containers"][0]
    for handler in runtime.HANDLER_FILES:
        assert str(runtime.OPERATOR_DIR / handler) in local_cmd["command"]
        assert f"/opt/kfs/operator/{handler}" in kind_args["args"]
        assert (runtime.OPERATOR_DIR / handler).is_file()
    assert set(runtime.SUT_HANDLER_FILES) < set(runtime.HANDLER_FILES)


def test_local_pod_runs_this_checkout_in_the_hosts_namespaces() -> None:
    local = runtime.LocalPodOperator(FakeKube(), Path("/var/lib/kfs/local"))  # type: ignore[arg-type]
    objs = local.manifests()
    assert "${" not in json.dumps(objs)
    assert [o["kind"] for o in objs] == ["Namespace", "Deployment"]
    pod = _deployment(objs)["spec"]["template"]["spec"]
    assert pod["hostPID"] and pod["hostNetwork"]
    assert pod["nodeSelector"] == {"kfs.dev/real-node": "true"}
    assert pod["terminationGracePeriodSeconds"] >= 300  # runs are reverted on SIGTERM
    container = pod["containers"][0]
    assert container["command"][:2] == ["sh", "-c"]
    assert "nsenter" in container["command"][2] and "--mount" in container["command"][2]
    assert sys.executable in container["command"]
    assert f"--namespace={runtime.LOCAL_INSTALL_SCOPE}" in container["command"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KFS_METRICS_PORT"] == str(runtime.METRICS_PORT)
    assert env["KFS_GAMEDAY_STATE"] == "/var/lib/kfs/local/operator"


def test_kind_deployment_stays_least_privilege_and_declines_gamedays() -> None:
    kind = runtime.InClusterOperator(FakeKube())  # type: ignore[arg-type]
    objs = kind.manifests()
    assert "${" not in json.dumps(objs)
    pod = _deployment(objs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kfs-operator"
    assert not pod.get("hostPID") and not pod.get("hostNetwork")
    container = pod["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["KFS_GAMEDAY_PROVIDER"] == "none"
    (role,) = [o for o in objs if o["kind"] == "ClusterRole"]
    gameday_rules = [r for r in role["rules"] if "gamedays" in r["resources"]]
    assert gameday_rules and all("delete" not in r["verbs"] for r in gameday_rules)


def test_gamedays_are_an_opt_in_with_their_own_rights() -> None:
    plain = runtime.InClusterOperator(FakeKube())  # type: ignore[arg-type]
    opted = runtime.InClusterOperator(FakeKube(), gamedays=True)  # type: ignore[arg-type]
    names = {o["metadata"]["name"] for o in plain.manifests() if o["kind"] == "ClusterRole"}
    assert names == {"kfs-operator"}
    objs = opted.manifests()
    env = {
        e["name"]: e["value"]
        for e in _deployment(objs)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["KFS_GAMEDAY_PROVIDER"] == "in-cluster"
    (role,) = [
        o
        for o in objs
        if o["metadata"]["name"] == "kfs-operator-gamedays" and o["kind"] == "ClusterRole"
    ]
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    # A run: its namespace, exec into its pods, its locks, the node agent's Role.
    assert {("", "namespaces"), ("", "pods/exec"), ("coordination.k8s.io", "leases")} <= granted
    assert ("rbac.authorization.k8s.io", "roles") in granted
    # Never read secrets, never wildcards.
    secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert all(not {"get", "list", "watch"} & set(r["verbs"]) for r in secrets)
    assert all("*" not in r["verbs"] and "*" not in r["resources"] for r in role["rules"])
    # The writable places a run needs, on a read-only root.
    mounts = {
        m["mountPath"]
        for m in _deployment(objs)["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    assert {"/var/lib/kfs", "/tmp"} <= mounts
    # Uninstall removes the GameDay rights whichever way it was installed.
    removed = {(o["kind"], o["metadata"]["name"]) for o in plain.removable()}
    assert ("ClusterRoleBinding", "kfs-operator-gamedays") in removed


def test_kind_deployment_runs_the_offline_image_and_can_be_pinned() -> None:
    from failure_stories.operator import image as operator_image

    free = _deployment(runtime.InClusterOperator(FakeKube()).manifests())  # type: ignore[arg-type]
    assert "nodeSelector" not in free["spec"]["template"]["spec"]
    pinned = runtime.InClusterOperator(FakeKube(), node_selector={"kfs.dev/real-node": "true"})  # type: ignore[arg-type]
    pod = _deployment(pinned.manifests())["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kfs.dev/real-node": "true"}
    container = pod["containers"][0]
    assert container["image"] == operator_image.OPERATOR_IMAGE
    # The Deployment's args must name files the image carries where it puts them.
    assert container["args"][-2:] == operator_image.CMD[-2:]
