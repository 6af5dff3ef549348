"""Build the suite's container images offline and hand them to containerd or Docker.

There is no registry to pull from, so both images are made here from inputs in
the repository:

* the toolbox (``TOOLBOX_IMAGE``): a debootstrapped Debian rootfs (layer 1) plus
  ``images/workloads/`` copied to ``/opt/kfs/workloads`` (layer 2);
* the pause image (``PAUSE_IMAGE``): our own static ``images/pause/pause.c``.

Archives are written with tarfile/hashlib/json in the layout ``docker save``
has produced since Docker 25: an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...``) that also carries a Docker
``manifest.json``. ``ctr images import`` reads the OCI index (so the image
digest containerd reports is the manifest digest we computed, which makes
"already imported?" a string comparison) and ``docker load`` reads
``manifest.json``.

Every output lives in a cache keyed by a sha256 of its inputs. The base layer
has its own key so that editing a workload script rebuilds only the small
second layer and re-packs the archive, not the one-minute debootstrap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failure_stories.core import paths
from failure_stories.core.errors import MissingToolError, ProviderError
from failure_stories.core.wait import wait_for
from failure_stories.host import commands

TOOLBOX_IMAGE = "localhost/kfs/toolbox:v1"
PAUSE_IMAGE = "localhost/kfs/pause:v1"

# Bump when the recipe changes in a way the hashed inputs do not show (cleanup
# steps, image config, archive layout): it invalidates every cached artifact.
RECIPE_VERSION = "1"

DEBIAN_SUITE = "bookworm"
TOOLBOX_PACKAGES: tuple[str, ...] = (
    "ca-certificates",
    "curl",
    "iproute2",
    "iptables",
    "procps",
    "python3",
    "redis-server",
    "redis-tools",
)
WORKLOADS_PATH = "opt/kfs/workloads"
PAUSE_CFLAGS: tuple[str, ...] = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")

# Files made during the build get this mtime (2024-01-01T00:00:00Z) so that
# the same inputs give the same layer digest whenever they are built.
FIXED_MTIME = 1704067200

IMAGES_DIR = paths.IMAGES

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
_ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

Log = Callable[[str], None]


@dataclass(frozen=True)
class Blob:
    """A content-addressed file: where it is, its sha256 and its size."""

    path: Path
    digest: str
    size: int


def default_cache_dir() -> Path:
    return Path(os.environ.get("KFS_CACHE", "~/.cache/kfs")).expanduser() / "images"


# --------------------------------------------------------------------------- keys


def _sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def base_key() -> str:
    """Key of the debootstrapped rootfs layer: only the recipe, never the workloads."""
    return _sha256_json(
        {
            "recipe": RECIPE_VERSION,
            "suite": DEBIAN_SUITE,
            "arch": _debian_arch(),
            "variant": "minbase",
            "packages": sorted(TOOLBOX_PACKAGES),
        }
    )


def workload_files(workloads_dir: Path) -> list[Path]:
    """The files that go into the image; caches, bytecode and dotfiles stay out."""
    if not workloads_dir.is_dir():
        return []
    found: list[Path] = []
    for path in sorted(workloads_dir.rglob("*")):
        rel = path.relative_to(workloads_dir)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if path.suffix == ".pyc" or not path.is_file():
            continue
        found.append(path)
    return found


def toolbox_key(workloads_dir: Path) -> str:
    h = hashlib.sha256()
    h.update(base_key().encode())
    for path in workload_files(workloads_dir):
        rel = path.relative_to(workloads_dir).as_posix()
        # Only the exec bit reaches the image (see root_owned), so
        # only it is hashed: a chmod g+w in a checkout must not force a rebuild.
        executable = bool(path.stat().st_mode & 0o111)
        h.update(f"\0{rel}\0{int(executable)}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def pause_key(pause_c: Path) -> str:
    h = hashlib.sha256()
    h.update(f"{RECIPE_VERSION}\0{' '.join(PAUSE_CFLAGS)}\0".encode())
    h.update(pause_c.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- layers


def _sha256_file(path: Path) -> Blob:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return Blob(path, "sha256:" + h.hexdigest(), path.stat().st_size)


def _walk(root: Path) -> Iterator[Path]:
    """Every entry below ``root`` in sorted order, without following symlinks.

    Sorted so that the tar (and so the digest) does not depend on directory order.
    """
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)


def write_layer(
    root: Path,
    out: Path,
    *,
    prefix: str = "",
    built_since: float | None = None,
    skip_contents_of: tuple[str, ...] = (),
    normalise: Callable[[tarfile.TarInfo], tarfile.TarInfo] | None = None,
) -> Blob:
    """Write ``root`` as an uncompressed, deterministic layer tarball.

    Ownership, modes, symlinks and hardlinks are kept; device nodes, fifos and
    sockets are dropped (the runtime provides /dev). Files modified at or after
    ``built_since`` (all of them when it is None) get FIXED_MTIME; older ones
    keep their mtime, which for a debootstrap is the one shipped in the .deb and
    is what Python's .pyc files were validated against.
    """
    tmp = out.with_name(out.name + ".part")
    skip = {p.strip("/") for p in skip_contents_of}
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        if prefix:
            parts = prefix.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                tar.addfile(_dir_info("/".join(parts[:i])))
        for path in _walk(root):
            rel = path.relative_to(root).as_posix()
            if any(rel.startswith(s + "/") for s in skip):
                continue
            st = path.lstat()
            if not (
                stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)
            ):
                continue
            arcname = f"{prefix.strip('/')}/{rel}" if prefix else rel
            info = tar.gettarinfo(str(path), arcname=arcname)
            if built_since is None or st.st_mtime >= built_since:
                info.mtime = FIXED_MTIME
            else:
                info.mtime = int(st.st_mtime)
            # Names depend on the build host's passwd; the ids are what count.
            info.uname = info.gname = ""
            if normalise is not None:
                info = normalise(info)
            if info.isreg():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    blob = _sha256_file(tmp)
    tmp.replace(out)
    return Blob(out, blob.digest, blob.size)


def _dir_info(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = FIXED_MTIME
    return info


def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files from a checkout, owned by root with plain modes: its owner and umask
    are accidents of whoever cloned the repo."""
    info.uid = info.gid = 0
    if info.isdir():
        info.mode = 0o755
    elif info.isreg():
        info.mode = 0o755 if info.mode & 0o111 else 0o644
    return info


