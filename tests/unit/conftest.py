"""Fixtures for unit tests of the framework's semantics (no cluster needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from failure_stories.host.locks import FileLocks, LockBackend
from failure_stories.providers.base import ClusterStatus, Provider


class RecordingKube:
    """Stands in for the cluster connection so the runner's rules can be tested
    in milliseconds; everything real is covered by the e2e tests."""

    def __init__(self) -> None:
        self.namespaces: list[str] = []
        self.deleted: list[str] = []
        self.dumped: list[str] = []

    def create_namespace(
        self, scenario_id: str, labels: dict[str, str] | None = None, name: str | None = None
    ) -> str:
        name = name or f"kfs-{scenario_id}-test{len(self.namespaces)}"
        self.namespaces.append(name)
        return name

    def delete_namespace(self, name: str, timeout: float = 120) -> None:
        self.deleted.append(name)

    def dump_namespace(self, namespace: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        (target / "events.txt").write_text("dumped\n")
        self.dumped.append(namespace)


class StubProvider(Provider):
    name = "stub"

    def __init__(self) -> None:
        self.kube_ = RecordingKube()

    def up(self) -> None: ...

    def down(self) -> None: ...

    def status(self) -> ClusterStatus:
        return ClusterStatus("stub", True, None)

    def kube(self) -> Any:
        return self.kube_

    def locks(self) -> LockBackend:
        return FileLocks()  # in KFS_LOCK_DIR: no cluster to keep Leases on

    def manifest_variables(self) -> dict[str, str]:
        return {"TOOLBOX_IMAGE": "toolbox:test", "OTELCOL_IMAGE": "otelcol:test"}


SCENARIO_YAML = """\
id: {id}
title: A test story
company: ExampleCo
year: 2020
source: https://example.invalid/story
kind_config: default
story: A story.
fault: A fault.
symptom: A symptom.
mitigation: A mitigation.
measured:
  errors: how many requests failed
checks:
  steady-state:
    errors: "== 0"
  symptom:
    errors: ">= 5"
  verify:
    errors: "<= 1"
"""


@pytest.fixture
def make_scenario(tmp_path: Path) -> Any:
    """Write a scenario folder whose steps come from the test."""

    def make(steps: str, scenario_id: str = "test-story", yaml_text: str | None = None) -> Path:
        folder = tmp_path / "scenarios" / scenario_id
        (folder / "manifests").mkdir(parents=True)
        (folder / "scenario.yaml").write_text(
            yaml_text if yaml_text is not None else SCENARIO_YAML.format(id=scenario_id)
        )
        (folder / "steps.py").write_text(textwrap.dedent(steps))
        (folder / "README.md").write_text("# test\n")
        return folder

    return make


@pytest.fixture
def provider() -> StubProvider:
    return StubProvider()
