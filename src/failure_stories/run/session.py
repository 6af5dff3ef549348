"""The cluster's lifecycle around a batch of runs, written once for `kfs run`,
`kfs gameday` and the pytest plugin: use the cluster that is there, or create
it; afterwards delete only a cluster this session created, and never one that
kfs does not own (an existing context). Also the up-front check that the
provider has every ability the chosen stories need."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from failure_stories.contract.scenario import Scenario
from failure_stories.core.errors import ProviderError
from failure_stories.providers.base import Provider
from failure_stories.providers.capabilities import lacking


def refuse_unfit(provider: Provider, stories: Iterable[Scenario]) -> None:
    """One line naming every story the provider cannot run, and what it lacks."""
    unfit = [(s.id, lacking(provider, s.meta.needs)) for s in stories]
    unfit = [(sid, missing) for sid, missing in unfit if missing]
    if unfit:
        which = "; ".join(f"{sid} needs {', '.join(missing)}" for sid, missing in unfit)
        raise ProviderError(
            f"the {provider.name} provider cannot run {which}: choose another provider "
            "(`kfs describe ID` says what a story needs)"
        )


@contextlib.contextmanager
def cluster(
    provider: Provider, keep: bool = False, say: Callable[[str], None] | None = None
) -> Iterator[Provider]:
    """The provider, with its cluster taken down on the way out if this created it."""
    created = provider.owns_cluster and not provider.status().running
    try:
        yield provider
    finally:
        if created and not keep:
            if say is not None:
                say(
                    f"deleting the {provider.name} cluster this run created "
                    "(--keep-cluster keeps it)"
                )
            provider.down()
