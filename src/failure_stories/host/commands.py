"""The one way to run a short command on this host (long-lived processes are
the Supervisor's, in host.processes).

`run` returns the command's output; a failure (a non-zero exit when checked, a
missing program, a timeout) is one line of ProviderError naming what was being
done and the command's last line of output. With ``log_file`` the output goes
to that file instead, and the error names it: the way for long steps
(debootstrap, go builds) whose output a user may want to read."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from failure_stories.core.errors import ProviderError


def run(
    argv: list[str],
    check: bool = True,
    timeout: float | None = 120,
    *,
    what: str | None = None,
    log_file: Path | None = None,
    redact: str | None = None,
    **kw: Any,
) -> str:
    """Run ``argv``; return its stdout (or, with ``log_file``, "").

    ``redact`` is replaced in the kept log and in the message: the mirror URI
    is a detail of the build machine and is never to be written down."""
    doing = what or " ".join(argv)
    try:
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("wb") as fh:
                code = subprocess.run(
                    argv, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False, **kw
                ).returncode
            output, stdout = log_file.read_text(errors="replace"), ""
            if redact:
                output = output.replace(redact, "<mirror>")
                log_file.write_text(output)
        else:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False, **kw
            )
            code, stdout = done.returncode, str(done.stdout)
            output = (done.stderr or "").strip() or stdout
    except FileNotFoundError as exc:
        raise ProviderError(f"{argv[0]} not found: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(f"{doing} timed out after {timeout:g}s") from exc
    if check and code != 0:
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {code}"
        where = f" (log: {log_file})" if log_file is not None else ""
        raise ProviderError(f"{doing} failed with exit code {code}: {last}{where}")
    return stdout


def succeeds(argv: list[str], timeout: float | None = 120, **kw: Any) -> bool:
    """Whether ``argv`` exits 0 (a probe: its output does not matter)."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False, **kw)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