def write_workloads_layer(workloads_dir: Path, out: Path) -> Blob:
    """Layer 2 of the toolbox: exactly the files ``workload_files`` lists."""
    keep = {p.relative_to(workloads_dir).as_posix() for p in workload_files(workloads_dir)}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="workloads-") as tmp:
        staging = Path(tmp)
        for rel in sorted(keep):
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(workloads_dir / rel, dest)
        return write_layer(staging, out, prefix=WORKLOADS_PATH, normalise=root_owned)


# --------------------------------------------------------------------------- archives


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def image_config(
    layers: list[Blob],
    *,
    env: list[str],
    cmd: list[str] | None = None,
    entrypoint: list[str] | None = None,
    user: str | None = None,
    working_dir: str = "/",
) -> dict[str, Any]:
    cfg: dict[str, Any] = {"Env": env, "WorkingDir": working_dir}
    if cmd is not None:
        cfg["Cmd"] = cmd
    if entrypoint is not None:
        cfg["Entrypoint"] = entrypoint
    if user is not None:
        cfg["User"] = user
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(FIXED_MTIME))
    return {
        "architecture": _go_arch(),
        "os": "linux",
        "created": created,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created": created, "created_by": "kfs images.py"} for _ in layers],
    }


def write_image_archive(out: Path, ref: str, layers: list[Blob], config: dict[str, Any]) -> str:
    """Write an OCI layout + docker manifest.json tarball; return the manifest digest.

    Layers are uncompressed, so each blob digest is also its diff_id and the
    archive needs no gzip pass (which would cost more time than disk here).
    """
    config_bytes = _json_bytes(config)
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": _OCI_MANIFEST,
        "config": {"mediaType": _OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [
            {"mediaType": _OCI_LAYER, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    manifest_bytes = _json_bytes(manifest)
    manifest_digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    tag = ref.rsplit(":", 1)[1]
    index = {
        "schemaVersion": 2,
        "mediaType": _OCI_INDEX,
        "manifests": [
            {
                "mediaType": _OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                # ctr takes the full name from the containerd annotation; the
                # OCI ref name is only the tag, as the image-spec says.
                "annotations": {_ANNOTATION_IMAGE_NAME: ref, _ANNOTATION_REF_NAME: tag},
                "platform": {"architecture": _go_arch(), "os": "linux"},
            }
        ],
    }

    def blob_name(digest: str) -> str:
        return "blobs/sha256/" + digest.removeprefix("sha256:")

    docker_manifest = [
        {
            "Config": blob_name(config_digest),
            "RepoTags": [ref],
            "Layers": [blob_name(layer.digest) for layer in layers],
        }
    ]
    small: dict[str, bytes] = {
        blob_name(config_digest): config_bytes,
        blob_name(manifest_digest): manifest_bytes,
    }
    big = {blob_name(layer.digest): layer for layer in layers}

    tmp = out.with_name(out.name + ".part")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        # Metadata first: archive_manifest_digest() stops reading at index.json.
        for name, data in (
            ("oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"})),
            ("index.json", _json_bytes(index)),
            ("manifest.json", _json_bytes(docker_manifest)),
        ):
            _add_bytes(tar, name, data)
        tar.addfile(_dir_info("blobs"))
        tar.addfile(_dir_info("blobs/sha256"))
        for name in sorted(small.keys() | big.keys()):
            if name in small:
                _add_bytes(tar, name, small[name])
            else:
                layer = big[name]
                info = _file_info(name, layer.size)
                with layer.path.open("rb") as fh:
                    tar.addfile(info, fh)
    tmp.replace(out)
    return manifest_digest


def _file_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = FIXED_MTIME
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_file_info(name, len(data)), io.BytesIO(data))


