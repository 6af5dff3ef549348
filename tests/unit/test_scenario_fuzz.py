"""Fuzzing the threshold parser and the scenario.yaml loader (hypothesis, bounded so
`make test` stays quick). Whatever the input, the answer is a value or one
ScenarioDefinitionError line, never another exception; a threshold's text, as
reports keep it, parses back to the same threshold."""

from __future__ import annotations

import math
import operator
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from failure_stories.contract.scenario import ScenarioMeta, Threshold, load_meta
from failure_stories.core.errors import ScenarioDefinitionError

from .conftest import SCENARIO_YAML

FUZZ = settings(
    max_examples=int(os.environ.get("KFS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}
finite = st.floats(allow_nan=False, allow_infinity=False)


def one_line(exc: ScenarioDefinitionError) -> str:
    text = str(exc)
    assert text and "\n" not in text, text
    return text


@FUZZ
@given(st.text(max_size=40))
@example(">= 1e999")
@example(">= ٣")  # a digit of another script
@example(">=")
def test_any_text_is_a_threshold_or_one_line(text: str):
    try:
        t = Threshold.parse(text)
    except ScenarioDefinitionError as exc:
        assert one_line(exc).startswith("bad threshold ")
        return
    assert t.op in OPS
    assert math.isfinite(t.value)
    assert Threshold.parse(str(t)) == t


@FUZZ
@given(st.sampled_from(sorted(OPS)), finite, finite, st.sampled_from(["", " ", "  "]))
@example(">=", 1_000_000.0, 1.0, " ")  # ':g' once wrote 1e+06, which did not parse
@example("<=", 0.1234567, 0.0, "")  # and rounded to 6 digits
def test_thresholds_keep_their_number_and_judge_as_the_operator(
    op: str, number: float, value: float, space: str
):
    t = Threshold.parse(f"{op}{space}{number!r}")
    assert (t.op, t.value) == (op, number)
    assert Threshold.parse(str(t)) == t  # the report's text, read by `kfs report --compare`
    assert t.holds(value) is OPS[op](value, number)


@pytest.fixture(scope="module")
def story_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fuzz-story"
        folder.mkdir()
        yield folder


def load(folder: Path, text: str | bytes) -> ScenarioMeta | None:
    file = folder / "scenario.yaml"
    if isinstance(text, bytes):
        file.write_bytes(text)
    else:
        file.write_text(text, encoding="utf-8")
    try:
        return load_meta(folder)
    except ScenarioDefinitionError as exc:
        assert one_line(exc).startswith(str(file))
        return None


VALID = yaml.safe_load(SCENARIO_YAML.format(id="fuzz-story"))
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(st.text(max_size=200))
@example("id: fuzz-story\ntitle: [unclosed")
@example("[" * 5000)
@example("id: fuzz-story\n\tkey: tab")
def test_any_text_loads_or_is_one_line(story_dir: Path, text: str):
    load(story_dir, text)


@FUZZ
@given(st.binary(max_size=64))
@example(b"id: fuzz-story\ntitle: \xff\xfe")
def test_any_bytes_load_or_are_one_line(story_dir: Path, data: bytes):
    load(story_dir, data)


@FUZZ
@given(
    st.sampled_from([*sorted(VALID), "extra", "node", "needs", "plan"]),
    yaml_values,
)
def test_a_valid_story_with_one_key_changed_loads_or_is_one_line(
    story_dir: Path, key: str, value: object
):
    load(story_dir, yaml.safe_dump({**VALID, key: value}))


@FUZZ
@given(st.sampled_from(["steady-state", "symptom", "verify"]), yaml_values)
def test_any_threshold_value_in_checks_is_named_by_its_place(
    story_dir: Path, phase: str, value: object
):
    doc = {**VALID, "checks": {**VALID["checks"], phase: {"errors": value}}}
    meta = load(story_dir, yaml.safe_dump(doc))
    if meta is not None:
        assert isinstance(meta.checks_for(phase)["errors"], Threshold)


def test_a_bad_threshold_names_its_place_in_the_file(story_dir: Path):
    doc = {**VALID, "checks": {**VALID["checks"], "verify": {"errors": "at most 1"}}}
    with pytest.raises(ScenarioDefinitionError) as exc:
        load_meta_text(story_dir, yaml.safe_dump(doc))
    assert str(exc.value) == (
        f"{story_dir}/scenario.yaml: checks.verify.errors: bad threshold 'at most 1': write an "
        "operator and a number, e.g. '>= 0.99'; see scenarios/scenario.schema.json"
    )


def load_meta_text(folder: Path, text: str) -> ScenarioMeta:
    (folder / "scenario.yaml").write_text(text)
    return load_meta(folder)
