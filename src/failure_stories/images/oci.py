"""OCI image archives written with tarfile, hashlib and json: layers with fixed
mtimes and root ownership, the config, the index and Docker's manifest.json, in the
layout `docker save` has produced since Docker 25 (see the package docstring)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failure_stories.core.errors import ProviderError

# Files made during the build get this mtime (2024-01-01T00:00:00Z) so that
# the same inputs give the same layer digest whenever they are built.
FIXED_MTIME = 1704067200


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


def _sha256_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


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


def _debian_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def _go_arch() -> str:
    # OCI platforms use Go's names; they match Debian's for amd64 and arm64,
    # the only two this suite runs on.
    return _debian_arch()
