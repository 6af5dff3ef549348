"""The `kfs` command line."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from failure_stories.cli.audit import audit
from failure_stories.cli.operator import operator_group
from failure_stories.cli.options import ClusterOptions, cluster_options
from failure_stories.contract import scenario as scenarios
from failure_stories.contract.controls import CONTROLS
from failure_stories.contract.controls import NAMES as CONTROL_NAMES
from failure_stories.core.errors import GuardRefusedError, Interrupted, KfsError
from failure_stories.providers.base import Provider
from failure_stories.reporting.html import write_html
from failure_stories.reporting.model import (
    ScenarioReport,
    read_reports,
    write_json,
    write_junit,
)
from failure_stories.run.events import Event, EventKind
from failure_stories.run.session import Session, refuse_uncontrollable

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

VERDICT_STYLE = {
    "passed": "bold green",
    "not-reproduced": "bold yellow",
    "not-fixed": "bold red",
    "error": "bold magenta",
}


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]kfs: error:[/red] {message}", markup=True, soft_wrap=True)
    sys.exit(code)


class KfsGroup(click.Group):
    """Turns every KfsError into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KfsError as exc:
            _fail(str(exc))
        except Interrupted as exc:
            _fail(f"{exc}; teardown ran", 130)
        except KeyboardInterrupt:
            _fail("interrupted", 130)


