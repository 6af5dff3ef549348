"""Options every kfs command that reaches a cluster takes, spelled one way.

``@cluster_options`` adds --provider, --kubeconfig, --context and
--allow-context and hands the command one ``cluster: ClusterOptions``.
--kubeconfig, --context and --allow-context are for --provider existing; the
other providers build their own cluster and refuse them (providers.get_provider).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from failure_stories.providers import NAMES as PROVIDERS
from failure_stories.providers import get_provider
from failure_stories.providers.base import Provider

provider_option = click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="local",
    show_default=True,
    help="Where the cluster comes from: local (embedded, no Docker), kind, or existing.",
)


def kubeconfig_option(prefix: str = "existing provider: ") -> Callable[[Any], Any]:
    return click.option(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help=f"{prefix}the kubeconfig file, or a list of files separated by '{os.pathsep}' "
        "merged as kubectl merges them. [default: $KUBECONFIG, else ~/.kube/config]",
    )


def context_option(
    what: str = "existing provider: the kubeconfig context to use",
    default: str = "the current context of the kubeconfig",
) -> Callable[[Any], Any]:
    return click.option(
        "--context", default=None, metavar="NAME", help=f"{what}. [default: {default}]"
    )


allow_option = click.option(
    "--allow-context",
    default=None,
    metavar="NAME",
    help="existing provider: name the context again to let kfs change it (run, gameday, "
    "cleanup, operator install/uninstall); read-only commands (cluster up/status, audit) "
    "do not need it.",
)


@dataclass(frozen=True)
class ClusterOptions:
    """The cluster a command was pointed at."""

    provider: str
    kubeconfig: str | None = None
    context: str | None = None
    allow_context: str | None = None

    def get(self, keep_cluster: bool = False) -> Provider:
        return get_provider(
            self.provider,
            kubeconfig=self.kubeconfig,
            context=self.context,
            allow_context=self.allow_context,
            keep_cluster=keep_cluster,
        )

    def argv(self) -> list[str]:
        """The same options for a child `kfs` process."""
        args = ["--provider", self.provider]
        for flag, value in (
            ("--kubeconfig", self.kubeconfig),
            ("--context", self.context),
            ("--allow-context", self.allow_context),
        ):
            if value is not None:
                args += [flag, value]
        return args


def _decorator(options: tuple[Callable[[Any], Any], ...], provider: str | None) -> Any:
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def with_cluster(*args: Any, **kwargs: Any) -> Any:
            cluster = ClusterOptions(
                kwargs.pop("provider", provider),
                kwargs.pop("kubeconfig"),
                kwargs.pop("context"),
                kwargs.pop("allow_context"),
            )
            return command(*args, cluster=cluster, **kwargs)

        for option in reversed(options):
            with_cluster = option(with_cluster)
        return with_cluster

    return decorate


cluster_options: Callable[[Callable[..., Any]], Callable[..., Any]] = _decorator(
    (provider_option, kubeconfig_option(), context_option(), allow_option), None
)
"""--provider, --kubeconfig, --context, --allow-context; the command takes
``cluster: ClusterOptions``."""

audit_options: Callable[[Callable[..., Any]], Callable[..., Any]] = _decorator(
    (
        kubeconfig_option(prefix=""),
        context_option(
            "the kubeconfig context to audit",
            "the local provider's cluster if it runs, else the current context",
        ),
        allow_option,
    ),
    "existing",
)
"""The same options for `kfs audit`, which has no --provider (it reads any cluster)."""
