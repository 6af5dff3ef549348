"""Provider abilities are types a provider implements or lacks; a story that needs
one its provider lacks is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.core.errors import ProviderError, ScenarioDefinitionError
from failure_stories.providers.capabilities import CAPABILITIES, lacking
from failure_stories.providers.existing import ExistingProvider
from failure_stories.providers.kind import KindProvider
from failure_stories.providers.local import LocalProvider
from failure_stories.providers.local import layout as L
from failure_stories.run import session
from failure_stories.run.runner import Runner


@pytest.fixture(autouse=True)
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The existing provider reads its kubeconfig when it is made."""
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: lab, context: {cluster: c, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))


def test_each_provider_has_the_abilities_its_table_row_says(tmp_path: Path):
    local = LocalProvider(L.Paths(tmp_path))
    assert lacking(local, tuple(CAPABILITIES)) == []
    # Through its node containers and the Docker host; the operator runs in the cluster.
    assert lacking(KindProvider(), tuple(CAPABILITIES)) == ["operator-host"]
    # Through the node agent; images and the operator come from the user's registry.
    assert lacking(ExistingProvider(), tuple(CAPABILITIES)) == ["image-loading", "operator-host"]


def test_only_the_existing_provider_never_deletes_and_every_cluster_is_shared(tmp_path: Path):
    flags = {
        p.name: (p.owns_cluster, p.shared_cluster)
        for p in (LocalProvider(L.Paths(tmp_path)), KindProvider(), ExistingProvider())
    }
    assert flags == {"local": (True, True), "kind": (True, True), "existing": (False, True)}


def test_the_shipped_stories_name_what_they_need():
    needs = {s.id: s.meta.needs for s in scenarios.discover().values()}
    assert needs["moonlight-anti-affinity"] == ("node-failure",)
    assert needs["mindtickle-external-snat"] == ("node-shell", "outside-network", "egress-snat")
    assert all(set(n) <= set(CAPABILITIES) for n in needs.values())


def test_an_unknown_ability_is_a_definition_error(make_scenario):
    from tests.unit.conftest import SCENARIO_YAML

    yaml_text = SCENARIO_YAML.format(id="test-story") + "needs: [node-shel]\n"
    folder = make_scenario("", yaml_text=yaml_text)
    with pytest.raises(ScenarioDefinitionError, match=r"needs\.0: Input should be 'node-shell'"):
        scenarios.discover(folder.parent)


def test_the_runner_refuses_a_story_its_provider_cannot_run(make_scenario, provider, tmp_path):
    from tests.unit.conftest import SCENARIO_YAML

    yaml_text = SCENARIO_YAML.format(id="test-story") + "needs: [outside-network]\n"
    folder = make_scenario(
        "def symptom(ctx): return {}\ndef verify(ctx): return {}\n", yaml_text=yaml_text
    )
    story = scenarios.get("test-story", folder.parent)
    with pytest.raises(ProviderError, match="stub provider cannot run test-story needs"):
        session.refuse_unfit(provider, [story])
    report = Runner(provider, tmp_path / "r").run(story)
    assert report.verdict == "error"
    assert provider.kube_.namespaces == []  # nothing was created
    assert report.phase("setup").error == (  # type: ignore[union-attr]
        "the stub provider lacks outside-network, which test-story needs: "
        "run it on another provider"
    )
