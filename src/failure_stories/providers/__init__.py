"""Cluster providers: `local` (embedded default), `kind`, `existing`."""

from __future__ import annotations

from failure_stories.core.errors import DefinitionError
from failure_stories.providers.base import Provider

NAMES = ("local", "kind", "existing")

# Options that choose a cluster someone else built: only `existing` takes them.
EXISTING_ONLY = ("kubeconfig", "context", "allow_context")


def get_provider(
    name: str,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    allow_context: str | None = None,
    keep_cluster: bool = False,
) -> Provider:
    """The provider ``name``. kubeconfig (a file or an os.pathsep-separated list),
    context and allow_context are for `existing`; given to another provider they
    are refused, never ignored."""
    if name not in NAMES:
        raise DefinitionError(f"unknown provider {name!r}: choose one of {', '.join(NAMES)}")
    if name != "existing":
        given = {"kubeconfig": kubeconfig, "context": context, "allow_context": allow_context}
        for option in EXISTING_ONLY:
            if given[option] is not None:
                flag = "--" + option.replace("_", "-")
                raise DefinitionError(
                    f"{flag} is for --provider existing; the {name} provider builds "
                    "its own cluster and kubeconfig"
                )
    if name == "local":
        from failure_stories.providers.local import LocalProvider

        return LocalProvider()
    if name == "kind":
        from failure_stories.providers.kind import KindProvider

        return KindProvider(keep=keep_cluster)
    from failure_stories.providers.existing import ExistingProvider

    return ExistingProvider(context=context, allow=allow_context, kubeconfig=kubeconfig)