@click.group(cls=KfsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kube-failure-stories", prog_name="kfs")
def cli() -> None:
    """kube-failure-stories: published Kubernetes incidents as scenarios that prove
    the fault reproduces and the documented mitigation fixes it."""


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_cmd(as_json: bool) -> None:
    """List every scenario with its company, year and source."""
    found = scenarios.discover()
    rows: list[dict[str, str]] = [
        {
            "id": s.id,
            "title": s.meta.title,
            "company": s.meta.company,
            "year": str(s.meta.year),
            "source": s.meta.source,
        }
        for s in found.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="kube-failure-stories")
    for col in ("id", "company", "year", "title", "source"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["id"], r["company"], r["year"], r["title"], r["source"])
    console.print(table)


@cli.command()
@click.argument("scenario_id")
def describe(scenario_id: str) -> None:
    """Tell a story: what happened, the fault, the symptom, the fix, what is measured."""
    s = scenarios.get(scenario_id)
    m = s.meta
    console.print(f"[bold]{m.title}[/bold] - {m.company}, {m.year}")
    console.print(f"source: {m.source}\n")
    for label, text in (
        ("Story", m.story),
        ("Fault", m.fault),
        ("Symptom", m.symptom),
        ("Mitigation", m.mitigation),
    ):
        console.print(f"[bold]{label}[/bold]\n{text}\n")
    if m.needs:
        console.print(f"[bold]Needs from the provider[/bold]\n{', '.join(m.needs)}\n")
    table = Table(title="What is measured")
    for col in ("measurement", "meaning", "symptom", "verify"):
        table.add_column(col, overflow="fold")
    for name, meaning in m.measured.items():
        sym = m.checks.get("symptom", {}).get(name)
        ver = m.checks.get("verify", {}).get(name)
        table.add_row(name, meaning, str(sym or "reported"), str(ver or "reported"))
    console.print(table)


class Progress:
    """Prints each phase as it starts and ends, with its live measurements."""

    def __call__(self, event: Event) -> None:
        if event.kind is EventKind.PHASE_START:
            console.print(f"  [cyan]>[/cyan] {event.scenario} [bold]{event.phase}[/bold]")
        elif event.kind is EventKind.LOG:
            console.print(f"      {event.message}", style="dim")
        elif event.kind is EventKind.PHASE_END and event.result is not None:
            r = event.result
            mark = "[green]ok[/green]" if r.ok else "[red]FAILED[/red]"
            console.print(f"    {mark} {event.phase} ({r.seconds:.1f}s)")
            for name, meas in r.measurements.items():
                judged = (
                    ""
                    if meas.threshold is None
                    else (f" (want {meas.threshold}: {'ok' if meas.ok else 'NO'})")
                )
                console.print(f"      {name} = {meas.value:g}{judged}")
            if r.error:
                console.print(f"      [red]{r.error}[/red]")


def _summary(reports: list[ScenarioReport]) -> None:
    table = Table(title="Summary")
    controls = any(r.control for r in reports)
    for col in ("scenario", *(("run", "as expected") if controls else ()), "verdict"):
        table.add_column(col, overflow="fold")
    for col in ("seconds", "key numbers"):
        table.add_column(col, overflow="fold")
    for rep in reports:
        numbers = []
        for phase in ("symptom", "verify"):
            p = rep.phase(phase)
            if p and p.measurements:
                numbers.append(
                    phase
                    + ": "
                    + ", ".join(
                        f"{k}={v.value:g}" for k, v in p.measurements.items() if v.threshold
                    )
                )
        run_cells = (
            (
                rep.control or "story",
                ("yes" if rep.as_expected else "NO") + f" (must be {rep.expected_verdict})",
            )
            if controls
            else ()
        )
        table.add_row(
            rep.scenario,
            *run_cells,
            f"[{VERDICT_STYLE[rep.verdict]}]{rep.verdict}[/]",
            f"{rep.seconds:.1f}",
            "\n".join(numbers) or (rep.reason or rep.error or ""),
        )
    console.print(table)


def _controls(control: tuple[str, ...], with_controls: bool) -> list[str | None]:
    """The runs of each story: itself (None), and the negative controls asked for."""
    if control and with_controls:
        raise click.UsageError("give --control or --with-controls, not both")
    if with_controls:
        return [None, *CONTROL_NAMES]
    if control:
        return list(dict.fromkeys(control))
    return [None]


@cli.command()
@click.argument("scenario_ids", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every scenario.")
@cluster_options
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Where <id>.json and junit.xml are written.",
)
@click.option(
    "--keep-cluster",
    is_flag=True,
    help="Keep a cluster this run created (for debugging); by default it is deleted.",
)
@click.option(
    "--dry-run", is_flag=True, help="Print every change each phase would make; change nothing."
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    help="Scenarios at once (local/existing). Stories that measure timing run alone and "
    "stories that share a node resource take turns, so results are unchanged.",
)
@click.option(
    "--control",
    "control",
    type=click.Choice(CONTROL_NAMES),
    multiple=True,
    help="Run a negative control instead of the story (repeatable): no-fault withholds "
    "the fault and must end not-reproduced; no-fix withholds the mitigation and must "
    "end not-fixed. Reports: DIR/<id>--<control>.json.",
)
@click.option(
    "--with-controls",
    is_flag=True,
    help="Run each story and both of its controls; the story's report lists the controls.",
)
def run(
    scenario_ids: tuple[str, ...],
    run_all: bool,
    cluster: ClusterOptions,
    report_dir: Path,
    keep_cluster: bool,
    dry_run: bool,
    jobs: int,
    control: tuple[str, ...],
    with_controls: bool,
) -> None:
    """Run scenarios: prove each fault reproduces its symptom and each fix removes it.

    Exit code 0 only if every story passed and every control ended with the
    verdict it must (no-fault: not-reproduced, no-fix: not-fixed)."""
    if run_all and scenario_ids:
        raise click.UsageError("give scenario ids or --all, not both")
    if not run_all and not scenario_ids:
        raise click.UsageError("name at least one scenario (see `kfs list`) or pass --all")
    controls = _controls(control, with_controls)
    chosen = (
        list(scenarios.discover().values()) if run_all else [scenarios.get(i) for i in scenario_ids]
    )
    refuse_uncontrollable(chosen, controls)
    if dry_run:
        for s in chosen:
            for c in controls:
                print_plan(s, c)
        return
    prov = cluster.get(keep_cluster=keep_cluster)
    if jobs > 1 and not prov.shared_cluster:
        raise click.UsageError(
            f"--jobs needs one shared cluster (local or existing); {prov.name} builds one per story"
        )
    ses = Session(
        prov,
        report_dir,
        keep=keep_cluster,
        listener=Progress(),
        say=console.print,
        keep_flag="--keep-cluster",
    )
    ses.check(chosen)  # abilities and the context guard, before the cluster is touched
    _writable(report_dir)
    with ses:
        if jobs > 1 and len(chosen) * len(controls) > 1:
            extra = cluster.argv()
            width = max(len(s.id) for s in chosen) + max(
                len(f"--{c}") if c else 0 for c in controls
            )

            def say(key: str, line: str) -> None:
                console.print(f"{key:<{width}} | {line}", markup=False, soft_wrap=True)

            ses.run_parallel(chosen, jobs, extra, say, controls=controls)
        else:
            for s in chosen:
                for c in controls:
                    what = f" ({c} control: must end {CONTROLS[c].expects})" if c else ""
                    console.print(f"[bold]{s.id}[/bold]: {s.meta.title}{what}")
                    ses.run(s, control=c)
    reports = ses.reports
    _summary(reports)
    console.print(f"reports: {report_dir}/")
    if any(not r.as_expected for r in reports):
        sys.exit(1)


@cli.command()
@click.argument("words", nargs=-1, required=True, metavar="ID | reveal ID")
@cluster_options
@click.option(
    "--report-dir", type=click.Path(path_type=Path), default=Path("reports"), show_default=True
)
@click.option(
    "--reveal-after",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Reveal by itself after this long (for scripts; no prompt is needed).",
)
def gameday(
    words: tuple[str, ...], cluster: ClusterOptions, report_dir: Path, reveal_after: float | None
) -> None:
    """Guided game day: `kfs gameday ID` injects the story's fault and pages you;
    type h for hints and reveal when you have a diagnosis. From another terminal,
    `kfs gameday reveal ID` ends the hold. Ends with a debrief."""
    from failure_stories.gameday.drill import Drill, request_reveal

    if words[0] == "reveal":
        if len(words) != 2:
            raise click.UsageError("usage: kfs gameday reveal ID")
        scenarios.get(words[1])
        console.print(f"reveal requested ({request_reveal(words[1])})")
        return
    if len(words) != 1:
        raise click.UsageError("usage: kfs gameday ID  (or: kfs gameday reveal ID)")
    s = scenarios.get(words[0])
    drill = Drill(
        s,
        lambda text: console.print(text, markup=False, highlight=False),
        interactive=sys.stdin.isatty(),
        reveal_after=reveal_after,
    )
    prov = cluster.get()
    ses = Session(prov, report_dir, listener=Progress(), say=console.print)
    ses.check([s])
    _writable(report_dir)  # abilities and the context guard, before the cluster is touched
    with ses:
        rep = ses.run(s, hold_fault=drill.hold)
        rep.info["time_to_diagnosis_seconds"] = round(drill.time_to_diagnosis, 1)
        rep.info["hints_used"] = drill.hints_shown
        write_json(rep, report_dir)
    drill.debrief(rep)
    if rep.verdict != "passed":
        sys.exit(1)


@cli.command()
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Directory holding <id>.json reports.",
)
def report(report_dir: Path) -> None:
    """Regenerate junit.xml and report.html from the JSON reports in a directory."""
    reports = read_reports(report_dir) if report_dir.is_dir() else []
    if not reports:
        raise click.UsageError(f"no <id>.json reports in {report_dir}: run `kfs run` first")
    junit, page = write_junit(reports, report_dir), write_html(reports, report_dir)
    console.print(f"{len(reports)} reports -> {junit}, {page}")


