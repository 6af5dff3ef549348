"""kind's node image, built offline: ``localhost/kfs/kind-node:v1.34.4``.

kind only needs its node image to exist in the local Docker engine, and
`kind build node-image` cannot run without a registry, so the image is made
here from what this machine builds (images/kind-node/ holds its files):

1. a debootstrapped Debian rootfs with systemd, Debian's containerd 1.6 and
   runc and the CNI plugins (rootfs.build_base_layer, its own package list);
2. ``node.tar``: kind's contract (``/kind/version``,
   ``/kind/manifests/default-cni.yaml`` with kind's template markers), our
   entrypoint, the kubelet's units, containerd's config, kubeadm, kubelet,
   kubectl and crictl;
3. ``preload.tar``: ``/var/lib/containerd`` holding, in the ``k8s.io``
   namespace, the images kubeadm asks for (control plane and kube-proxy from
   our binaries, etcd, CoreDNS), our pause image and the CNI agent's image.
   It is filled by running this host's containerd (the same Debian 1.6 as in
   the image) on a scratch root and `ctr images import`-ing each archive.

Each image is labelled with the version of what it really holds: etcd and
CoreDNS are checked with ``--version`` before they are tagged. The pause
image keeps its own name (``localhost/kfs/pause:v1``), set as containerd's
sandbox image, because it is not upstream's pause 3.10.1.

The result is cached twice: the tarballs in the image cache by a key of every
input, and the Docker image, labelled with that key, so a second call only
compares a label.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from failure_stories.core.errors import ProviderError
from failure_stories.host import commands
from failure_stories.host.processes import Supervisor
from failure_stories.images.build import IMAGES_DIR, PATH_ENV, PAUSE_IMAGE, _build_pause, pause_key
from failure_stories.images.cache import RECIPE_VERSION, default_cache_dir, locked, prune
from failure_stories.images.load import import_images, wait_for_containerd
from failure_stories.images.oci import (
    Blob,
    image_config,
    root_owned,
    write_image_archive,
    write_layer,
)
from failure_stories.images.rootfs import _require, base_key, build_base_layer

Log = Callable[[str], None]

KUBERNETES_VERSION = "v1.34.4"
NODE_IMAGE = f"localhost/kfs/kind-node:{KUBERNETES_VERSION}"
CNI_IMAGE = "localhost/kfs/kind-cni:v1"
KEY_LABEL = "kfs.dev/input-key"
REGISTRY = "registry.k8s.io"
ETCD_TAG = "3.6.5-0"
COREDNS_TAG = "v1.12.1"

NODE_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "conntrack",
    "containerd",
    "containernetworking-plugins",
    "dbus",
    "ethtool",
    "iproute2",
    "iptables",
    "kmod",
    "mount",
    "procps",
    "runc",
    "socat",
    "systemd",
    "systemd-sysv",
    "util-linux",
)
# The kube-proxy and CNI agent images run iptables and python3: the toolbox's base.
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
PRELOADED_TOOLS = (*CONTROL_PLANE, "kube-proxy", "etcd", "coredns")
NODE_TOOLS = ("kubeadm", "kubelet", "kubectl", "crictl")
# What the local provider's binaries module builds (coredns is built apart).
BINARIES = (*CONTROL_PLANE, "kube-proxy", "etcd", *NODE_TOOLS)


@dataclass(frozen=True)
class NodeInputs:
    """Where each binary comes from (command -> path), the image's own files,
    and the masquerade agent (images/workloads/masq_agent.py)."""

    tools: Mapping[str, Path]
    files: Path = IMAGES_DIR / "kind-node"
    masq_agent: Path = IMAGES_DIR / "workloads" / "masq_agent.py"

    def masq_source(self) -> Path:
        return self.masq_agent


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def _hash_files(h: hashlib._Hash, folder: Path) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(folder).as_posix()
        h.update(f"\0file {rel} {int(bool(path.stat().st_mode & 0o111))}\0".encode())
        h.update(_file_digest(path))


def preload_key(inputs: NodeInputs) -> str:
    """sha256 of what /var/lib/containerd holds: the images' binaries, the
    toolbox base, the CNI agent, the masquerade agent and the pause source."""
    h = hashlib.sha256()
    h.update(f"{RECIPE_VERSION}\0{KUBERNETES_VERSION}\0{ETCD_TAG}\0{COREDNS_TAG}\0".encode())
    h.update(base_key().encode())
    for name in PRELOADED_TOOLS:
        h.update(f"\0tool {name}\0".encode())
        h.update(_file_digest(inputs.tools[name]))
    _hash_files(h, inputs.files / "cni")
    h.update(b"\0masq\0" + _file_digest(inputs.masq_source()))
    h.update(pause_key(IMAGES_DIR / "pause" / "pause.c").encode())
    return h.hexdigest()


def node_key(inputs: NodeInputs) -> str:
    """sha256 of every input: the preload's key, the node's base layer, the
    node's own binaries and each file of images/kind-node."""
    h = hashlib.sha256()
    h.update(preload_key(inputs).encode())
    h.update(base_key(NODE_PACKAGES).encode())
    for name in NODE_TOOLS:
        h.update(f"\0tool {name}\0".encode())
        h.update(_file_digest(inputs.tools[name]))
    _hash_files(h, inputs.files)
    return h.hexdigest()


