from __future__ import annotations

import json

import pytest

from failure_stories.contract import scenario as scenarios
from failure_stories.contract.scenario import Threshold
from failure_stories.core.errors import ScenarioDefinitionError, UnknownScenarioError


@pytest.mark.parametrize(
    ("text", "value", "holds"),
    [
        (">= 0.99", 0.99, True),
        ("<= 0.05", 0.06, False),
        ("== 1", 1, True),
        ("> 0", 0, False),
        ("< 3", 2.5, True),
    ],
)
def test_thresholds(text, value, holds):
    assert Threshold.parse(text).holds(value) is holds


@pytest.mark.parametrize("bad", ["0.99", ">=", "about 3", "=> 1"])
def test_bad_threshold_says_how_to_write_one(bad):
    with pytest.raises(ScenarioDefinitionError, match=r"e\.g\. '>= 0\.99'"):
        Threshold.parse(bad)


def test_unknown_id_suggests_the_closest(make_scenario):
    folder = make_scenario("", scenario_id="moonlight-anti-affinity")
    with pytest.raises(UnknownScenarioError, match="did you mean moonlight-anti-affinity"):
        scenarios.get("moonlight", folder.parent)


def test_a_scenario_must_declare_symptom_and_verify_checks(make_scenario):
    yaml_text = (
        "id: x\ntitle: t\ncompany: c\nyear: 2020\nsource: https://e.invalid\nkind_config: k\n"
        "story: s\n"
        "fault: f\nsymptom: s\nmitigation: m\nmeasured: {}\nchecks: {symptom: {a: '> 0'}}\n"
    )
    folder = make_scenario("", scenario_id="x", yaml_text=yaml_text)
    with pytest.raises(
        ScenarioDefinitionError, match="checks: a scenario must declare verify checks, or it"
    ):
        scenarios.discover(folder.parent)


def test_a_misspelled_key_is_refused_not_ignored(make_scenario):
    from tests.unit.conftest import SCENARIO_YAML

    yaml_text = SCENARIO_YAML.format(id="test-story") + "node:\n  exclusiv: true\n"
    folder = make_scenario("", yaml_text=yaml_text)
    with pytest.raises(ScenarioDefinitionError) as err:
        scenarios.discover(folder.parent)
    assert str(err.value).endswith(
        "scenario.yaml: node.exclusiv: Extra inputs are not permitted; "
        "see scenarios/scenario.schema.json"
    )


def test_the_editors_json_schema_is_the_one_the_loader_uses():
    """scenarios/scenario.schema.json is generated: `python -m
    failure_stories.tools.schema` writes it again after a change to the model."""
    committed = json.loads((scenarios.scenarios_root() / "scenario.schema.json").read_text())
    assert committed == scenarios.json_schema()
    assert committed["properties"]["node"]["$ref"] == "#/$defs/NodeUse"
    assert {"id", "source", "checks", "measured", "kind_config"} <= set(committed["required"])
    for story in scenarios.discover().values():  # each says where its schema is
        first = (story.path / "scenario.yaml").read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../scenario.schema.json", story.id


def test_the_shipped_scenarios_are_well_formed():
    found = scenarios.discover()
    assert "moonlight-anti-affinity" in found
    for s in found.values():
        assert (s.path / "README.md").is_file(), s.id
        assert s.meta.source.startswith("https://"), s.id
        assert (s.path / "steps.py").is_file(), s.id
        for phase in ("setup", "symptom", "mitigate", "verify"):
            assert s.step(phase) is not None, (s.id, phase)
        # A dry run must be able to show what the fault and the fix change.
        assert s.meta.plan.get("setup") and s.meta.plan.get("mitigate"), s.id
        assert s.meta.plan.get("inject") or s.meta.plan.get("symptom"), s.id


def _load_steps(make_scenario, steps: str):
    folder = make_scenario(steps)
    return scenarios.get("test-story", folder.parent)


@pytest.mark.parametrize(
    ("misspelled", "phase"),
    [("sympton", "symptom"), ("steadystate", "steady_state"), ("mitigation", "mitigate")],
)
def test_a_misspelled_phase_function_is_refused_when_steps_load(make_scenario, misspelled, phase):
    story = _load_steps(
        make_scenario,
        f"""
        def symptom(ctx): return {{}}
        def verify(ctx): return {{}}
        def {misspelled}(ctx): return {{}}
        """,
    )
    with pytest.raises(ScenarioDefinitionError) as err:
        story.step("setup")
    assert str(err.value) == (
        f"test-story: steps.py defines {misspelled}(), which is no phase and would never "
        f"run: rename it {phase}(), or start it with _ if it is a helper"
    )


def test_steps_without_symptom_or_verify_are_refused(make_scenario):
    story = _load_steps(make_scenario, "def setup(ctx): pass\ndef symptom(ctx): return {}\n")
    with pytest.raises(ScenarioDefinitionError, match="defines no verify function"):
        story.step("setup")


def test_helpers_and_imported_functions_are_not_taken_for_phases(make_scenario):
    story = _load_steps(
        make_scenario,
        """
        from os.path import join as setup_path
        def symptom(ctx): return {}
        def verify(ctx): return {}
        def _verify_once(ctx): return {}
        def parse_ps(text): return []
        """,
    )
    assert story.step("symptom") is not None and story.step("setup") is None
