"""/run/netns: covered pod namespaces are recognised, the mount point is made
before the first pin, and `down` frees namespaces that a later mount covered.

The host-level tests run in a private mount namespace (`unshare -m`), where
/run/netns can be returned to a new machine's plain directory without
touching the host's."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from failure_stories.host import netns_dir

# Read off this machine after a pod namespace was pinned on a plain /run/netns
# and `ip netns add` then bind-mounted the directory onto itself (ids 66-69).
COVERED = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
66 27 0:4 net:[4026532179] /run/netns/cni-1f2e rw - nsfs nsfs rw
67 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw
68 67 0:4 net:[4026532179] /run/netns/cni-1f2e rw shared:2 - nsfs nsfs rw
69 67 0:4 net:[4026532248] /run/netns/kfs-ext-ab12cd rw shared:3 - nsfs nsfs rw
70 67 0:4 net:[4026532300] /run/netns/someone-else rw shared:4 - nsfs nsfs rw
"""


def test_mountinfo_is_parsed_with_propagation():
    mounts = netns_dir.parse_mountinfo(COVERED)
    assert [m.mount_id for m in mounts] == [27, 66, 67, 68, 69, 70]
    cover = mounts[2]
    assert (cover.point, cover.fstype, cover.shared) == ("/run/netns", "ext4", True)
    assert mounts[1].fstype == "nsfs" and not mounts[1].shared


def test_the_namespace_pinned_before_the_self_bind_is_hidden_and_its_copy_is_not():
    mounts = netns_dir.parse_mountinfo(COVERED)
    assert [m.mount_id for m in netns_dir.covers(mounts)] == [67]
    # Ours only: someone-else is neither pinned by us nor ours to sweep.
    assert [m.mount_id for m in netns_dir.pinned(mounts)] == [66, 68, 69]
    assert [m.mount_id for m in netns_dir.hidden(mounts)] == [66]


def test_without_a_cover_nothing_is_hidden_even_when_stacked():
    text = """\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
66 27 0:4 net:[1] /run/netns/cni-a rw - nsfs nsfs rw
71 66 0:4 net:[1] /run/netns/cni-a rw - nsfs nsfs rw
"""
    mounts = netns_dir.parse_mountinfo(text)
    assert netns_dir.covers(mounts) == []
    assert netns_dir.hidden(mounts) == []


def test_the_visible_cover_is_the_one_on_top():
    text = """\
27 1 254:0 / / rw - ext4 /dev/vda rw
80 27 254:0 /run/netns /run/netns rw shared:1 - ext4 /dev/vda rw
81 80 0:4 net:[1] /run/netns/cni-a rw shared:2 - nsfs nsfs rw
90 80 254:0 /run/netns /run/netns rw shared:3 - ext4 /dev/vda rw
91 90 0:4 net:[2] /run/netns/cni-b rw shared:4 - nsfs nsfs rw
"""
    mounts = netns_dir.parse_mountinfo(text)
    assert [m.mount_id for m in netns_dir.covers(mounts)] == [80, 90]
    assert [m.mount_id for m in netns_dir.hidden(mounts)] == [81]


# -- on the host's kernel, in a private mount namespace -----------------------------

needs_root_tools = pytest.mark.skipif(
    shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs util-linux unshare and iproute2 (run `make setup`)",
)


