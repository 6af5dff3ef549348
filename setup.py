"""Build hook: the wheel carries the checkout's top-level folders as package data.

The stories, image recipes, kind configs, build recipes and the operator stay at
the top of the checkout, where people edit them; building a wheel copies them
into ``failure_stories/_data/`` (see ``failure_stories.core.paths``), so a
``pip install`` of the wheel works without the checkout. An editable install
copies nothing: it reads the checkout itself.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# The one list of what is copied, shared with the code that reads it back.
_spec = importlib.util.spec_from_file_location(
    "_kfs_package_data", HERE / "src" / "failure_stories" / "core" / "package_data.py"
)
assert _spec is not None and _spec.loader is not None
layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layout)

# setuptools builds in ./build by default, which is ours (build/k8s): its own
# output goes here instead, and sdists prune this folder rather than ours.
BUILD_BASE = ".setuptools-build"
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.egg-info")
# What build.sh leaves in build/k8s (when told to build there).
BUILD_OUTPUT = {HERE / "build" / "k8s": {"bin"}}


def skip(folder: str, names: list[str]) -> set[str]:
    outputs = BUILD_OUTPUT.get(Path(folder).resolve(), set())
    dropped = set(CACHES(folder, names))
    return dropped | set(shutil.ignore_patterns(*outputs)(folder, names)) if outputs else dropped


def copy_folder(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=skip)
    if not any(p.is_file() for p in target.rglob("*")):
        raise SystemExit(f"{source} holds no files: build the wheel from a whole checkout")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "failure_stories" / layout.DATA_PACKAGE_DIR
        shutil.rmtree(target, ignore_errors=True)  # no file deleted since the last build
        for name in layout.DATA_FOLDERS:
            source = HERE / name
            if not source.is_dir():
                raise SystemExit(f"{source} is missing: build the wheel from a whole checkout")
            copy_folder(source, target / name)
        for name in layout.DATA_FILES:
            shutil.copy2(HERE / name, target / name)


setup(cmdclass={"build_py": BuildWithData}, options={"build": {"build_base": BUILD_BASE}})
