"""The kind provider's own decisions, without a cluster (tests/e2e/test_kind_stories.py
runs the real kind): which config a story gets, the pod range it reads from it,
and that every story shares the one suite cluster."""

from __future__ import annotations

import pytest
import yaml

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import DefinitionError
from failure_stories.providers import capabilities
from failure_stories.providers.kind import CONFIG_DIR, KindProvider
from failure_stories.providers.local import layout


def test_every_scenario_runs_on_the_one_suite_cluster():
    configs = {s.meta.kind_config for s in scenarios.discover().values()}
    assert configs == {"default"}
    assert KindProvider(config="default").config_file() == CONFIG_DIR / "default.yaml"
    with pytest.raises(DefinitionError, match=r"no kind config nope\.yaml .*have: default"):
        KindProvider(config="nope").config_file()


def test_the_suite_cluster_fits_every_story():
    config = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    # Moonlight's three machines to fail, apart from the worker the others use.
    needed = max(s.meta.min_nodes for s in scenarios.discover().values())
    assert needed == 3 and len(workers) == needed + 1
    (plane,) = [n for n in config["nodes"] if n["role"] == "control-plane"]
    patch = yaml.safe_load(plane["kubeadmConfigPatches"][0])
    # Moonlight's node failure must be seen in seconds, as on the embedded cluster,
    # by kubelets that heartbeat well within that grace (every second).
    assert patch["controllerManager"]["extraArgs"]["node-monitor-grace-period"] == "8s"
    (kubelet,) = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    assert kubelet["kind"] == "KubeletConfiguration"
    assert kubelet["nodeLeaseDurationSeconds"] / 4 < 8
    assert kubelet["nodeStatusUpdateFrequency"] == "2s"


def test_images_go_only_into_nodes_that_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A node another run paused (Moonlight's failure) refuses `docker exec`: an
    image load from a run starting meanwhile must leave it out, not fail."""
    from failure_stories.providers import kind as kind_module

    monkeypatch.setattr(kind_module.docker_engine, "docker", lambda: "docker")
    monkeypatch.setattr(
        kind_module.commands,
        "run",
        lambda argv, **kw: (
            "kfs-default-worker2 paused\nkfs-default-control-plane running\n"
            "kfs-default-worker running\n"
        ),
    )
    seen: list[list[str]] = []
    monkeypatch.setattr(kind_module, "import_into_nodes", lambda a, nodes, d: seen.append(nodes))
    provider = KindProvider()
    assert provider.node_states() == {
        "kfs-default-control-plane": "running",
        "kfs-default-worker": "running",
        "kfs-default-worker2": "paused",
    }
    provider.load_images({})
    assert seen == [["kfs-default-control-plane", "kfs-default-worker"]]


def test_pod_and_service_ranges_stay_clear_of_the_embedded_cluster():
    provider = KindProvider()
    assert provider.pod_cidr == "10.246.0.0/16"
    assert provider.pod_cidr != layout.CLUSTER_CIDR
    assert provider.manifest_variables()["POD_CIDR"] == "10.246.0.0/16"
    networking = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())["networking"]
    assert networking["serviceSubnet"] != layout.SERVICE_CIDR


def test_kind_has_every_ability_the_stories_need():
    provider = KindProvider()
    for story in scenarios.discover().values():
        assert capabilities.lacking(provider, story.meta.needs) == [], story.id
    # The checkout's operator process is the local provider's alone.
    assert not capabilities.has(provider, "operator-host")
    assert provider.shared_cluster and provider.owns_cluster
