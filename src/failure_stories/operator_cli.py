"""`kfs operator install|uninstall`: the kfs operator outside scenario runs.

Scenario runs start their own operator, scoped to their namespace. These
commands are for people who want RedisFailover objects of their own:

* local provider: ``kopf run`` as a supervised host process of the embedded
  cluster (pid and log under the cluster's state directory, so `kfs cluster
  down` stops it too), watching every namespace except ``kfs-*`` (those belong
  to scenario runs and tests, which bring their own operator);
* kind / existing: ``operator/rbac.yaml`` and ``operator/deployment.yaml``
  applied to the cluster (build and load ``localhost/kfs/operator:v1`` first).

CRDs are installed by ``install``; ``uninstall`` removes them only when no
RedisFailover is left in any namespace.
"""

from __future__ import annotations

import click

from failure_stories import operator_runtime as runtime
from failure_stories.providers import NAMES as PROVIDERS
from failure_stories.providers import get_provider
from failure_stories.providers.base import Provider

_provider = click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="local",
    show_default=True,
    help="Where the cluster comes from: local (embedded), kind, or existing.",
)
_context = click.option("--context", default=None, help="existing provider: kubeconfig context.")
_allow = click.option(
    "--allow-context",
    default=None,
    metavar="NAME",
    help="existing provider: name the context again to allow changing it.",
)


def _host_operator(prov: Provider) -> runtime.HostOperator:
    from failure_stories.providers.local import LocalProvider

    assert isinstance(prov, LocalProvider)
    return runtime.HostOperator(
        prov.kubeconfig,
        prov.paths.root,
        name=runtime.DEPLOYMENT,
        namespaces=(runtime.LOCAL_INSTALL_SCOPE,),
    )


def _provider_for(provider: str, context: str | None, allow_context: str | None) -> Provider:
    prov = get_provider(provider, context=context, allow_context=allow_context)
    if provider == "existing":
        from failure_stories.providers.existing import ExistingProvider

        assert isinstance(prov, ExistingProvider)
        prov.check_allowed()
    return prov


@click.group("operator")
def operator_group() -> None:
    """Install or remove the kfs operator (the RedisFailover controller, built on kopf)."""


@operator_group.command()
@_provider
@_context
@_allow
def install(provider: str, context: str | None, allow_context: str | None) -> None:
    """Install the CRDs and run the operator (host process on local, Deployment elsewhere)."""
    prov = _provider_for(provider, context, allow_context)
    kube = prov.kube()
    for name in runtime.ensure_crds(kube):
        click.echo(f"CRD {name} installed")
    if provider == "local":
        op = _host_operator(prov)
        if op.alive():
            click.echo(f"operator already running (log: {op.log_path})")
            return
        op.start()
        click.echo(
            f"operator running on this host for namespaces {runtime.LOCAL_INSTALL_SCOPE} "
            f"(log: {op.log_path})"
        )
        return
    runtime.InClusterOperator(kube).install()
    click.echo(f"operator Deployment {runtime.SYSTEM_NAMESPACE}/{runtime.DEPLOYMENT} ready")


@operator_group.command()
@_provider
@_context
@_allow
def uninstall(provider: str, context: str | None, allow_context: str | None) -> None:
    """Stop and remove the operator; remove the CRDs if no RedisFailover is left."""
    prov = _provider_for(provider, context, allow_context)
    kube = prov.kube()
    if provider == "local":
        op = _host_operator(prov)
        was_running = op.alive()
        op.stop()
        click.echo("operator stopped" if was_running else "operator was not running")
        lines = runtime.remove_crds(kube)
    else:
        lines = runtime.InClusterOperator(kube).uninstall()
    for line in lines:
        click.echo(line)