@cli.command()
@cluster_options
def cleanup(cluster: ClusterOptions) -> None:
    """Remove what crashed runs left behind: kfs namespaces and cluster objects,
    KFS-* iptables chains, outside-world network namespaces, frozen nodes.

    On an existing cluster this deletes, so it needs --allow-context like a run."""
    from failure_stories.run.cleanup import sweep

    prov = cluster.get()
    prov.check_allowed()
    for line in sweep(prov):
        console.print(line)


def _writable(report_dir: Path) -> None:
    """Refuse, before any cluster is touched, a report directory that cannot be written."""
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=report_dir, prefix=".kfs-write-test-"):
            pass
    except OSError as exc:
        raise click.UsageError(
            f"cannot write reports to {report_dir} ({exc.strerror or exc}): "
            "pass --report-dir a directory you can write"
        ) from None


def print_plan(s: scenarios.Scenario, control: str | None = None) -> None:
    """The dry run: the declared changes per phase and the objects they apply."""
    what = f", {control} control" if control else ""
    console.print(f"[bold]{s.id}[/bold] (dry run{what}: nothing is changed)")
    withheld = CONTROLS[control].withholds if control else None
    event = s.meta.plan_for("expose")
    for phase in scenarios.PHASES:
        if phase == withheld:
            console.print(f"  [cyan]{phase}[/cyan]: withheld by the {control} control")
            continue
        steps = s.meta.plan_for(phase)
        if phase in ("symptom", "verify") and event:
            steps = (*(f"the event: {e}" for e in event), *steps)
        if phase == "teardown":
            steps = (*steps, "delete the run's namespace and undo every change above")
        console.print(f"  [cyan]{phase}[/cyan]")
        for step in steps:
            console.print(f"    - {step}", markup=False)
            for name in re.findall(r"[\w.-]+\.yaml", step):
                path = s.manifests / name
                if path.is_file():
                    for obj in scenarios.manifest_objects(path):
                        console.print(f"        {obj}", markup=False)


