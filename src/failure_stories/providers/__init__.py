"""Cluster providers: `local` (embedded default), `kind`, `existing`."""

from __future__ import annotations

from failure_stories.core.errors import DefinitionError
from failure_stories.providers.base import Provider

NAMES = ("local", "kind", "existing")


def get_provider(name: str, **options: str | bool | None) -> Provider:
    if name == "local":
        from failure_stories.providers.local import LocalProvider

        return LocalProvider()
    if name == "kind":
        from failure_stories.providers.kind import KindProvider

        return KindProvider(keep=bool(options.get("keep_cluster")))
    if name == "existing":
        from failure_stories.providers.existing import ExistingProvider

        context, allow = options.get("context"), options.get("allow_context")
        return ExistingProvider(
            context=context if isinstance(context, str) else None,
            allow=allow if isinstance(allow, str) else None,
        )
    raise DefinitionError(f"unknown provider {name!r}: choose one of {', '.join(NAMES)}")
