"""The offline operator image: what it is keyed on, and the wheels it asks pip for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from failure_stories.operator import image as operator_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sources(tmp_path: Path) -> operator_image.Sources:
    """A small copy of the inputs the key reads."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy2(REPO / "requirements.lock", root / "requirements.lock")
    shutil.copytree(REPO / "operator", root / "operator")
    package = root / "failure_stories"
    (package / "core").mkdir(parents=True)
    (package / "core" / "wait.py").write_text("x = 1\n")
    (root / "scenarios" / "s").mkdir(parents=True)
    (root / "scenarios" / "s" / "scenario.yaml").write_text("id: s\n")
    return operator_image.Sources(
        package, root / "operator", root / "scenarios", root / "requirements.lock"
    )


def test_key_follows_every_input_and_ignores_bytecode(sources: operator_image.Sources) -> None:
    first = operator_image.key(sources)
    cache = sources.package / "core" / "__pycache__"
    cache.mkdir()
    (cache / "wait.cpython-311.pyc").write_bytes(b"\0")
    # A wheel's copy of the stories beside the package is not the package's code.
    (sources.package / "_data").mkdir()
    (sources.package / "_data" / "x.yaml").write_text("x: 1\n")
    assert operator_image.key(sources) == first
    for path in (
        sources.operator / "gameday.py",
        sources.package / "core" / "wait.py",
        sources.scenarios / "s" / "scenario.yaml",
        sources.lock,
    ):
        before = path.read_bytes()
        path.write_bytes(before + b"\n# changed\n")
        assert operator_image.key(sources) != first, path
        path.write_bytes(before)
    assert operator_image.key(sources) == first


def test_pip_is_asked_for_the_images_python_and_glibc_not_this_hosts() -> None:
    flags = operator_image.pip_target_flags("x86_64")
    assert flags[:3] == ["--only-binary=:all:", "--implementation", "cp"]
    assert flags[3:5] == ["--python-version", "3.11"]
    platforms = [flags[i + 1] for i, f in enumerate(flags) if f == "--platform"]
    # Bookworm's glibc 2.36 down to manylinux2014 (2.17), nothing newer.
    assert platforms[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in platforms and "manylinux2014_x86_64" in platforms
    assert not [p for p in platforms if p.startswith("manylinux_2_37")]
    assert len(platforms) == 36 - 17 + 1 + 1
    assert operator_image.pip_target_flags("aarch64")[-1] == "manylinux2014_aarch64"


def test_the_image_gets_the_packages_runtime_dependencies_only() -> None:
    wanted = operator_image.requirements()
    names = {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in wanted}
    assert {"kopf", "kubernetes", "psutil", "pydantic"} <= names
    assert not names & {"mypy", "pytest", "ruff", "setuptools"}  # the dev extra stays out