def _in_private_mount_namespace(
    body: str, tmp_path: Path, network: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``body`` (Python) where /run/netns is a plain, empty directory again.

    A tmpfs on /run/netns would be a mount point; a fresh directory bound over
    /run is not, and gives the test its own /run/netns as a new host has it.
    ``network``: a private network namespace too, for tests that make links."""
    run_dir = tmp_path / "run"
    (run_dir / "netns").mkdir(parents=True)
    script = tmp_path / "body.py"
    script.write_text(
        textwrap.dedent(
            """
            import subprocess, time
            from pathlib import Path
            from failure_stories.host import netns_dir

            def pin(name):
                # containerd's way: a bind mount of a new namespace onto a file.
                holder = subprocess.Popen(["unshare", "-n", "sleep", "60"])
                time.sleep(0.2)
                path = netns_dir.NETNS_DIR / name
                path.touch()
                subprocess.run(["mount", "--bind", f"/proc/{holder.pid}/ns/net", str(path)],
                               check=True)
                holder.kill()
                return path

            def unpin(path):
                subprocess.run(["umount", str(path)], check=True)
                path.unlink()  # containerd's unlinkat: EBUSY when covered
            """
        )
        + textwrap.dedent(body)
    )
    # The host's own /run/netns mount (a running cluster's pods pinned in it)
    # comes off first, in this namespace only; then a fresh /run.
    shell = (
        "while grep -q ' /run/netns ' /proc/self/mountinfo; do umount -l /run/netns; done; "
        f"mount --bind {run_dir} /run && exec {sys.executable} {script}"
    )
    private = ["-m", "-n"] if network else ["-m"]
    return subprocess.run(
        ["unshare", *private, "--propagation", "private", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_root_tools
def test_a_fresh_host_order_hides_a_pod_namespace_unless_the_mount_point_comes_first(tmp_path):
    done = _in_private_mount_namespace(
        """
        # Today's order on a new host: pod first, then an outside host.
        pod = pin("cni-old-order")
        subprocess.run(["ip", "netns", "add", "kfs-ext-test01"], check=True)
        try:
            unpin(pod)
            print("old order: unlinked")
        except OSError as exc:
            print(f"old order: {exc.strerror}")
        print("hidden:", len(netns_dir.hidden(netns_dir._mounts())))
        subprocess.run(["ip", "netns", "delete", "kfs-ext-test01"], check=True)
        # down's sweep reaches the covered one and leaves the directory empty.
        print("problems:", netns_dir.sweep("local-cluster"))
        print("left:", netns_dir.leftovers(), sorted(p.name for p in netns_dir.NETNS_DIR.iterdir()))
        # The fix: the mount point first, then the same order unpins cleanly.
        netns_dir.ensure_mount_point("local-cluster")
        pod = pin("cni-new-order")
        subprocess.run(["ip", "netns", "add", "kfs-ext-test02"], check=True)
        unpin(pod)
        print("new order: unlinked")
        subprocess.run(["ip", "netns", "delete", "kfs-ext-test02"], check=True)
        netns_dir.sweep("local-cluster")
        made = netns_dir.record_path().exists()
        print("after down:", netns_dir.covers(netns_dir._mounts()), made)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "old order: Device or resource busy" in out
    assert "hidden: 1" in out
    assert "problems: []" in out
    assert "left: [] []" in out
    assert "new order: unlinked" in out
    # The mount point the fix made is undone once nothing is pinned there.
    assert "after down: [] False" in out


@needs_root_tools
def test_an_outside_host_on_a_host_without_the_cluster_leaves_no_mount_behind(tmp_path):
    """Seen on the kind path: `ip netns add` self-binds /run/netns, and nothing undid it."""
    done = _in_private_mount_namespace(
        """
        from failure_stories.host import netns
        netns_dir.NETNS_DIR.rmdir()  # a new host has no /run/netns at all

        def state():
            return (len(netns_dir.covers(netns_dir._mounts())), netns_dir.NETNS_DIR.exists(),
                    netns_dir.record_path().exists())

        host = netns.create("203.0.113.0/24")
        print("during:", state(), sorted(netns_dir.holders()) == [host.name])
        host.delete()
        print("after delete:", state())

        # With the cluster beside it: the last one to let go undoes the mount.
        host = netns.create("203.0.113.0/24")
        netns_dir.ensure_mount_point("local-cluster")
        host.delete()
        print("cluster still holds it:", state(), sorted(netns_dir.holders()))
        netns_dir.sweep("local-cluster")
        print("after down:", state())

        # A crashed run's outside host: `kfs cleanup`'s sweep lets go for it.
        host = netns.create("198.51.100.0/24")
        print("swept:", netns.sweep() == [host.name], state())
        """,
        tmp_path,
        network=True,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "during: (1, True, True) True" in out, out
    assert "after delete: (0, False, False)" in out, out
    assert "cluster still holds it: (1, True, True) ['local-cluster']" in out, out
    assert "after down: (0, False, False)" in out, out
    assert "swept: True (0, False, False)" in out, out


@needs_root_tools
def test_sweep_leaves_a_cover_alone_when_someone_else_has_a_namespace_there(tmp_path):
    done = _in_private_mount_namespace(
        """
        pod = pin("cni-covered")
        subprocess.run(["ip", "netns", "add", "not-ours"], check=True)
        problems = netns_dir.sweep("local-cluster")
        print("problems:", len(problems), problems[0] if problems else "")
        print("not-ours kept:", (netns_dir.NETNS_DIR / "not-ours").exists())
        subprocess.run(["ip", "netns", "delete", "not-ours"], check=True)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert any(
        line.startswith("problems: 1 1 pod network namespaces are covered") and "not-ours" in line
        for line in out
    ), out
    assert "not-ours kept: True" in out


def test_a_mount_of_the_directory_under_a_later_mount_of_run_is_no_mount_point():
    """Seen in this suite's own test: /run covered in a private mount namespace
    while the host's /run/netns mount is still listed under its old path."""
    text = """\
27 1 254:0 / / rw - ext4 /dev/vda rw
80 27 254:0 /run/netns /run/netns rw shared:1 - ext4 /dev/vda rw
95 27 254:0 /tmp/x/run /run rw - ext4 /dev/vda rw
96 95 0:4 net:[1] /run/netns/cni-a rw - nsfs nsfs rw
"""
    mounts = netns_dir.parse_mountinfo(text)
    assert netns_dir.covers(mounts) == []
    assert [m.mount_id for m in netns_dir.resolve(mounts, "/run")] == [95]
    assert netns_dir.hidden(mounts) == []
