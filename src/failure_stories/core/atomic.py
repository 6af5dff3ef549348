"""Files other processes read while we write them: replaced whole, never seen
half-written (a truncated JSON record once failed a parallel run's start)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary name: two writers of the same file must not share one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; most of these files were always world-readable
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