@cli.group("cluster")
def cluster_group() -> None:
    """Create, delete or inspect the cluster of a provider."""


def _refuse_to_delete(prov: Provider, cluster: ClusterOptions, what: str) -> None:
    if not prov.owns_cluster:
        context = prov.info().get("context")
        allowed = ClusterOptions(
            cluster.provider, cluster.kubeconfig, context or cluster.context, context
        )
        raise GuardRefusedError(
            f"refusing to {what}: kfs never deletes a cluster it did not build "
            f"(`kfs cleanup {' '.join(allowed.argv())}` removes what kfs runs left in it)"
        )


@cluster_group.command()
@cluster_options
def up(cluster: ClusterOptions) -> None:
    """Create the cluster, or reuse it if it runs (idempotent). existing: only
    checks that the context answers (read-only)."""
    prov = cluster.get()
    prov.up()
    _print_status(prov.status())


@cluster_group.command()
@cluster_options
def down(cluster: ClusterOptions) -> None:
    """Delete the cluster and everything it created (build caches stay). Refused
    for existing: kfs never deletes a cluster it did not build."""
    prov = cluster.get()
    _refuse_to_delete(prov, cluster, f"delete the {prov.name} cluster")
    prov.down()
    console.print(f"{prov.name} cluster deleted")


@cluster_group.command()
@cluster_options
def reset(cluster: ClusterOptions) -> None:
    """Delete the cluster, its state and every run's lock records: the host as a
    new machine has it, build caches kept. `make test` starts from here. Refused
    for existing: kfs never deletes a cluster it did not build."""
    from failure_stories.run.cleanup import reset as reset_host

    prov = cluster.get()
    _refuse_to_delete(prov, cluster, f"reset the {prov.name} cluster")
    for line in reset_host(prov):
        console.print(line)


@cluster_group.command()
@cluster_options
def status(cluster: ClusterOptions) -> None:
    """Show the nodes and the kubeconfig path (read-only)."""
    st = cluster.get().status()
    _print_status(st)
    if not st.running:
        sys.exit(1)


def _print_status(st: Any) -> None:
    if not st.running:
        console.print(f"{st.provider} cluster: not running ({st.detail or 'no processes'})")
        return
    console.print(f"{st.provider} cluster: running")
    console.print(f"kubeconfig: {st.kubeconfig}")
    if st.detail:
        console.print(f"components: {st.detail}")
    table = Table()
    for col in ("node", "status", "kind", "kubelet"):
        table.add_column(col)
    for n in st.nodes:
        table.add_row(n["name"], n["ready"], n["kind"], n["kubelet"])
    console.print(table)


cli.add_command(audit)
cli.add_command(operator_group)


def main() -> None:
    cli(prog_name="kfs")


if __name__ == "__main__":
    main()
