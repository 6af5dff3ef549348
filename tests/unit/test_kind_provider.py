"""The kind provider drives `kind` and `docker` as documented. There is no kind
node image on this machine (no registry), so these tests put recording fakes of
both tools on PATH and check the commands, the per-scenario config and the
cleanup; the real thing runs wherever Docker and kind are available."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from failure_stories import images
from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import DefinitionError
from failure_stories.providers.kind import KindProvider

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> {log}
case "$1 $2" in
  "get clusters") cat {state} 2>/dev/null || true ;;
  "create cluster") echo "$4" >> {state}; printf 'apiVersion: v1\\nkind: Config\\n' > "$8" ;;
  "delete cluster") grep -v "^$4$" {state} > {state}.new; mv {state}.new {state} ;;
esac
"""


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("kind", "docker"):
        script = bin_dir / tool
        script.write_text(FAKE.format(log=log, state=tmp_path / "clusters"))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KFS_STATE_KIND", str(tmp_path / "state"))
    # Labelling nodes and the returned client need a live API server; not here.
    monkeypatch.setattr(KindProvider, "_label_nodes", lambda self: None)
    monkeypatch.setattr(KindProvider, "kube", lambda self: None)
    archive = tmp_path / "toolbox.tar"
    archive.write_text("x")
    monkeypatch.setattr(images, "build_images", lambda: {images.TOOLBOX_IMAGE: archive})
    return log


def test_a_scenario_gets_a_cluster_from_its_own_config(fake_tools: Path):
    provider = KindProvider()
    provider.prepare(scenarios.get("moonlight-anti-affinity"))
    calls = fake_tools.read_text().splitlines()
    create = next(c for c in calls if c.startswith("kind create cluster"))
    assert "--name kfs-moonlight-anti-affinity" in create
    assert (
        create.split("--config ")[1]
        .split()[0]
        .endswith("kind-configs/moonlight-anti-affinity.yaml")
    )
    assert any(c.startswith("docker load -i") for c in calls)
    assert (
        f"kind load docker-image {images.TOOLBOX_IMAGE} --name kfs-moonlight-anti-affinity" in calls
    )
    # A second prepare reuses the cluster instead of creating another.
    provider.prepare(scenarios.get("moonlight-anti-affinity"))
    assert sum(c.startswith("kind create") for c in fake_tools.read_text().splitlines()) == 1


def test_down_deletes_only_kfs_clusters(fake_tools: Path):
    provider = KindProvider()
    provider.prepare(scenarios.get("buffer-cpu-throttling"))
    provider.down()
    calls = fake_tools.read_text().splitlines()
    assert "kind delete cluster --name kfs-buffer-cpu-throttling" in calls
    assert provider.clusters() == []


def test_node_failure_pauses_the_node_container(fake_tools: Path):
    provider = KindProvider()
    provider.stop_node("kfs-x-worker2")
    provider.start_node("kfs-x-worker2")
    calls = fake_tools.read_text().splitlines()
    assert calls[-2:] == ["docker pause kfs-x-worker2", "docker unpause kfs-x-worker2"]


def test_every_scenario_has_a_kind_config():
    for s in scenarios.discover().values():
        KindProvider(config=s.meta.kind_config).config_file()
    with pytest.raises(DefinitionError, match=r"no kind config nope\.yaml"):
        KindProvider(config="nope").config_file()
