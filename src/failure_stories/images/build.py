"""The two images: keys from their inputs, the toolbox (base layer plus the
workloads layer) and the pause image, each built once per key."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from failure_stories.core import paths, timing
from failure_stories.core.errors import DefinitionError
from failure_stories.host import commands
from failure_stories.images.cache import RECIPE_VERSION, default_cache_dir, locked, prune
from failure_stories.images.oci import (
    Blob,
    Log,
    image_config,
    root_owned,
    write_image_archive,
    write_layer,
)
from failure_stories.images.rootfs import _require, base_key, build_base_layer

TOOLBOX_IMAGE = "localhost/kfs/toolbox:v1"


PAUSE_IMAGE = "localhost/kfs/pause:v1"


WORKLOADS_PATH = "opt/kfs/workloads"


PAUSE_CFLAGS: tuple[str, ...] = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")


IMAGES_DIR = paths.IMAGES


PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


Workloads = Path | Mapping[str, Path]


def workload_sources(images_dir: Path = IMAGES_DIR, stories: Path | None = None) -> dict[str, Path]:
    """Every file for /opt/kfs/workloads, by its path there: the shared ones in
    ``images/workloads/`` and each story's own in ``scenarios/<id>/workloads/``
    (one story, one folder). Two files for one path are refused."""
    found = _in_dir(images_dir / "workloads")
    for folder in sorted(stories.glob("*/workloads")) if stories is not None else []:
        for rel, path in _in_dir(folder).items():
            if rel in found:
                raise DefinitionError(
                    f"workload {rel} is in both {found[rel].parent} and {folder}: rename one"
                )
            found[rel] = path
    return found


def _in_dir(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in workload_files(folder)}


def _sources(workloads: Workloads) -> dict[str, Path]:
    return _in_dir(workloads) if isinstance(workloads, Path) else dict(workloads)


def toolbox_key(workloads: Workloads) -> str:
    h = hashlib.sha256()
    h.update(base_key().encode())
    for rel, path in sorted(_sources(workloads).items()):
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


def write_workloads_layer(workloads: Workloads, out: Path) -> Blob:
    """Layer 2 of the toolbox: exactly the files ``workload_files`` lists."""
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="workloads-") as tmp:
        staging = Path(tmp)
        for rel, path in sorted(_sources(workloads).items()):
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        return write_layer(staging, out, prefix=WORKLOADS_PATH, normalise=root_owned)


def stories_for(images_dir: Path | None, scenarios_dir: Path | None) -> Path | None:
    """Whose workloads go in: the given folder's, else the checkout's stories when
    the checkout's images are built (a test's own images_dir gets none)."""
    if scenarios_dir is not None:
        return scenarios_dir
    return paths.SCENARIOS if images_dir is None else None


def _build_toolbox(cache: Path, images_dir: Path, stories: Path | None, log: Log) -> Path:
    workloads = workload_sources(images_dir, stories)
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


@timing.timed(timing.IMAGES)
def build_images(
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    *,
    images_dir: Path | None = None,
    scenarios_dir: Path | None = None,
) -> dict[str, Path]:
    """Build whatever is stale; return image ref -> archive path."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    src = images_dir if images_dir is not None else IMAGES_DIR
    stories = stories_for(images_dir, scenarios_dir)
    with locked(cache):
        # Under the lock no other build is running, so any .part is a crash's leftover.
        for stale in cache.glob("*.part"):
            stale.unlink()
        return {
            TOOLBOX_IMAGE: _build_toolbox(cache, src, stories, log),
            PAUSE_IMAGE: _build_pause(cache, src, log),
        }
