"""kubectl-style output: ``-o table|json|yaml`` on every command that shows data.

``table`` is for people (rich tables, colours); ``json`` and ``yaml`` print one
document on stdout and nothing else there, so scripts can pipe it: while such a
command runs, whatever else is printed (progress, image builds) goes to stderr.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import sys
from collections.abc import Callable
from typing import IO, Any

import click
import yaml

FORMATS = ("table", "json", "yaml")


# Where the document goes: stdout as it was before the command moved the rest aside.
_DOCUMENT: contextvars.ContextVar[IO[str]] = contextvars.ContextVar("kfs_document")


def output_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-o/--output table|json|yaml``; the command takes ``output: str``."""

    @functools.wraps(command)
    def with_output(*args: Any, output: str, **kwargs: Any) -> Any:
        if kwargs.pop("as_json", False):  # see json_alias
            output = "json"
        if output == "table":
            return command(*args, output=output, **kwargs)
        token = _DOCUMENT.set(sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return command(*args, output=output, **kwargs)
        finally:
            _DOCUMENT.reset(token)

    return click.option(
        "-o",
        "--output",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format: a table for people, or one JSON or YAML document on stdout.",
    )(with_output)


def json_alias(command: Callable[..., Any]) -> Callable[..., Any]:
    """The older ``--json`` flag, kept working as ``-o json`` (goes below
    ``@output_option``, which turns it into ``output``)."""
    return click.option("--json", "as_json", is_flag=True, hidden=True)(command)


def emit(data: Any, output: str) -> None:
    """Print ``data`` as the one JSON or YAML document on stdout."""
    out = _DOCUMENT.get(sys.stdout)
    if output == "json":
        click.echo(json.dumps(data, indent=2), file=out)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), file=out, nl=False)
