"""The real spotahome redis-operator: built from its Go module, its CRD, its image.

``build/redis-operator`` is a wrapper module whose go.mod/go.sum pin the
operator (no source is vendored or committed). One ``go build`` there gives a
static binary, cached under ``$KFS_CACHE/redis-operator-<version>/`` with the
CRD, which is copied from the module's own ``manifests/`` (in Go's module
cache) at build time, so nothing fetched is committed to this repository.
The image is one layer holding that binary, written offline like the pause
image; its archive is cached under a key of the binary and the image config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from failure_stories.core import paths
from failure_stories.core.errors import MissingToolError, ProviderError
from failure_stories.host import commands
from failure_stories.images.build import PATH_ENV
from failure_stories.images.cache import RECIPE_VERSION, default_cache_dir, locked, prune
from failure_stories.images.oci import image_config, root_owned, write_image_archive, write_layer

MODULE = "github.com/spotahome/redis-operator"
COMMAND = f"{MODULE}/cmd/redisoperator"
WRAPPER = paths.BUILD / "redis-operator"
CRD_FILE = "databases.spotahome.com_redisfailovers.yaml"
CRD_NAME = "redisfailovers.databases.spotahome.com"
GROUP = "databases.spotahome.com"
VERSION = "v1"
PLURAL = "redisfailovers"
IMAGE_REF = "localhost/kfs/redis-operator"
# The upstream Deployment runs it as uid 1000 with a read-only root.
USER = "1000:1000"

Log = Callable[[str], None]


def module_version(wrapper: Path = WRAPPER) -> str:
    """The operator version go.mod pins (read from the file: no `go` needed)."""
    for line in (wrapper / "go.mod").read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[-2] == MODULE:
            return words[-1]
        if len(words) >= 3 and words[0] == "require" and words[1] == MODULE:
            return words[2]
    raise ProviderError(f"{wrapper / 'go.mod'} does not require {MODULE}")


def cache_dir(version: str | None = None) -> Path:
    root = Path(os.environ.get("KFS_CACHE", "~/.cache/kfs")).expanduser()
    return root / f"redis-operator-{version or module_version()}"


def binary_path(version: str | None = None) -> Path:
    return cache_dir(version) / "redisoperator"


def crd_path(version: str | None = None) -> Path:
    return cache_dir(version) / CRD_FILE


def image(version: str | None = None) -> str:
    return f"{IMAGE_REF}:{version or module_version()}"


def missing(version: str | None = None) -> bool:
    return not (os.access(binary_path(version), os.X_OK) and crd_path(version).is_file())


def ensure(log: Log = print, wrapper: Path = WRAPPER) -> Path:
    """Build the binary and copy the CRD into the cache if they are missing (slow
    once: a few minutes on two cores); return the binary's path."""
    version = module_version(wrapper)
    out = cache_dir(version)
    if not missing(version):
        return binary_path(version)
    go = shutil.which("go")
    if go is None:
        raise MissingToolError(
            "go", "install Go 1.24 or newer (the Redis operator builds from source)"
        )
    out.mkdir(parents=True, exist_ok=True)
    logs = out.parent / "logs"
    logs.mkdir(exist_ok=True)
    log_file = logs / "build-redis-operator.log"
    log(f"redis-operator {version}: go build {COMMAND} (minutes, once; log {log_file})")
    started = time.monotonic()
    tmp = out / f"redisoperator.tmp.{os.getpid()}"
    try:
        commands.run(
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp), COMMAND],
            what=f"go build {COMMAND}@{version}",
            cwd=wrapper,
            env={**os.environ, "CGO_ENABLED": "0"},
            log_file=log_file,
            timeout=None,
        )
        tmp.replace(binary_path(version))
    finally:
        tmp.unlink(missing_ok=True)
    module_dir = commands.run(
        [go, "list", "-m", "-f", "{{.Dir}}", MODULE], what="go list -m", cwd=wrapper
    ).strip()
    source = Path(module_dir) / "manifests" / CRD_FILE
    if not source.is_file():
        raise ProviderError(f"{MODULE}@{version} has no manifests/{CRD_FILE} ({source})")
    shutil.copyfile(source, crd_path(version))
    log(f"redis-operator {version}: built in {time.monotonic() - started:.0f}s")
    return binary_path(version)


def crd(version: str | None = None) -> dict[str, Any]:
    """The RedisFailover CRD of the pinned version (built by :func:`ensure`)."""
    path = crd_path(version)
    if not path.is_file():
        raise MissingToolError(
            "the redis-operator CRD", "run `make setup` (python -m failure_stories.tools.prepare)"
        )
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return next(d for d in docs if d.get("kind") == "CustomResourceDefinition")


def image_key(binary: Path, version: str) -> str:
    h = hashlib.sha256(f"{RECIPE_VERSION}\0{version}\0{USER}\0".encode())
    with binary.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_image(cache: Path | None = None, log: Log = print) -> dict[str, Path]:
    """The operator image archive (ref -> path), built from the cached binary."""
    binary = ensure(log)
    version = module_version()
    cache = cache if cache is not None else default_cache_dir()
    ref = image(version)
    archive = cache / f"redis-operator-{image_key(binary, version)[:16]}.tar"
    with locked(cache):
        if archive.is_file():
            return {ref: archive}
        with tempfile.TemporaryDirectory(dir=cache, prefix="redis-operator-") as tmp:
            root = Path(tmp) / "root"
            root.mkdir()
            shutil.copy2(binary, root / "redisoperator")
            (root / "redisoperator").chmod(0o755)
            layer = write_layer(root, Path(tmp) / "layer.tar", normalise=root_owned)
            config = image_config([layer], env=[PATH_ENV], entrypoint=["/redisoperator"], user=USER)
            digest = write_image_archive(archive, ref, [layer], config)
        prune(cache, "redis-operator-*.tar", {archive})
    log(f"{ref}: built {archive} ({archive.stat().st_size / 1e6:.0f} MB, {digest[:19]})")
    return {ref: archive}


def describe() -> str:
    """One line for logs and reports: which operator, from where."""
    return json.dumps({"module": MODULE, "version": module_version()})
