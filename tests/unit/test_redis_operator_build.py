"""The real Redis operator's build: its pin, its cache layout, its image key."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.core.errors import KfsError
from failure_stories.images import redis_operator


def test_the_version_comes_from_the_wrapper_modules_go_mod() -> None:
    assert redis_operator.module_version() == "v1.3.0-rc1"
    assert redis_operator.image() == "localhost/kfs/redis-operator:v1.3.0-rc1"


def test_a_wrapper_without_the_operator_is_refused(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n\ngo 1.24\n")
    with pytest.raises(KfsError, match=r"does not require github\.com/spotahome/redis-operator"):
        redis_operator.module_version(tmp_path)


def test_binary_and_crd_are_cached_by_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFS_CACHE", str(tmp_path))
    assert redis_operator.binary_path("v1.2.4") == tmp_path / "redis-operator-v1.2.4/redisoperator"
    assert redis_operator.missing("v1.2.4")
    with pytest.raises(KfsError, match="make setup"):
        redis_operator.crd("v1.2.4")
    crd = redis_operator.crd_path("v1.2.4")
    crd.parent.mkdir(parents=True)
    crd.write_text("---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n")
    assert redis_operator.crd("v1.2.4")["kind"] == "CustomResourceDefinition"


def test_the_image_key_follows_the_binary(tmp_path: Path) -> None:
    binary = tmp_path / "redisoperator"
    binary.write_bytes(b"one")
    first = redis_operator.image_key(binary, "v1.3.0-rc1")
    assert first == redis_operator.image_key(binary, "v1.3.0-rc1")
    binary.write_bytes(b"two")
    assert redis_operator.image_key(binary, "v1.3.0-rc1") != first
