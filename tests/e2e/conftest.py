"""End-to-end fixtures: the session's real cluster (local provider by default)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from failure_stories.providers.base import Provider
from failure_stories.providers.kube import Kube


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def kube(kfs_provider: Provider) -> Kube:
    return kfs_provider.kube()


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = kube.create_namespace("e2e")
    yield name
    kube.delete_namespace(name)


@pytest.fixture(scope="session")
def kubectl(kube: Kube) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The real kubectl (built with the cluster) against the real API server."""
    from failure_stories.providers.local import binaries

    def call(*args: str, check: bool = True, timeout: float = 60) -> Any:
        done = subprocess.run(
            [str(binaries.path("kubectl")), f"--kubeconfig={kube.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done

    return call