def archive_manifest_digest(archive: Path) -> str:
    """The manifest digest recorded in an archive's index.json (what ctr will report)."""
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.name == "index.json":
                fh = tar.extractfile(member)
                if fh is None:
                    break
                index = json.loads(fh.read())
                return str(index["manifests"][0]["digest"])
    raise ProviderError(f"{archive} has no index.json: not an image archive built by kfs")


# --------------------------------------------------------------------------- tools


# debootstrap lives in /usr/sbin, which a non-login root shell often lacks in PATH.
_SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def _require(tool: str, how: str) -> str:
    found = shutil.which(tool)
    if found is None:
        for d in _SBIN_DIRS:
            candidate = Path(d) / tool
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise MissingToolError(tool, how)
    return found


def _debian_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def _go_arch() -> str:
    # OCI platforms use Go's names; they match Debian's for amd64 and arm64,
    # the only two this suite runs on.
    return _debian_arch()


def debian_mirror(
    suite: str = DEBIAN_SUITE, apt_dir: Path = Path("/etc/apt")
) -> tuple[str, str | None]:
    """The URI (and keyring, if any) apt is configured to use for ``suite``.

    Read from apt's own config at run time so that the mirror is whatever this
    machine was set up with, never a host written into the repository.
    """
    override = os.environ.get("KFS_DEBIAN_MIRROR")
    if override:
        return override, None
    sources = sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for src in sources:
        for stanza in re.split(r"\n\s*\n", src.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if suite in fields.get("suites", "").split() and fields.get("uris"):
                keyring = fields.get("signed-by")
                if keyring is not None and not keyring.startswith("/"):
                    keyring = None  # an inline key block; debootstrap cannot take it
                return fields["uris"].split()[0], keyring.split()[0] if keyring else None
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for lst in lists:
        if not lst.is_file():
            continue
        for line in lst.read_text().splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1], None
    raise ProviderError(
        f"no apt source for Debian {suite} in {apt_dir}; set KFS_DEBIAN_MIRROR to a mirror URI"
    )


def _apt_proxy_env() -> dict[str, str]:
    """debootstrap downloads with wget, which ignores apt's proxy setting; pass it on."""
    env = dict(os.environ)
    if "http_proxy" in env or shutil.which("apt-config") is None:
        return env
    out = commands.run(["apt-config", "shell", "P", "Acquire::http::Proxy"], check=False)
    m = re.match(r"P='(.*)'", out.strip())
    if m and m.group(1) and m.group(1).upper() != "DIRECT":
        env["http_proxy"] = m.group(1)
    return env


# --------------------------------------------------------------------------- builds


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One builder per cache dir: two kfs runs must not debootstrap into the same path."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefix) or target == prefix[:-1]:
            found.append(target)
    return found


