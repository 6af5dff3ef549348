"""The operator image for in-cluster installs (kind), built offline like the toolbox.

``operator/Dockerfile`` says the same for people with Docker and a registry:
the toolbox's two layers (Debian bookworm with python3 3.11, the workloads),
plus one layer with the framework package and its pinned dependencies under
``/opt/kfs/operator/lib``, the kopf entry files and the scenarios. There is no
pip in the toolbox, so the dependencies are pip-installed here, by this
Python, which must be the toolbox's 3.11 for compiled wheels to load there.
The archive is cached under a key of every input.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from failure_stories import images
from failure_stories.core import paths
from failure_stories.core.errors import ProviderError
from failure_stories.host import commands

OPERATOR_IMAGE = "localhost/kfs/operator:v1"
REPO = paths.REPO
PREFIX = "opt/kfs"
# The toolbox's python3 and C library (Debian bookworm): pip picks compiled wheels
# for this host, so the host must not be newer than the image on either count.
IMAGE_PYTHON = (3, 11)
IMAGE_GLIBC = (2, 36)
ENTRYPOINT = ["python3", "-m", "kopf", "run", "--standalone"]
CMD = ["--all-namespaces", "/opt/kfs/operator/redisfailover.py", "/opt/kfs/operator/gameday.py"]

Log = Callable[[str], None]


def inputs(repo: Path = REPO) -> list[Path]:
    """Every file whose change must rebuild the image."""
    found = [repo / "pyproject.toml", repo / "requirements.lock", repo / "README.md"]
    found += sorted((repo / "operator").glob("*.py"))
    for tree in (repo / "src" / "failure_stories", repo / "scenarios"):
        found += [
            p
            for p in sorted(tree.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    return found


def key(repo: Path = REPO) -> str:
    h = hashlib.sha256(images.RECIPE_VERSION.encode())
    h.update(images.base_key().encode())
    h.update(images.toolbox_key(images.workload_sources(stories=paths.SCENARIOS)).encode())
    h.update(" ".join(ENTRYPOINT + CMD).encode())
    for path in inputs(repo):
        h.update(path.relative_to(repo).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _pip_install(repo: Path, stage: Path, target: Path, log_file: Path) -> None:
    """The package and its locked dependencies into ``target``, from a copy of the
    sources (setuptools would otherwise write build/ and egg-info into the checkout)."""
    src = stage / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(repo / name, src / name)
    shutil.copytree(
        repo / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-compile"]
    cmd += ["--target", str(target), "-c", str(repo / "requirements.lock"), str(src)]
    commands.run(cmd, what="pip install for the operator image", log_file=log_file, timeout=None)


def check_host(python: tuple[int, ...] | None = None, libc: tuple[str, str] | None = None) -> None:
    """Refuse a host whose wheels would not load in the toolbox (clear, one line)."""
    python = python or tuple(sys.version_info[:2])
    if python[:2] != IMAGE_PYTHON:
        want = ".".join(map(str, IMAGE_PYTHON))
        have = ".".join(map(str, python[:2]))
        raise ProviderError(
            f"the operator image needs Python {want} to build (the toolbox runs {want} and "
            f"its compiled dependencies must match); this is {have}: use operator/Dockerfile"
        )
    name, version = libc or platform.libc_ver()
    glibc = tuple(int(x) for x in version.split(".")[:2]) if name == "glibc" and version else ()
    if not glibc or glibc > IMAGE_GLIBC:
        want = ".".join(map(str, IMAGE_GLIBC))
        raise ProviderError(
            f"the operator image needs a host with glibc {want} or older to build (its "
            f"wheels must load on Debian bookworm); this host has {name} {version or '?'}: "
            "use operator/Dockerfile"
        )


def build(cache_dir: Path | None = None, log: Log = print, repo: Path = REPO) -> Path:
    """The operator image archive (docker load / ctr import / kind load image-archive)."""
    check_host()
    images.build_images(cache_dir, log)  # the toolbox, which this image extends
    cache = cache_dir if cache_dir is not None else images.default_cache_dir()
    archive = cache / f"operator-{key(repo)[:16]}.tar"
    with images.locked(cache):
        if archive.is_file():
            log(f"{OPERATOR_IMAGE}: cached ({archive})")
            return archive
        base = images.build_base_layer(cache, log)
        with tempfile.TemporaryDirectory(dir=cache, prefix="operator-") as tmp:
            stage = Path(tmp)
            workloads = images.write_workloads_layer(
                images.workload_sources(stories=paths.SCENARIOS), stage / "workloads.tar"
            )
            root = stage / "root"
            lib = root / "operator" / "lib"
            log(f"{OPERATOR_IMAGE}: pip install of the package and its locked dependencies")
            _pip_install(repo, stage, lib, cache / "logs" / "operator-pip.log")
            for entry in sorted((repo / "operator").glob("*.py")):
                shutil.copy2(entry, root / "operator" / entry.name)
            shutil.copytree(
                repo / "scenarios", root / "scenarios", ignore=shutil.ignore_patterns("__pycache__")
            )
            layer = images.write_layer(
                root, stage / "operator.tar", prefix=PREFIX, normalise=images.root_owned
            )
            layers = [base, workloads, layer]
            config = images.image_config(
                layers,
                env=[
                    images.PATH_ENV,
                    "PYTHONPATH=/opt/kfs/operator/lib",
                    "KFS_SCENARIOS_DIR=/opt/kfs/scenarios",
                    "PYTHONDONTWRITEBYTECODE=1",
                    "PYTHONUNBUFFERED=1",
                ],
                entrypoint=ENTRYPOINT,
                cmd=CMD,
                user="65534:65534",
            )
            digest = images.write_image_archive(archive, OPERATOR_IMAGE, layers, config)
        images.prune(cache, "operator-*.tar", {archive})
    log(f"{OPERATOR_IMAGE}: built {archive} ({archive.stat().st_size / 1e6:.0f} MB, {digest[:19]})")
    return archive
