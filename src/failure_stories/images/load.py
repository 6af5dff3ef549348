"""Handing built images to a runtime: containerd (`ctr images import`), or
Docker (`docker load`, or a `docker build` context)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from failure_stories.core import timing
from failure_stories.core.errors import ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import commands
from failure_stories.images.build import IMAGES_DIR, stories_for, workload_sources
from failure_stories.images.cache import default_cache_dir, locked
from failure_stories.images.oci import archive_manifest_digest
from failure_stories.images.rootfs import _require, build_base_layer


def containerd_images(ctr: str, address: str, namespace: str) -> dict[str, str]:
    """ref -> manifest digest of the images a containerd holds in ``namespace``."""
    out = commands.run(
        [ctr, "--address", address, "-n", namespace, "images", "ls"],
        what=f"ctr images ls against {address}",
    )
    return parse_ctr_images_ls(out)


def parse_ctr_images_ls(text: str) -> dict[str, str]:
    """ref -> digest from ``ctr images ls`` output."""
    found: dict[str, str] = {}
    # Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS; SIZE holds a space, so
    # only the first three fields are positional.
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("sha256:"):
            found[fields[0]] = fields[2]
    return found


@timing.timed(timing.IMAGES)
def import_images(
    archives: dict[str, Path],
    containerd_address: str,
    namespace: str = "k8s.io",
    *,
    snapshotter: str = "overlayfs",
    log: Callable[[str], None] = print,
) -> None:
    """Import into containerd, unpacked for ``snapshotter``, skipping up-to-date images.

    Unpacking at import time is what makes the image ready for the CRI plugin
    (which reads namespace k8s.io and the overlayfs snapshotter by default):
    the first pod start then does not pay for it.
    """
    ctr = _require("ctr", "apt-get install containerd")
    present = containerd_images(ctr, containerd_address, namespace)
    for ref, archive in archives.items():
        digest = archive_manifest_digest(archive)
        if present.get(ref) == digest:
            log(f"{ref}: already in containerd ({digest[:19]})")
            continue
        started = time.monotonic()
        commands.run(
            [
                ctr,
                "--address",
                containerd_address,
                "-n",
                namespace,
                "images",
                "import",
                "--snapshotter",
                snapshotter,
                str(archive),
            ],
            what=f"ctr images import {archive.name}",
            timeout=None,
        )
        now = containerd_images(ctr, containerd_address, namespace)
        if now.get(ref) != digest:
            raise ProviderError(
                f"ctr imported {archive.name} but containerd shows {ref} as "
                f"{now.get(ref, 'missing')}, expected {digest}"
            )
        log(f"{ref}: imported in {time.monotonic() - started:.1f}s ({digest[:19]})")


def wait_for_containerd(address: str, timeout: float = 30) -> None:
    """Block until a containerd answers on ``address``."""
    ctr = _require("ctr", "apt-get install containerd")

    def answers() -> bool:
        return commands.succeeds([ctr, "--address", address, "version"])

    wait_for(answers, what=f"containerd on {address}", timeout=timeout, interval=0.2)


def docker_build_context(
    cache_dir: Path | None = None,
    *,
    images_dir: Path | None = None,
    scenarios_dir: Path | None = None,
) -> Path:
    """Lay out a context for ``docker build -t localhost/kfs/toolbox:v1 <dir>``.

    It holds the Dockerfile, the same rootfs tarball as the ctr archive's base
    layer, and the workloads, so both routes give the same filesystem.
    """
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    src = images_dir if images_dir is not None else IMAGES_DIR
    with locked(cache):
        base = build_base_layer(cache)
        ctx = cache / "docker-context"
        if ctx.exists():
            shutil.rmtree(ctx)
        ctx.mkdir()
        shutil.copy2(src / "toolbox" / "Dockerfile", ctx / "Dockerfile")
        try:
            # A hardlink saves copying a few hundred MB; both live in the cache.
            os.link(base.path, ctx / "rootfs.tar")
        except OSError:
            shutil.copy2(base.path, ctx / "rootfs.tar")
        (ctx / "workloads").mkdir()
        for rel, path in workload_sources(src, stories_for(images_dir, scenarios_dir)).items():
            dest = ctx / "workloads" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    return ctx


@timing.timed(timing.IMAGES)
def load_into_docker(archives: dict[str, Path], log: Callable[[str], None] = print) -> None:
    """``docker load`` each archive (it reads the manifest.json they carry)."""
    docker = _require("docker", "install Docker (Debian: apt-get install docker.io)")
    for ref, archive in archives.items():
        commands.run(
            [docker, "load", "-i", str(archive)], what=f"docker load {archive.name}", timeout=None
        )
        log(f"{ref}: loaded into docker")


@timing.timed(timing.IMAGES)
def import_into_nodes(
    archives: dict[str, Path],
    nodes: list[str],
    docker: str,
    namespace: str = "k8s.io",
    log: Callable[[str], None] = print,
) -> None:
    """Import into the containerd of each node container (a kind node), through
    ``docker exec``, skipping the images a node already holds at the same digest."""
    for node in nodes:
        ctr = [docker, "exec", "-i", node, "ctr", "-n", namespace, "images"]
        present = parse_ctr_images_ls(commands.run([*ctr, "ls"], what=f"ctr images ls on {node}"))
        for ref, archive in archives.items():
            digest = archive_manifest_digest(archive)
            if present.get(ref) == digest:
                continue
            started = time.monotonic()
            with archive.open("rb") as stream:
                commands.run(
                    [*ctr, "import", "--snapshotter", "overlayfs", "-"],
                    what=f"ctr images import {archive.name} on {node}",
                    timeout=600,
                    stdin=stream,
                )
            now = parse_ctr_images_ls(commands.run([*ctr, "ls"], what=f"ctr images ls on {node}"))
            if now.get(ref) != digest:
                raise ProviderError(
                    f"{node}: ctr imported {archive.name} but shows {ref} as "
                    f"{now.get(ref, 'missing')}, expected {digest}"
                )
            log(f"{ref}: imported into {node} in {time.monotonic() - started:.1f}s")
