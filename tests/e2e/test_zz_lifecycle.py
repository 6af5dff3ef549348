"""`kfs cluster down` leaves nothing behind, and `up` after `down` works.

Runs after the other e2e tests (file order), on the session's local cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from failure_stories.host import netns
from failure_stories.providers.local import LocalProvider
from failure_stories.providers.local import layout as L


def kfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "failure_stories", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_up_twice_is_idempotent(kfs_provider):
    assert isinstance(kfs_provider, LocalProvider)
    pids = {n: kfs_provider.sup.record(n).pid for n in kfs_provider.sup.names()}
    done = kfs("cluster", "up")
    assert done.returncode == 0, done.stderr
    assert {n: kfs_provider.sup.record(n).pid for n in kfs_provider.sup.names()} == pids
    assert str(L.Paths.default().admin_kubeconfig) in done.stdout


def test_down_leaves_nothing_behind_and_up_again_works(kfs_provider):
    assert kfs("cluster", "down").returncode == 0
    left = kfs_provider.node.leftovers()
    assert left == {
        "processes": [],
        "mounts": [],
        "veths": [],
        "bridge": [],
        "routes": [],
        "iptables_chains": [],
        "cgroups": [],
        "netns": [],
    }
    assert not any(kfs_provider.sup.alive(n) for n in kfs_provider.sup.names())
    assert not L.Paths.default().root.exists()
    assert netns.leftovers() == []
    status = kfs("cluster", "status")
    assert status.returncode == 3 and "not running" in status.stdout


NETNS_ORDER = Path(__file__).parent / "fresh_host" / "netns_order.py"


def in_fresh_host_mount_namespace(*args: str) -> dict[str, Any]:
    """Run the netns-order script where /run/netns is a plain directory again, as
    on a new machine: in a private mount namespace, never the host's, with every
    mount of /run/netns taken off there. The cluster it starts lives and dies
    inside that namespace."""
    shell = (
        "while grep -q ' /run/netns ' /proc/self/mountinfo; do umount -l /run/netns; done; "
        f'exec {sys.executable} {NETNS_ORDER} "$@"'
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "netns-order", *args],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_fresh_host_order_without_the_fix_strands_the_pod_and_down_still_frees_it():
    """The negative control: the order a new machine saw (pod first, then an outside
    host) with /run/netns left plain. The pod's namespace is covered and the pod
    cannot finish; `down` must still free the covered namespace."""
    out = in_fresh_host_mount_namespace("--without-fix")
    assert out["netns_dir_was_mount_point"] is False
    assert len(out["pod_namespaces"]) == 1
    assert out["netns_dir_mount_point_after_outside_host"] is True
    assert out["pod_and_netns_gone_seconds"] is None
    assert out["hidden_after_delete"] >= 1
    assert out["leftovers"] == {}


def test_fresh_host_order_with_the_fix_frees_the_pod_and_its_namespace():
    out = in_fresh_host_mount_namespace()
    assert out["netns_dir_was_mount_point"] is False
    assert len(out["pod_namespaces"]) == 1
    assert out["pod_and_netns_gone_seconds"] is not None
    assert out["pod_and_netns_gone_seconds"] < 45
    assert out["hidden_after_delete"] == 0
    assert out["leftovers"] == {}
    # The mount point `up` made is undone by `down`: the host ends as it began.
    assert out["netns_dir_mount_point_after_down"] is False
    assert out["netns_dir_left_by_down"] is False


def test_up_after_the_fresh_host_runs_works():
    # The rest of the session (the scenarios) runs on the recreated cluster.
    done = kfs("cluster", "up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Ready") >= 4
