"""A wheel, not the checkout: `pip install` of the built wheel into a fresh venv
gives a `kfs` that finds its stories, manifests, workloads, kind configs, image
and build recipes and operator files inside the installed package.

Offline: the wheel is built without build isolation (setuptools comes from the
dev requirements), installed with --no-deps --no-index, and the fresh venv sees
this venv's dependencies through a .pth file (which adds a directory, and runs
none of that directory's own .pth files, so this checkout's editable install
stays out of it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.core import package_data

REPO = Path(__file__).resolve().parents[2]
BUILD_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


def _copy_sources(target: Path) -> None:
    """The checkout's sources only (a build writes beside them)."""
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.egg-info")

    def skip(folder: str, names: list[str]) -> set[str]:
        built = {"bin"} if Path(folder) == REPO / "build" / "k8s" else set()
        return set(caches(folder, names)) | (built & set(names))

    for name in (*BUILD_FILES, *package_data.DATA_FILES):
        shutil.copy2(REPO / name, target / name)
    for name in ("src", *package_data.DATA_FOLDERS):
        shutil.copytree(REPO / name, target / name, ignore=skip)


def _run(*argv: str | Path, cwd: Path, clean: bool = True) -> subprocess.CompletedProcess[str]:
    """``argv`` in ``cwd``; ``clean``: with none of this process's environment
    (KFS_SCENARIOS_DIR, a venv's PATH), as a new user's shell."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "80"} if clean else None
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


PIP = [sys.executable, "-m", "pip"]


def _wheel(source: Path, out: Path) -> Path:
    """A wheel built offline from a source tree or an sdist."""
    built = _run(
        *PIP,
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        out,
        source,
        cwd=out.parent,
        clean=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = out.glob("kube_failure_stories-*.whl")
    return wheel


def _data_files(wheel: Path) -> list[str]:
    return sorted(n for n in zipfile.ZipFile(wheel).namelist() if "/_data/" in n)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("wheel") / "src-copy"
    src.mkdir()
    _copy_sources(src)
    return src


@pytest.fixture(scope="module")
def venv(sources: Path) -> Path:
    root = sources.parent
    wheel = _wheel(sources, root / "dist")
    venv = root / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=root).returncode == 0
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=root)
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(purelib.stdout.strip(), "kfs-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    installed = _run(
        *PIP,
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=root,
        clean=False,
    )
    assert installed.returncode == 0, installed.stderr
    return venv


def test_the_installed_package_carries_its_data(venv: Path) -> None:
    probe = (
        "import json, os\n"
        "from failure_stories.core import paths\n"
        "from importlib import resources\n"
        "schema = resources.files('failure_stories.reporting') / 'report.schema.json'\n"
        "print(json.dumps({'data': str(paths.DATA), 'checkout': str(paths.CHECKOUT),\n"
        "  'build_sh_exec': os.access(paths.BUILD / 'k8s' / 'build.sh', os.X_OK),\n"
        "  'schema': schema.is_file()}))\n"
    )
    done = _run(venv / "bin" / "python", "-c", probe, cwd=venv)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    data = Path(found["data"])
    assert data.is_relative_to(venv), found  # the wheel's copy, not this checkout
    assert found["checkout"] == "None"
    assert found["build_sh_exec"] is True and found["schema"] is True
    for name in package_data.DATA_FOLDERS:
        assert (data / name).is_dir(), name
    for story in scenarios.discover(REPO / "scenarios").values():
        assert (data / "scenarios" / story.id / "manifests").is_dir(), story.id
        assert (data / "kind-configs" / f"{story.meta.kind_config}.yaml").is_file(), story.id
    assert (data / "images" / "workloads").is_dir()
    assert (data / "operator" / "crds").is_dir()
    assert (data / "build" / "k8s" / "go.sum").is_file()
    (wheel,) = (venv.parent / "dist").glob("*.whl")
    packed = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in packed if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in packed if "/build/k8s/bin/" in n or "/bdist." in n]


def test_installed_kfs_lists_describes_and_dry_runs(venv: Path) -> None:
    kfs = venv / "bin" / "kfs"
    listed = _run(kfs, "list", "-o", "json", cwd=venv)
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(
        scenarios.discover(REPO / "scenarios")
    )

    described = _run(kfs, "describe", "buffer-cpu-throttling", cwd=venv)
    assert described.returncode == 0, described.stderr
    assert "Buffer, 2020" in described.stdout
    assert "throttled_period_ratio" in described.stdout

    planned = _run(kfs, "run", "moonlight-anti-affinity", "--dry-run", cwd=venv)
    assert planned.returncode == 0, planned.stderr
    assert "dry run: nothing is changed" in planned.stdout
    # The manifests were read from the package: their objects are listed.
    assert "Deployment" in planned.stdout


def test_a_wheel_built_from_the_sdist_carries_the_same_data(sources: Path, venv: Path) -> None:
    """setuptools prunes its build folder from an sdist: it must not be build/."""
    root = sources.parent / "from-sdist"
    root.mkdir()
    sdist = _run(
        sys.executable,
        "-c",
        f"from setuptools import build_meta; build_meta.build_sdist({str(root)!r})",
        cwd=sources,
        clean=False,
    )
    assert sdist.returncode == 0, sdist.stderr
    (tarball,) = root.glob("kube_failure_stories-*.tar.gz")
    (from_tree,) = (venv.parent / "dist").glob("*.whl")
    data = _data_files(_wheel(tarball, root / "dist"))
    assert data == _data_files(from_tree)
    assert "failure_stories/_data/build/k8s/go.sum" in data