def _version_of(binary: Path, flag: str, pattern: str) -> str:
    out = commands.run([str(binary), flag], what=f"{binary.name} {flag}")
    m = re.search(pattern, out)
    if m is None:
        raise ProviderError(f"cannot read the version of {binary} from: {out.strip()[:80]}")
    return m.group(1)


def check_versions(tools: Mapping[str, Path]) -> None:
    """Refuse to tag a binary with a version it is not."""
    etcd = _version_of(tools["etcd"], "--version", r"etcd Version: (\S+)")
    if f"{etcd}-0" != ETCD_TAG:
        raise ProviderError(
            f"{tools['etcd']} is etcd {etcd}, kubeadm {KUBERNETES_VERSION} wants {ETCD_TAG}: "
            "run `make setup` to rebuild it from build/k8s"
        )
    coredns = _version_of(tools["coredns"], "-version", r"CoreDNS-(\S+)")
    if f"v{coredns}" != COREDNS_TAG:
        raise ProviderError(f"{tools['coredns']} is CoreDNS {coredns}, expected {COREDNS_TAG}")
    kubelet = _version_of(tools["kubelet"], "--version", r"Kubernetes (\S+)")
    if kubelet != KUBERNETES_VERSION:
        raise ProviderError(f"{tools['kubelet']} is {kubelet}, expected {KUBERNETES_VERSION}")


