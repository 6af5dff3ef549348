"""Where the stories, image recipes, kind configs, build recipes and operator
files are.

They live at the top of a checkout, where people edit them. A wheel carries a
copy of them as the package's ``_data/`` folder (``setup.py`` maps them in at
build time), found with importlib.resources; an editable install has no such
folder and reads the checkout itself.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from failure_stories.core.package_data import DATA_PACKAGE_DIR


def _checkout() -> Path | None:
    """The checkout this package runs from (an editable install), if it is one."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "scenarios").is_dir() else None


def _packaged() -> Path | None:
    """The data a wheel installed beside the package, if it did."""
    data = resources.files("failure_stories") / DATA_PACKAGE_DIR
    return data if isinstance(data, Path) and (data / "scenarios").is_dir() else None


CHECKOUT = _checkout()
PACKAGED = _packaged()
# A wheel's own copy wins: a wheel installed into a venv inside some checkout
# must not read that checkout's files.
DATA = PACKAGED or CHECKOUT or Path(__file__).resolve().parents[3]
SCENARIOS = DATA / "scenarios"
IMAGES = DATA / "images"
OPERATOR = DATA / "operator"
KIND_CONFIGS = DATA / "kind-configs"
BUILD = DATA / "build"
LOCK = DATA / "requirements.lock"
