"""Options every kfs command that reaches a cluster takes, spelled one way."""

from __future__ import annotations

import click

from failure_stories.providers import NAMES as PROVIDERS

provider_option = click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="local",
    show_default=True,
    help="Where the cluster comes from: local (embedded, no Docker), kind, or existing.",
)
context_option = click.option(
    "--context", default=None, help="existing provider: the kubeconfig context to use."
)
allow_option = click.option(
    "--allow-context",
    default=None,
    metavar="NAME",
    help="existing provider: name the context again to allow changing it.",
)
