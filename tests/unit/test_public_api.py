"""A story's steps.py needs nothing but `failure_stories`'s public names: the
rest of the package is internal and may move."""

from __future__ import annotations

import ast
from pathlib import Path

import failure_stories
from failure_stories.contract import scenario as scenarios


def test_every_public_name_exists():
    missing = [n for n in failure_stories.__all__ if not hasattr(failure_stories, n)]
    assert missing == []
    assert sorted(failure_stories.__all__) == sorted(set(failure_stories.__all__))


def test_the_shipped_steps_import_only_the_public_surface():
    used: set[str] = set()
    for story in scenarios.discover().values():
        tree = ast.parse((story.path / "steps.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("failure_"):
                assert node.module == "failure_stories", (story.id, node.module)
                used |= {a.name for a in node.names}
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("failure_stories") for a in node.names)
    assert used <= set(failure_stories.__all__)
    # Nothing public that no story uses, but the errors a step may raise or catch.
    errors = {n for n in failure_stories.__all__ if n.endswith("Error") or n == "WaitTimeout"}
    assert set(failure_stories.__all__) - used - errors == set()


def test_the_layers_are_drawn_where_a_reader_starts():
    doc = failure_stories.__doc__ or ""
    for layer in (
        "cli",
        "gameday",
        "operator",
        "run",
        "reporting",
        "providers",
        "images",
        "host",
        "contract",
        "core",
    ):
        assert f"\n    {layer}" in doc or f"  {layer}  " in doc, layer
        assert (Path(failure_stories.__file__).parent / layer).is_dir(), layer
