"""`kfs operator install|uninstall` on the local provider: the operator as a pod on
the real node, running a GameDay end to end, then removed without leftovers."""

from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from failure_stories.core.wait import wait_for
from failure_stories.gameday.resource import GROUP, KIND, PLURAL, VERSION
from failure_stories.operator import runtime
from failure_stories.providers.base import REAL_NODE_LABEL, Provider
from failure_stories.providers.kube import KFS as KFS_LABEL
from failure_stories.providers.kube import MANAGED_BY, Kube

pytestmark = pytest.mark.e2e

KFS = str(Path(sys.executable).with_name("kfs"))


def _kfs(*args: str) -> str:
    done = subprocess.run([KFS, *args], capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _gameday(custom: client.CustomObjectsApi, ns: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "weekly"
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


def test_installed_operator_pod_runs_a_gameday_and_uninstalls_cleanly(
    kfs_provider: Provider, kube: Kube
) -> None:
    if kfs_provider.name != "local":
        pytest.skip("this test installs the local provider's operator pod")
    # A team namespace: the installed operator leaves kfs-* to scenario runs.
    team = f"team-gameday-{secrets.token_hex(3)}"
    labels = {MANAGED_BY: KFS_LABEL}  # so `kfs cleanup` finds it if this test dies
    kube.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=team, labels=labels))
    )
    custom = client.CustomObjectsApi(kube.api)
    try:
        out = _kfs("operator", "install")
        assert "operator Deployment kfs-system/kfs-operator ready" in out
        pods = kube.pods(runtime.SYSTEM_NAMESPACE, runtime.OPERATOR_SELECTOR)
        assert len(pods) == 1
        pod = pods[0]
        node = kube.core.read_node(pod.spec.node_name)
        assert node.metadata.labels.get(REAL_NODE_LABEL) == "true"
        assert pod.spec.containers[0].image == "localhost/kfs/toolbox:v1"
        assert _kfs("operator", "install").count("ready") == 1  # idempotent

        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            team,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "metadata": {"name": "weekly"},
                "spec": {"scenario": "jwplayer-exposed-dashboard"},
            },
        )

        def finished() -> dict[str, Any] | None:
            obj = _gameday(custom, team)
            st = (obj or {}).get("status") or {}
            return st if st.get("state") in ("Finished", "Reverted", "Failed") else None

        st = wait_for(finished, what="the GameDay to finish", timeout=420, interval=2)
        assert st["verdict"] == "passed", st.get("message")
        assert st["measurements"]["symptom"]["outside_exec_succeeded"] == 1
        assert st["measurements"]["verify"]["outside_exec_succeeded"] == 0
        url = f"http://127.0.0.1:{runtime.METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        assert (
            'kfs_gameday_verdicts_total{scenario="jwplayer-exposed-dashboard",verdict="passed"} 1.0'
            in text
        )
        custom.delete_namespaced_custom_object(GROUP, VERSION, team, PLURAL, "weekly")
        wait_for(lambda: _gameday(custom, team) is None, what="the GameDay to go", timeout=60)
    finally:
        out = _kfs("operator", "uninstall")
        kube.delete_namespace(team)
    assert "deleted Deployment kfs-operator" in out
    assert not kube.pods(runtime.SYSTEM_NAMESPACE, runtime.OPERATOR_SELECTOR)
    wait_for(
        lambda: (
            runtime.SYSTEM_NAMESPACE
            not in {n.metadata.name for n in kube.core.list_namespace().items}
        ),
        what="namespace kfs-system to go",
        timeout=120,
        interval=1,
    )
