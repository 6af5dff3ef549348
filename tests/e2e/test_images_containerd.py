"""The real images (debootstrap + gcc, cached) in a private containerd.

The containerd here is our own, started with a throw-away config, root, state
and socket under /tmp, so the test neither needs nor touches a cluster's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from failure_stories import images
from failure_stories.core import paths
from failure_stories.core.wait import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd and debootstrap need root"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("containerd", "ctr", "runc", "gcc"))
        or not (shutil.which("debootstrap") or Path("/usr/sbin/debootstrap").exists()),
        reason="needs containerd, ctr, runc, gcc and debootstrap",
    ),
]

NS = "k8s.io"


@pytest.fixture(scope="module")
def archives() -> dict[str, Path]:
    return images.build_images()


def _ns_cgroups() -> set[Path]:
    # `ctr run` puts tasks under /<namespace>/<id> in every v1 hierarchy.
    return set(Path("/sys/fs/cgroup").glob(f"*/{NS}")) | set(Path("/sys/fs/cgroup").glob(NS))


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mounts") as fh:
        return [ln.split()[1] for ln in fh if ln.split()[1].startswith(path + "/")]


@pytest.fixture(scope="module")
def containerd() -> Iterator[str]:
    # Short /tmp path: the socket path must fit in 108 bytes.
    cgroups_before = _ns_cgroups()
    base = tempfile.mkdtemp(prefix="kfs-ctr-", dir="/tmp")
    address = f"{base}/containerd.sock"
    config = Path(base, "config.toml")
    config.write_text(
        "version = 2\n"
        f'root = "{base}/root"\n'
        f'state = "{base}/state"\n'
        f'[grpc]\n  address = "{address}"\n'
        f'[ttrpc]\n  address = "{address}.ttrpc"\n'
        # Keep the opt plugin from creating /opt/containerd on the host.
        f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{base}/opt"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        f'  sandbox_image = "{images.PAUSE_IMAGE}"\n'
        '  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
    )
    log = open(Path(base, "containerd.log"), "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        ["containerd", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        images.wait_for_containerd(address, timeout=30)
        yield address
    finally:
        ctr = ["ctr", "--address", address, "-n", NS]
        tasks = subprocess.run(
            [*ctr, "tasks", "ls", "-q"], check=False, capture_output=True, text=True
        )
        for task in tasks.stdout.split():
            subprocess.run(
                [*ctr, "tasks", "kill", "-s", "SIGKILL", task], check=False, capture_output=True
            )
        for task in tasks.stdout.split():
            wait_for(
                lambda t=task: (
                    subprocess.run(
                        [*ctr, "tasks", "delete", t], check=False, capture_output=True
                    ).returncode
                    == 0
                ),
                what=f"task {task} deleted",
                timeout=15,
            )
        for c in subprocess.run(
            [*ctr, "containers", "ls", "-q"], check=False, capture_output=True, text=True
        ).stdout.split():
            subprocess.run([*ctr, "containers", "delete", c], check=False, capture_output=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for target in sorted(_mounts_under(base), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)
        assert not _mounts_under(base), "containerd left mounts behind"
        shutil.rmtree(base)
        for cg in _ns_cgroups() - cgroups_before:
            # Empty by now; rmdir (not rmtree) is how a cgroup is removed, and it
            # refuses if anything still lives there.
            with contextlib.suppress(OSError):
                cg.rmdir()


@pytest.fixture(scope="module")
def imported(archives: dict[str, Path], containerd: str) -> str:
    images.import_images(archives, containerd)
    return containerd


def ctr_run(address: str, image: str, name: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", address, "-n", NS, "run", "--rm", image, name, *cmd],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_images_are_imported_unpacked_and_seen_by_cri(archives, imported):
    listed = subprocess.run(
        ["ctr", "--address", imported, "-n", NS, "images", "check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for ref, archive in archives.items():
        line = next(ln for ln in listed.splitlines() if ln.startswith(ref + " "))
        assert images.archive_manifest_digest(archive) in line
        assert line.split()[-1] == "true", f"{ref} is not unpacked: {line}"

    # The CRI plugin labels the images it has taken into its own store.
    def cri_managed() -> bool:
        out = subprocess.run(
            ["ctr", "--address", imported, "-n", NS, "images", "ls"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        lines = [ln for ln in out.splitlines() if ln.startswith(tuple(archives))]
        return len(lines) == len(archives) and all(
            "io.cri-containerd.image=managed" in ln for ln in lines
        )

    wait_for(cri_managed, what="CRI plugin to see the imported images", timeout=20)


def test_second_import_is_skipped(archives, imported):
    logs: list[str] = []
    started = time.monotonic()
    images.import_images(archives, imported, log=logs.append)
    assert time.monotonic() - started < 5
    assert len(logs) == len(archives)
    assert all("already in containerd" in line for line in logs)


def test_toolbox_runs_python_and_redis(imported):
    done = ctr_run(imported, images.TOOLBOX_IMAGE, "kfs-t1", "python3", "-c", "print(42)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"
    done = ctr_run(imported, images.TOOLBOX_IMAGE, "kfs-t2", "redis-server", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Redis server v=")
    done = ctr_run(
        imported,
        images.TOOLBOX_IMAGE,
        "kfs-t3",
        "sh",
        "-c",
        "test -f /opt/kfs/workloads/httpbin.py && stat -c %u:%g /var/lib/redis",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() != "0:0", "redis' files must keep their owner"


def test_pause_runs_until_sigterm_then_exits_zero(imported):
    ctr = ["ctr", "--address", imported, "-n", NS]
    run = subprocess.Popen(
        [*ctr, "run", "--rm", images.PAUSE_IMAGE, "kfs-pause"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:

        def running() -> bool:
            out = subprocess.run(
                [*ctr, "tasks", "ls"], check=False, capture_output=True, text=True
            ).stdout
            return any(
                ln.split()[:1] == ["kfs-pause"] and "RUNNING" in ln for ln in out.splitlines()
            )

        wait_for(running, what="pause task running", timeout=20)
        subprocess.run([*ctr, "tasks", "kill", "-s", "SIGTERM", "kfs-pause"], check=True)
        assert run.wait(timeout=20) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def test_changed_workloads_replace_the_imported_image(tmp_path, archives, imported):
    """A new archive under the same tag must replace the image, not be skipped."""
    src = tmp_path / "images"
    shutil.copytree(images.IMAGES_DIR / "workloads", src / "workloads")
    shutil.copytree(images.IMAGES_DIR / "pause", src / "pause")
    (src / "workloads" / "zz_e2e_marker.py").write_text("print('marker')\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    real_cache = archives[images.TOOLBOX_IMAGE].parent
    for f in real_cache.glob("base-*.layer.*"):
        os.link(f, cache / f.name)  # reuse the real base: no second debootstrap
    # The checkout's stories' workloads too: this image replaces the cluster's toolbox.
    changed = images.build_images(cache, images_dir=src, scenarios_dir=paths.SCENARIOS)
    toolbox = {images.TOOLBOX_IMAGE: changed[images.TOOLBOX_IMAGE]}
    try:
        images.import_images(toolbox, imported)
        done = ctr_run(
            imported,
            images.TOOLBOX_IMAGE,
            "kfs-t4",
            "python3",
            "/opt/kfs/workloads/zz_e2e_marker.py",
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "marker"
    finally:
        # Put the real image back for any test that runs after this one, and
        # drop the 140 MB archive rather than leave it to pytest's tmp rotation.
        images.import_images(archives, imported)
        shutil.rmtree(cache)