def _layer_of(files: Mapping[str, Path], out: Path, links: Mapping[str, str] | None = None) -> Blob:
    """A layer holding ``files`` (path in image -> source) and symlinks, root-owned."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="layer-") as tmp:
        root = Path(tmp)
        for rel, src in files.items():
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                dest.mkdir(exist_ok=True)
            else:
                shutil.copy2(src, dest)
        for rel, target in (links or {}).items():
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(target)
        return write_layer(root, out, normalise=root_owned)


def _image_archives(inputs: NodeInputs, cache: Path, work: Path, log: Log) -> dict[str, Path]:
    """ref -> archive of every image the node holds at boot."""
    toolbox_base = build_base_layer(cache, log)
    archives: dict[str, Path] = {}

    def image(
        ref: str,
        layers: list[Blob],
        entrypoint: list[str] | None = None,
        cmd: list[str] | None = None,
    ) -> None:
        out = work / (re.sub(r"[^a-z0-9.]+", "-", ref) + ".tar")
        config = image_config(layers, env=[PATH_ENV], entrypoint=entrypoint, cmd=cmd)
        write_image_archive(out, ref, layers, config)
        archives[ref] = out

    for name in CONTROL_PLANE:
        layer = _layer_of({f"usr/local/bin/{name}": inputs.tools[name]}, work / f"{name}.layer")
        image(f"{REGISTRY}/{name}:{KUBERNETES_VERSION}", [layer])
    proxy = _layer_of({"usr/local/bin/kube-proxy": inputs.tools["kube-proxy"]}, work / "kp.layer")
    image(f"{REGISTRY}/kube-proxy:{KUBERNETES_VERSION}", [toolbox_base, proxy])
    etcd = _layer_of({"usr/local/bin/etcd": inputs.tools["etcd"]}, work / "etcd.layer")
    image(f"{REGISTRY}/etcd:{ETCD_TAG}", [etcd])
    coredns = _layer_of({"coredns": inputs.tools["coredns"]}, work / "coredns.layer")
    image(f"{REGISTRY}/coredns/coredns:{COREDNS_TAG}", [coredns], entrypoint=["/coredns"])
    cni = _layer_of(
        {
            "opt/kfs/cni/kfs_cni.py": inputs.files / "cni" / "kfs_cni.py",
            "opt/kfs/cni/masq_agent.py": inputs.masq_source(),
        },
        work / "cni.layer",
    )
    image(CNI_IMAGE, [toolbox_base, cni], cmd=["python3", "/opt/kfs/cni/kfs_cni.py"])
    archives[PAUSE_IMAGE] = _build_pause(cache, IMAGES_DIR, log)
    return archives


def _preload(inputs: NodeInputs, cache: Path, out: Path, log: Log) -> None:
    """/var/lib/containerd with every image imported, as a layer tarball."""
    containerd = _require("containerd", "apt-get install containerd")
    with tempfile.TemporaryDirectory(dir=cache, prefix="kind-preload-") as tmp:
        work = Path(tmp)
        archives = _image_archives(inputs, cache, work, log)
        root = work / "fs" / "var" / "lib" / "containerd"
        root.mkdir(parents=True)
        address = str(work / "containerd.sock")
        config = work / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{root}"\nstate = "{work / "state"}"\n'
            # Only content, metadata and the overlayfs snapshotter are needed.
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{address}"\n'
        )
        sup = Supervisor(work / "run")
        sup.start("containerd", [containerd, "--config", str(config)])
        try:
            wait_for_containerd(address)
            import_images(archives, address, "k8s.io", log=log)
        finally:
            sup.stop("containerd")
        write_layer(work / "fs", out)


def _node_layer(inputs: NodeInputs, out: Path) -> Blob:
    f = inputs.files / "files"
    units = "etc/systemd/system"
    files = {
        "usr/local/bin/entrypoint": f / "entrypoint",
        "kind/manifests/default-cni.yaml": f / "default-cni.yaml",
        f"{units}/kubelet.service": f / "kubelet.service",
        f"{units}/kubelet.slice": f / "kubelet.slice",
        f"{units}/kubelet.service.d/10-kubeadm.conf": f / "10-kubeadm.conf",
        "etc/default/kubelet": f / "kubelet.default",
        "etc/containerd/config.toml": f / "containerd-config.toml",
        "etc/crictl.yaml": f / "crictl.yaml",
        "usr/bin/kubeadm": inputs.tools["kubeadm"],
        "usr/bin/kubelet": inputs.tools["kubelet"],
        "usr/bin/kubectl": inputs.tools["kubectl"],
        "usr/local/bin/crictl": inputs.tools["crictl"],
    }
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="kind-node-") as tmp:
        version = Path(tmp) / "version"
        version.write_text(f"{KUBERNETES_VERSION}\n")
        empty = Path(tmp) / "empty"
        empty.mkdir()
        files["kind/version"] = version
        files["etc/cni/net.d"] = empty
        links = {
            f"{units}/multi-user.target.wants/kubelet.service": "../kubelet.service",
            f"{units}/multi-user.target.wants/containerd.service": (
                "/lib/systemd/system/containerd.service"
            ),
            "opt/cni/bin": "/usr/lib/cni",
        }
        return _layer_of(files, out, links)


def image_key_in_docker(docker: str, ref: str = NODE_IMAGE) -> str | None:
    label = f'{{{{index .Config.Labels "{KEY_LABEL}"}}}}'
    out = commands.run([docker, "image", "inspect", "--format", label, ref], check=False).strip()
    return out or None


def build_node_image(
    inputs: NodeInputs,
    docker: str,
    *,
    cache_dir: Path | None = None,
    log: Log = print,
) -> str:
    """Build (or find) the node image in Docker; return its ref."""
    check_versions(inputs.tools)
    key = node_key(inputs)
    if image_key_in_docker(docker) == key:
        log(f"{NODE_IMAGE}: cached in docker ({key[:16]})")
        return NODE_IMAGE
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    started = time.monotonic()
    with locked(cache):
        base = build_base_layer(cache, log, packages=NODE_PACKAGES, name="kind-node-base")
        node_tar = cache / f"kind-node-{key[:16]}.node.tar"
        preload = cache / f"kind-node-preload-{preload_key(inputs)[:16]}.tar"
        if not node_tar.is_file():
            _node_layer(inputs, node_tar)
        if not preload.is_file():
            log(f"{NODE_IMAGE}: preloading the cluster's images into containerd")
            _preload(inputs, cache, preload, log)
        prune(cache, "kind-node-*.node.tar", {node_tar})
        prune(cache, "kind-node-preload-*.tar", {preload})
        ctx = cache / "kind-node-context"
        if ctx.exists():
            shutil.rmtree(ctx)
        ctx.mkdir()
        shutil.copy2(inputs.files / "Dockerfile", ctx / "Dockerfile")
        parts = {"rootfs.tar": base.path, "node.tar": node_tar, "preload.tar": preload}
        for name, src in parts.items():
            try:
                # A hardlink saves copying a GB; both live in the cache.
                os.link(src, ctx / name)
            except OSError:
                shutil.copy2(src, ctx / name)
        image_id = [docker, "image", "inspect", "--format", "{{.Id}}", NODE_IMAGE]
        previous = commands.run(image_id, check=False).strip()
        try:
            commands.run(
                [docker, "build", "--label", f"{KEY_LABEL}={key}", "-t", NODE_IMAGE, str(ctx)],
                what=f"docker build {NODE_IMAGE}",
                log_file=cache / "logs" / "kind-node-build.log",
                timeout=None,
            )
        finally:
            shutil.rmtree(ctx)
        if previous and previous != commands.run(image_id, check=False).strip():
            # The stale image is 1.7 GB; Docker refuses while a node still uses it.
            commands.run([docker, "rmi", previous], check=False)
    log(f"{NODE_IMAGE}: built in {time.monotonic() - started:.0f}s ({key[:16]})")
    return NODE_IMAGE
