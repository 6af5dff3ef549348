"""Runs inside a private mount namespace whose /run/netns is a plain directory,
as on a new machine: brings the local cluster up, starts a pod on the real node,
creates an outside host (`ip netns add`), deletes the pod, and reports as JSON
whether the pod and its network namespace went away and what `down` left.

`--without-fix` leaves /run/netns as it is (the order that broke new machines),
so the test can show that it catches the bug. Used by test_zz_lifecycle.py."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from kubernetes.client.rest import ApiException

from failure_stories.core.errors import WaitTimeout
from failure_stories.core.wait import wait_for
from failure_stories.host import netns, netns_dir
from failure_stories.providers.base import toolbox_pod
from failure_stories.providers.local import LocalProvider

POD = toolbox_pod("pinned")


def pod_namespaces() -> set[str]:
    return {m.point for m in netns_dir.pinned(netns_dir._mounts()) if "/cni-" in m.point}


def main() -> int:
    if "--without-fix" in sys.argv:
        netns_dir.ensure_mount_point = lambda holder: None  # type: ignore[assignment]
    existed = netns_dir.NETNS_DIR.exists()
    out: dict[str, Any] = {"netns_dir_was_mount_point": bool(netns_dir.covers(netns_dir._mounts()))}
    provider = LocalProvider()
    provider.up()
    kube = provider.kube()
    ns = kube.create_namespace("netns-order")
    before = pod_namespaces()
    kube.apply([POD], ns)
    kube.wait_pod_running(ns, "pinned", timeout=120)
    mine = pod_namespaces() - before
    out["pod_namespaces"] = sorted(mine)
    outside = netns.create("203.0.113.0/24")
    out["netns_dir_mount_point_after_outside_host"] = bool(netns_dir.covers(netns_dir._mounts()))
    t0 = time.monotonic()
    kube.core.delete_namespaced_pod("pinned", ns)

    def pod_gone() -> bool:
        try:
            kube.core.read_namespaced_pod("pinned", ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    try:
        wait_for(
            lambda: pod_gone() and not (mine & pod_namespaces()), what="pod and netns", timeout=45
        )
        out["pod_and_netns_gone_seconds"] = round(time.monotonic() - t0, 1)
    except WaitTimeout:
        out["pod_and_netns_gone_seconds"] = None
    out["pod_gone"] = pod_gone()
    out["hidden_after_delete"] = len(netns_dir.hidden(netns_dir._mounts()))
    outside.delete()
    provider.down()
    out["leftovers"] = {k: v for k, v in provider.node.leftovers().items() if v}
    out["netns_dir_mount_point_after_down"] = bool(netns_dir.covers(netns_dir._mounts()))
    out["netns_dir_left_by_down"] = not existed and netns_dir.NETNS_DIR.exists()
    if out["netns_dir_left_by_down"] and not any(netns_dir.NETNS_DIR.iterdir()):
        # Without the fix nothing records that /run/netns was new: this test's
        # own cleanup, so the host ends as it began either way.
        netns_dir.NETNS_DIR.rmdir()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
