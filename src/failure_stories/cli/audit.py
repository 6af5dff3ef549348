"""`kfs audit`: the exposure audit on the command line (see failure_stories.audit)."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import click
from kubernetes import config
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from failure_stories.audit import SEVERITIES, Finding, collect, has_high, stories
from failure_stories.audit import audit as run_audit
from failure_stories.core.errors import ClusterUnreachableError
from failure_stories.providers.kube import Kube

console = Console(highlight=False)

SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _default_kubeconfig() -> Path:
    first = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
    return Path(first).expanduser()


def _contexts(path: Path) -> list[str]:
    try:
        contexts, _ = config.list_kube_config_contexts(str(path))
    except (config.ConfigException, OSError):
        return []
    return [str(c["name"]) for c in contexts]


def _local_kubeconfig() -> Path | None:
    """The local provider's admin kubeconfig, if its cluster runs."""
    from failure_stories.providers.local import LocalProvider

    local = LocalProvider()
    return local.kubeconfig if local.is_up() else None


def connect(kubeconfig: Path | None, context: str | None) -> tuple[Kube, str]:
    """A client for the cluster to audit, and a line saying which one it is."""
    if kubeconfig is not None:
        return Kube(kubeconfig, context), f"{kubeconfig} context {context or '(current)'}"
    local = _local_kubeconfig()
    if context is None:
        if local is not None:
            return Kube(local), "the local provider's cluster"
        path = _default_kubeconfig()
        return Kube(path), f"{path} current context"
    path = _default_kubeconfig()
    if context in _contexts(path):
        return Kube(path, context), f"{path} context {context}"
    if local is not None and context in _contexts(local):
        return Kube(local, context), f"the local provider's cluster (context {context})"
    known = _contexts(path) + (_contexts(local) if local is not None else [])
    raise ClusterUnreachableError(
        f"unknown kube context {context!r} in {path}"
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
@click.option(
    "--context",
    default=None,
    metavar="NAME",
    help="Kubeconfig context to audit. Without it: the local provider's cluster if it "
    "runs, else the current context of $KUBECONFIG (or ~/.kube/config).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Kubeconfig file to read the context from (default: as for --context).",
)
@click.option(
    "--namespace",
    "-n",
    default=None,
    metavar="NS",
    help="Audit one namespace only (nodes are cluster-scoped and always audited).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as a JSON list.")
def audit(
    context: str | None, kubeconfig: Path | None, namespace: str | None, as_json: bool
) -> None:
    """Read-only exposure audit: does the cluster show what the stories warn about?

    Lists workloads, pods, services, config maps and nodes (get/list only: it never
    creates, changes or deletes anything) and reports, per story, each object that
    carries the pattern, with its severity and the concrete fix. Latency-critical
    workloads are marked with the label or annotation kfs.dev/latency-critical=true.

    JSON findings have the keys story, check, object (Kind/namespace/name), severity
    (high, medium, low, info), message and fix. Exit code 0 when there is no finding
    of severity high, 1 otherwise (2 when the cluster could not be read)."""
    kube, target = connect(kubeconfig, context)
    kube.ping()
    findings = run_audit(collect(kube, namespace))
    if namespace:
        target += f", namespace {namespace}"
    if as_json:
        click.echo(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        print_findings(findings, target)
    if has_high(findings):
        raise SystemExit(1)
