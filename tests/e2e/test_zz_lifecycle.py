"""`kfs cluster down` leaves nothing behind, and `up` after `down` works.

Runs after the other e2e tests (file order), on the session's local cluster."""

from __future__ import annotations

import subprocess
import sys

from failure_stories import netns
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
    assert status.returncode == 1 and "not running" in status.stdout
    # The rest of the session (the scenarios) runs on the recreated cluster.
    done = kfs("cluster", "up")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Ready") >= 4
