"""`kfs audit`: the exposure audit on the command line (see failure_stories.audit)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from failure_stories.audit import SEVERITIES, Finding, collect, has_high, stories
from failure_stories.audit import audit as run_audit
from failure_stories.cli.options import ClusterOptions, audit_options
from failure_stories.cli.output import emit, json_alias, output_option
from failure_stories.core.errors import ClusterUnreachableError, KubeconfigError
from failure_stories.providers.kube import Kube
from failure_stories.providers.kubeconfig import KubeConfig, KubeconfigSpec, describe

console = Console(highlight=False)

SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _contexts(spec: KubeconfigSpec) -> list[str]:
    try:
        return KubeConfig(spec).contexts
    except ClusterUnreachableError:
        return []


def _local_kubeconfig() -> Path | None:
    """The local provider's admin kubeconfig, if its cluster runs."""
    from failure_stories.providers.local import LocalProvider

    local = LocalProvider()
    return local.kubeconfig if local.is_up() else None


def connect(kubeconfig: KubeconfigSpec, context: str | None) -> tuple[Kube, str]:
    """A client for the cluster to audit, and a line saying which one it is.

    ``kubeconfig`` may be a list of files (merged as kubectl does); without it, the
    local provider's cluster if it runs, else $KUBECONFIG or ~/.kube/config."""
    if kubeconfig is not None:
        merged = KubeConfig(kubeconfig)
        merged.resolve(context)
        return Kube(merged, context), f"{merged} context {context or '(current)'}"
    local = _local_kubeconfig()
    if context is None:
        if local is not None:
            return Kube(local), "the local provider's cluster"
        merged = KubeConfig()
        return Kube(merged), f"{merged} current context"
    default = describe()
    if context in _contexts(None):
        return Kube(None, context), f"{default} context {context}"
    if local is not None and context in _contexts(local):
        return Kube(local, context), f"the local provider's cluster (context {context})"
    known = _contexts(None) + (_contexts(local) if local is not None else [])
    raise KubeconfigError(
        f"unknown kube context {context!r} in {default}"
        + (" or the local provider's kubeconfig" if local is not None else "")
        + f" (known: {', '.join(known) or 'none'})"
    )


def print_findings(findings: list[Finding], target: str) -> None:
    console.print(f"[bold]Exposure audit[/bold] of {escape(target)}")
    for story, warns in stories().items():
        mine = [f for f in findings if f.story == story]
        counts = Counter(f.severity for f in mine)
        summary = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s]) or "no findings"
        console.print(f"\n[bold]{story}[/bold] [dim]({escape(warns)})[/dim]: {summary}")
        if not mine:
            continue
        table = Table(show_lines=True, expand=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("object / check", overflow="fold", ratio=1)
        table.add_column("finding / fix", overflow="fold", ratio=3)
        for f in mine:
            table.add_row(
                f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]",
                f"{escape(f.object)}\n[dim]{escape(f.check)}[/dim]",
                f"{escape(f.message)}\n[green]fix:[/green] {escape(f.fix)}",
            )
        console.print(table)
    counts = Counter(f.severity for f in findings)
    console.print(
        f"\n{len(findings)} findings: "
        + ", ".join(f"{counts[s]} {s}" for s in SEVERITIES)
        + (" - exit code 1 (high findings)" if counts["high"] else "")
    )


@click.command("audit")
@audit_options
@click.option(
    "--namespace",
    "-n",
    default=None,
    metavar="NS",
    help="Audit one namespace only (nodes are cluster-scoped and always audited).",
)
@output_option
@json_alias
def audit(cluster: ClusterOptions, namespace: str | None, output: str) -> None:
    """Read-only exposure audit: does the cluster show what the stories warn about?

    Lists workloads, pods, services, config maps, nodes and RBAC roles and bindings
    (get/list only: it never creates, changes or deletes anything; without the right
    to list RBAC objects, that check says so and the others run) and reports, per
    story, each object that carries the pattern, with its severity and the concrete
    fix. Latency-critical workloads are marked with the label or annotation
    kfs.dev/latency-critical=true.

    -o json|yaml prints the findings as a list with the keys story, check, object
    (Kind/namespace/name), severity (high, medium, low, info), message and fix.
    Exit code 0 when there is no finding of severity high, 1 otherwise (3 when the
    cluster could not be read).
    Read-only, so --allow-context is not needed."""
    kube, target = connect(cluster.kubeconfig, cluster.context)
    kube.ping()
    findings = run_audit(collect(kube, namespace))
    if namespace:
        target += f", namespace {namespace}"
    if output != "table":
        emit([f.to_dict() for f in findings], output)
    else:
        print_findings(findings, target)
    if has_high(findings):
        raise SystemExit(1)