def _safe_rmtree(path: Path) -> None:
    """Remove a chroot, unmounting first.

    debootstrap mounts /proc and /sys (and in some containers bind-mounts the
    host's /dev) inside the target; it normally undoes that, but after a crash
    an rmtree would walk into the host's /dev. Refuse rather than risk it.
    """
    if not path.exists():
        return
    for target in sorted(_mounts_under(path), key=len, reverse=True):
        commands.run(["umount", "-l", target], check=False)
    left = _mounts_under(path)
    if left:
        raise ProviderError(f"refusing to delete {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path)


def prune(cache: Path, pattern: str, keep: set[Path]) -> None:
    # Old keys are never read again; without pruning each edit would leave
    # another few hundred MB behind.
    for old in cache.glob(pattern):
        if old not in keep:
            old.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _clean_rootfs(root: Path) -> None:
    """Make the debootstrap result small and free of build-host details."""
    commands.run(["chroot", str(root), "apt-get", "clean"], check=False)
    for rel in (
        "var/lib/apt/lists",
        "usr/share/man",
        "usr/share/info",
        "usr/share/lintian",
        "usr/share/locale",
        "tmp",
        "var/tmp",
    ):
        d = root / rel
        if d.is_dir():
            for child in d.iterdir():
                _remove(child)
    # Logs and the .deb cache lose their files but keep their directories:
    # packages own some of them (/var/log/redis belongs to the redis user).
    for rel in ("var/log", "var/cache/apt"):
        d = root / rel
        if d.is_dir():
            for f in d.rglob("*"):
                if not f.is_dir() or f.is_symlink():
                    f.unlink()
    # Docs go, but each package's copyright file stays: it is the licence notice.
    doc = root / "usr/share/doc"
    if doc.is_dir():
        for pkg in doc.iterdir():
            if pkg.is_dir() and not pkg.is_symlink():
                for child in pkg.iterdir():
                    if child.name != "copyright":
                        _remove(child)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    for leftover in [*root.glob("var/cache/debconf/*-old"), *root.glob("var/lib/dpkg/*-old")]:
        leftover.unlink()
    # debootstrap copies the host's resolv.conf and hostname; the runtime
    # mounts its own over these, so empty files are what an image should hold.
    for rel in ("etc/resolv.conf", "etc/hostname"):
        f = root / rel
        if f.is_symlink() or f.exists():
            f.unlink()
        f.write_text("")
        f.chmod(0o644)
    # The mirror debootstrap used is a detail of this build machine, and with
    # the lists removed apt could not use it anyway.
    (root / "etc/apt/sources.list").write_text(
        "# kfs toolbox: built offline from a debootstrap; add a source to use apt.\n"
    )
    # Keep later `apt-get install`s inside the image from bringing the docs back.
    (root / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/dpkg/dpkg.cfg.d/kfs-nodoc").write_text(
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\n"
    )


def build_base_layer(cache: Path, log: Log = print) -> Blob:
    """The cleaned debootstrap rootfs as layer tarball, built once per base_key()."""
    key = base_key()
    layer = cache / f"base-{key[:16]}.layer.tar"
    meta = cache / f"base-{key[:16]}.layer.json"
    if layer.is_file() and meta.is_file():
        recorded = json.loads(meta.read_text())
        log(f"toolbox base: cached ({layer.name})")
        return Blob(layer, str(recorded["digest"]), int(recorded["size"]))

    debootstrap = _require("debootstrap", "apt-get install debootstrap")
    _require("chroot", "apt-get install coreutils")
    if os.geteuid() != 0:
        raise ProviderError("building the toolbox base needs root (debootstrap); run as root")
    mirror, keyring = debian_mirror()
    work = cache / f"rootfs-{key[:16]}.tmp"
    _safe_rmtree(work)
    work.mkdir(parents=True)
    cmd = [
        debootstrap,
        "--variant=minbase",
        "--include=" + ",".join(sorted(TOOLBOX_PACKAGES)),
        "--components=main",
        f"--arch={_debian_arch()}",
    ]
    if keyring is not None and Path(keyring).is_file():
        cmd.append(f"--keyring={keyring}")
    cmd += [DEBIAN_SUITE, str(work), mirror]
    log_file = cache / "logs" / "debootstrap.log"
    log(
        f"toolbox base: debootstrap {DEBIAN_SUITE} with {len(TOOLBOX_PACKAGES)} packages "
        f"(about a minute; log: {log_file})"
    )
    started = time.time()
    try:
        # Anything touched from here on was made by this build, so gets FIXED_MTIME.
        built_since = started - 1
        commands.run(
            cmd,
            what="debootstrap",
            log_file=log_file,
            redact=mirror,
            env=_apt_proxy_env(),
            timeout=None,
        )
        log(f"toolbox base: debootstrap took {time.time() - started:.0f}s; cleaning and packing")
        _clean_rootfs(work)
        blob = write_layer(
            work, layer, built_since=built_since, skip_contents_of=("dev", "proc", "sys")
        )
    finally:
        _safe_rmtree(work)
    meta.write_text(json.dumps({"digest": blob.digest, "size": blob.size}))
    prune(cache, "base-*.layer.*", {layer, meta})
    log(f"toolbox base: {blob.size / 1e6:.0f} MB layer {blob.digest[:19]}")
    return blob


def _build_toolbox(cache: Path, images_dir: Path, log: Log) -> Path:
    workloads = images_dir / "workloads"
    key = toolbox_key(workloads)
    archive = cache / f"toolbox-{key[:16]}.tar"
    if archive.is_file():
        log(f"{TOOLBOX_IMAGE}: cached ({archive})")
        return archive
    base = build_base_layer(cache, log)
    wl_layer = cache / f"toolbox-{key[:16]}.workloads.tar"
    try:
        workload_blob = write_workloads_layer(workloads, wl_layer)
        layers = [base, workload_blob]
        config = image_config(
            layers,
            # Unbuffered so a workload's prints show up in `kubectl logs` at once.
            env=[PATH_ENV, "PYTHONUNBUFFERED=1"],
            # A toolbox pod with no command should stay up to be exec'd into.
            cmd=["sleep", "infinity"],
        )
        digest = write_image_archive(archive, TOOLBOX_IMAGE, layers, config)
    finally:
        wl_layer.unlink(missing_ok=True)
    prune(cache, "toolbox-*.tar", {archive})
    log(f"{TOOLBOX_IMAGE}: built {archive} ({archive.stat().st_size / 1e6:.0f} MB, {digest[:19]})")
    return archive


def _build_pause(cache: Path, images_dir: Path, log: Log) -> Path:
    source = images_dir / "pause" / "pause.c"
    key = pause_key(source)
    archive = cache / f"pause-{key[:16]}.tar"
    if archive.is_file():
        log(f"{PAUSE_IMAGE}: cached ({archive})")
        return archive
    gcc = _require("gcc", "apt-get install gcc libc6-dev")
    with tempfile.TemporaryDirectory(dir=cache, prefix="pause-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        binary = root / "pause"
        commands.run([gcc, *PAUSE_CFLAGS, "-o", str(binary), str(source)], what="gcc pause.c")
        binary.chmod(0o755)

        def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            return info

        layer = write_layer(root, Path(tmp) / "layer.tar", normalise=as_root)
        config = image_config(
            [layer],
            env=[PATH_ENV],
            entrypoint=["/pause"],
            # Same as the upstream pause image: the sandbox needs no privileges.
            user="65535:65535",
        )
        digest = write_image_archive(archive, PAUSE_IMAGE, [layer], config)
    prune(cache, "pause-*.tar", {archive})
    log(f"{PAUSE_IMAGE}: built {archive} ({archive.stat().st_size / 1e3:.0f} kB, {digest[:19]})")
    return archive


def build_images(
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    *,
    images_dir: Path | None = None,
) -> dict[str, Path]:
    """Build whatever is stale; return image ref -> archive path."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    src = images_dir if images_dir is not None else IMAGES_DIR
    with locked(cache):
        # Under the lock no other build is running, so any .part is a crash's leftover.
        for stale in cache.glob("*.part"):
            stale.unlink()
        return {
            TOOLBOX_IMAGE: _build_toolbox(cache, src, log),
            PAUSE_IMAGE: _build_pause(cache, src, log),
        }


# --------------------------------------------------------------------------- consumers


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


def docker_build_context(cache_dir: Path | None = None, *, images_dir: Path | None = None) -> Path:
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
        wl = src / "workloads"
        (ctx / "workloads").mkdir()
        for path in workload_files(wl):
            dest = ctx / "workloads" / path.relative_to(wl)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    return ctx


def load_into_docker(archives: dict[str, Path], log: Callable[[str], None] = print) -> None:
    """``docker load`` each archive (it reads the manifest.json they carry)."""
    docker = _require("docker", "install Docker (Debian: apt-get install docker.io)")
    for ref, archive in archives.items():
        commands.run(
            [docker, "load", "-i", str(archive)], what=f"docker load {archive.name}", timeout=None
        )
        log(f"{ref}: loaded into docker")
