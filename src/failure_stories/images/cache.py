"""The build cache: where it lives, one build at a time, and pruning what a
newer build replaced."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

# Bump when the recipe changes in a way the hashed inputs do not show (cleanup
# steps, image config, archive layout): it invalidates every cached artifact.
RECIPE_VERSION = "1"


def default_cache_dir() -> Path:
    return Path(os.environ.get("KFS_CACHE", "~/.cache/kfs")).expanduser() / "images"


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """One builder per cache dir: two kfs runs must not debootstrap into the same path."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prune(cache: Path, pattern: str, keep: set[Path]) -> None:
    # Old keys are never read again; without pruning each edit would leave
    # another few hundred MB behind.
    for old in cache.glob(pattern):
        if old not in keep:
            old.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
