"""Where the checkout's own folders are: the package is run from a checkout
(an editable install), and its stories, image recipes, operator manifests and
build recipes live beside it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCENARIOS = REPO / "scenarios"
IMAGES = REPO / "images"
OPERATOR = REPO / "operator"
KIND_CONFIGS = REPO / "kind-configs"
BUILD = REPO / "build"
