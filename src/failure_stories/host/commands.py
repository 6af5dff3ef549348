"""The one way to run a command on this host: its output back, a failure (or a
missing program, or a timeout) as a one-line ProviderError that says what broke."""

from __future__ import annotations

import subprocess
from typing import Any

from failure_stories.core.errors import ProviderError


def run(argv: list[str], check: bool = True, timeout: float = 120, **kw: Any) -> str:
    """Run a host command; a failure becomes a one-line ProviderError."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **kw
        )
    except FileNotFoundError as exc:
        raise ProviderError(f"{argv[0]} not found: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(f"{' '.join(argv)} timed out after {timeout:g}s") from exc
    if check and done.returncode != 0:
        err = (done.stderr or done.stdout).strip().splitlines()
        raise ProviderError(f"{' '.join(argv)} failed: {err[-1] if err else done.returncode}")
    return str(done.stdout)
