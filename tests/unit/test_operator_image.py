"""The offline operator image: what it is keyed on, and who may build it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from failure_stories.core.errors import ProviderError
from failure_stories.operator import image as operator_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small copy of the inputs the key reads."""
    root = tmp_path / "repo"
    for name in ("pyproject.toml", "requirements.lock", "README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(REPO / "operator", root / "operator")
    (root / "src" / "failure_stories").mkdir(parents=True)
    (root / "src" / "failure_stories" / "wait.py").write_text("x = 1\n")
    (root / "scenarios" / "s").mkdir(parents=True)
    (root / "scenarios" / "s" / "scenario.yaml").write_text("id: s\n")
    return root


def test_key_follows_every_input_and_ignores_bytecode(repo: Path) -> None:
    first = operator_image.key(repo)
    cache = repo / "src" / "failure_stories" / "__pycache__"
    cache.mkdir()
    (cache / "wait.cpython-311.pyc").write_bytes(b"\0")
    assert operator_image.key(repo) == first
    for changed in (
        "operator/gameday.py",
        "src/failure_stories/wait.py",
        "scenarios/s/scenario.yaml",
        "requirements.lock",
    ):
        path = repo / changed
        before = path.read_bytes()
        path.write_bytes(before + b"\n# changed\n")
        assert operator_image.key(repo) != first, changed
        path.write_bytes(before)
    assert operator_image.key(repo) == first


def test_only_a_host_like_the_toolbox_builds_it() -> None:
    operator_image.check_host((3, 11), ("glibc", "2.36"))
    operator_image.check_host((3, 11), ("glibc", "2.31"))
    with pytest.raises(ProviderError, match=r"needs Python 3\.11.*this is 3\.12"):
        operator_image.check_host((3, 12), ("glibc", "2.36"))
    with pytest.raises(ProviderError, match=r"glibc 2\.36 or older.*glibc 2\.39"):
        operator_image.check_host((3, 11), ("glibc", "2.39"))
    with pytest.raises(ProviderError, match="musl"):
        operator_image.check_host((3, 11), ("musl", ""))
