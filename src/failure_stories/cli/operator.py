"""`kfs operator install|uninstall`: the kfs operator outside scenario runs.

Scenario runs start their own operator, scoped to their namespace. These
commands are for people who want RedisFailover objects of their own, and for
GameDay resources (game days run from the cluster):

* local provider: ``operator/local-deployment.yaml``, a pod of the toolbox image
  on the real node that runs this checkout's operator in the host's namespaces
  (GameDay runs change the node), watching every namespace except ``kfs-*``
  (those belong to scenario runs and tests, which bring their own operator);
  GameDay metrics on http://127.0.0.1:9808/metrics;
* kind / existing: ``operator/rbac.yaml`` and ``operator/deployment.yaml``
  applied to the cluster; on kind, ``localhost/kfs/operator:v1`` is built
  offline and loaded first, elsewhere ``--image`` names one the nodes can pull
  (``kfs operator image`` writes the archive to push). RedisFailovers work
  there; GameDays report Unsupported unless ``--gamedays`` also grants the
  rights of ``operator/gameday-rbac.yaml`` (then they run in that cluster as
  the existing provider does, with the pod's own ServiceAccount).

CRDs are installed by ``install``; ``uninstall`` removes them only when no
RedisFailover or GameDay is left in any namespace.
"""

from __future__ import annotations

import click

from failure_stories.cli.options import ClusterOptions, cluster_options
from failure_stories.operator import image as operator_image
from failure_stories.operator import runtime
from failure_stories.operator.image import OPERATOR_IMAGE
from failure_stories.providers.base import Provider
from failure_stories.providers.capabilities import OperatorHost


def _operator(
    prov: Provider, image: str | None = None, gamedays: bool = False
) -> runtime.InClusterOperator:
    if isinstance(prov, OperatorHost):
        return runtime.LocalPodOperator(prov.kube(), prov.operator_state)
    return runtime.InClusterOperator(prov.kube(), image=image or OPERATOR_IMAGE, gamedays=gamedays)


def _provider_for(cluster: ClusterOptions) -> Provider:
    """The provider, refused (--allow-context) if kfs may not change its cluster."""
    prov = cluster.get()
    prov.check_allowed()
    return prov


@click.group("operator")
def operator_group() -> None:
    """Install or remove the kfs operator (GameDays and RedisFailovers, built on kopf)."""


@operator_group.command()
@cluster_options
@click.option(
    "--image",
    default=None,
    metavar="REF",
    help=f"kind/existing: the operator image the nodes pull (default {OPERATOR_IMAGE}, "
    "which kind gets built and loaded).",
)
@click.option(
    "--gamedays",
    is_flag=True,
    help="kind/existing: also let the operator run GameDays in this cluster (grants the "
    "rights in operator/gameday-rbac.yaml; node-level faults go through the node agent). "
    "Without it GameDays report Unsupported. The local provider's operator always runs them.",
)
def install(cluster: ClusterOptions, image: str | None, gamedays: bool) -> None:
    """Install the CRDs and the operator Deployment (on local: a pod on the real node)."""
    prov = _provider_for(cluster)
    if isinstance(prov, OperatorHost) and (image is not None or gamedays):
        flag = "--image" if image is not None else "--gamedays"
        raise click.UsageError(f"{flag} is for kind and existing; {prov.name} runs this checkout")
    if image is None:
        runtime.load_image(prov)
    op = _operator(prov, image, gamedays)
    for name in runtime.ensure_crds(op.kube):
        click.echo(f"CRD {name} installed")
    op.install()
    click.echo(f"operator Deployment {runtime.SYSTEM_NAMESPACE}/{runtime.DEPLOYMENT} ready")
    if isinstance(prov, OperatorHost):
        click.echo(
            f"watching namespaces {runtime.LOCAL_INSTALL_SCOPE}; GameDay metrics on "
            f"http://127.0.0.1:{runtime.METRICS_PORT}/metrics"
        )


@operator_group.command("image")
def image_cmd() -> None:
    """Build the operator image offline and print its archive (docker load -i, or
    push it to your registry for `install --image` on an existing cluster)."""
    archive = operator_image.build()
    click.echo(f"{OPERATOR_IMAGE}: {archive}")


@operator_group.command()
@cluster_options
def uninstall(cluster: ClusterOptions) -> None:
    """Remove the operator (GameDay runs in progress are reverted first); remove the
    CRDs if no RedisFailover or GameDay is left."""
    prov = _provider_for(cluster)
    for line in _operator(prov).uninstall():
        click.echo(line)
