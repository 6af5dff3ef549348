"""The operator image for in-cluster installs (kind), built offline like the toolbox.

``operator/Dockerfile`` says the same for people with Docker and a registry:
the toolbox's two layers (Debian bookworm with python3 3.11, the workloads),
plus one layer with the framework package and its pinned dependencies under
``/opt/kfs/operator/lib``, the kopf entry files and the scenarios. There is no
pip in the toolbox, so the dependencies are pip-installed here, asking pip for
the wheels of the image's Python and C library (``--python-version``,
``--platform``, ``--only-binary``) rather than this host's: any host Python
builds it. The package itself is pure Python and is copied as installed (from a
checkout or a wheel). The archive is cached under a key of every input.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from failure_stories import images
from failure_stories.core import paths
from failure_stories.core.package_data import DATA_PACKAGE_DIR
from failure_stories.host import commands

OPERATOR_IMAGE = "localhost/kfs/operator:v1"
DISTRIBUTION = "kube-failure-stories"
PREFIX = "opt/kfs"
# The toolbox's python3 and C library (Debian bookworm): pip is asked for wheels
# that load there, whatever runs this code.
IMAGE_PYTHON = (3, 11)
IMAGE_GLIBC = (2, 36)
OLDEST_MANYLINUX = 17  # manylinux_2_17 (manylinux2014) is the oldest tag pip knows by this name
ENTRYPOINT = ["python3", "-m", "kopf", "run", "--standalone"]
CMD = ["--all-namespaces", "/opt/kfs/operator/redisfailover.py", "/opt/kfs/operator/gameday.py"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Sources:
    """What goes into the image: the package as installed, its entry files, the
    stories and the pinned versions of its dependencies."""

    package: Path
    operator: Path
    scenarios: Path
    lock: Path

    @classmethod
    def installed(cls) -> Sources:
        return cls(
            Path(images.__file__).resolve().parents[1], paths.OPERATOR, paths.SCENARIOS, paths.LOCK
        )

    def package_files(self) -> list[Path]:
        return _tree(self.package, skip=(DATA_PACKAGE_DIR,))

    def inputs(self) -> list[tuple[str, Path]]:
        """Every file whose change must rebuild the image, by a stable name."""
        found = [("requirements.lock", self.lock)]
        found += [
            (f"package/{p.relative_to(self.package).as_posix()}", p) for p in self.package_files()
        ]
        found += [(f"operator/{p.name}", p) for p in sorted(self.operator.glob("*.py"))]
        found += [
            (f"scenarios/{p.relative_to(self.scenarios).as_posix()}", p)
            for p in _tree(self.scenarios)
        ]
        return found


def _tree(root: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.suffix != ".pyc"
        and p.relative_to(root).parts[0] not in skip
    ]


def key(sources: Sources | None = None) -> str:
    sources = sources or Sources.installed()
    h = hashlib.sha256(images.RECIPE_VERSION.encode())
    h.update(images.base_key().encode())
    h.update(images.toolbox_key(images.workload_sources(stories=sources.scenarios)).encode())
    h.update(" ".join(ENTRYPOINT + CMD + pip_target_flags()).encode())
    h.update(" ".join(requirements()).encode())
    for name, path in sources.inputs():
        h.update(name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def requirements() -> list[str]:
    """The package's own dependencies (no extras), as its metadata declares them."""
    declared = importlib.metadata.requires(DISTRIBUTION) or []
    return sorted(r for r in declared if "extra ==" not in r)


def pip_target_flags(machine: str | None = None) -> list[str]:
    """pip's flags for wheels that load in the image: its CPython and every
    manylinux tag its glibc accepts, binary wheels only (nothing is compiled here)."""
    arch = machine or platform.machine()
    major, minor = IMAGE_GLIBC
    flags = ["--only-binary=:all:", "--implementation", "cp"]
    flags += ["--python-version", ".".join(map(str, IMAGE_PYTHON))]
    for glibc_minor in range(minor, OLDEST_MANYLINUX - 1, -1):
        flags += ["--platform", f"manylinux_{major}_{glibc_minor}_{arch}"]
    return [*flags, "--platform", f"manylinux2014_{arch}"]


def _install_package(sources: Sources, target: Path) -> None:
    """The pure-Python package as installed, with its metadata, so that the image
    knows its version (importlib.metadata) as the host does."""
    for path in sources.package_files():
        dest = target / "failure_stories" / path.relative_to(sources.package)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    dist = importlib.metadata.distribution(DISTRIBUTION)
    name = re.sub(r"[-_.]+", "_", DISTRIBUTION)
    info = target / f"{name}-{dist.version}.dist-info"
    info.mkdir()
    for file in ("METADATA", "entry_points.txt"):
        text = dist.read_text(file)
        if text is not None:
            (info / file).write_text(text)


def _pip_install(sources: Sources, target: Path, log_file: Path) -> None:
    """The package's locked dependencies for the image's Python into ``target``."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-compile"]
    cmd += ["--target", str(target), *pip_target_flags(), "-c", str(sources.lock), *requirements()]
    commands.run(cmd, what="pip install for the operator image", log_file=log_file, timeout=None)


def build(cache_dir: Path | None = None, log: Log = print, sources: Sources | None = None) -> Path:
    """The operator image archive (docker load / ctr import / kind load image-archive)."""
    sources = sources or Sources.installed()
    images.build_images(cache_dir, log)  # the toolbox, which this image extends
    cache = cache_dir if cache_dir is not None else images.default_cache_dir()
    archive = cache / f"operator-{key(sources)[:16]}.tar"
    with images.locked(cache):
        if archive.is_file():
            log(f"{OPERATOR_IMAGE}: cached ({archive})")
            return archive
        base = images.build_base_layer(cache, log)
        with tempfile.TemporaryDirectory(dir=cache, prefix="operator-") as tmp:
            stage = Path(tmp)
            workloads = images.write_workloads_layer(
                images.workload_sources(stories=sources.scenarios), stage / "workloads.tar"
            )
            root = stage / "root"
            lib = root / "operator" / "lib"
            log(f"{OPERATOR_IMAGE}: pip install of the package and its locked dependencies")
            _pip_install(sources, lib, cache / "logs" / "operator-pip.log")
            _install_package(sources, lib)
            for entry in sorted(sources.operator.glob("*.py")):
                shutil.copy2(entry, root / "operator" / entry.name)
            shutil.copytree(
                sources.scenarios,
                root / "scenarios",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
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
