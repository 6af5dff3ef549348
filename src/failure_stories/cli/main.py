"""The `kfs` command line."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from failure_stories.cli.audit import audit
from failure_stories.cli.completion import complete_scenario_ids, completion
from failure_stories.cli.operator import operator_group
from failure_stories.cli.options import ClusterOptions, cluster_options
from failure_stories.cli.output import emit, json_alias, output_option
from failure_stories.contract import scenario as scenarios
from failure_stories.contract.controls import CONTROLS
from failure_stories.contract.controls import NAMES as CONTROL_NAMES
from failure_stories.core.errors import (
    EXIT_INFRASTRUCTURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_VERDICT_FAILED,
    GuardRefusedError,
    Interrupted,
    KfsError,
)
from failure_stories.providers.base import Provider
from failure_stories.reporting.compare import compare
from failure_stories.reporting.html import write_html
from failure_stories.reporting.model import (
    ScenarioReport,
    attach_controls,
    read_reports,
    write_json,
    write_junit,
)
from failure_stories.reporting.pushgateway import gateway_url, push
from failure_stories.run.events import Event, EventKind
from failure_stories.run.session import Session, refuse_uncontrollable

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

VERDICT_STYLE = {
    "passed": "bold green",
    "not-reproduced": "bold yellow",
    "not-fixed": "bold red",
    "undecided": "bold cyan",
    "error": "bold magenta",
}


EXIT_CODES = """Exit codes:

\b
  0    every story passed (or the command did what it was asked)
  1    a story's verdict failed (not-reproduced or not-fixed);
       audit: a finding of severity high
  2    usage error: a bad argument, option or scenario definition,
       a context not allowed
  3    infrastructure error: a missing tool, a cluster that does not
       answer, a story whose verdict is error or undecided (too noisy
       to judge) when none failed
  130  interrupted (Ctrl-C, SIGTERM); teardown ran"""


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[red]kfs: error:[/red] {message}", markup=True, soft_wrap=True, highlight=False)
    sys.exit(code)


def _usage_line(exc: click.UsageError) -> str:
    where = f" (see `{exc.ctx.command_path} -h`)" if exc.ctx is not None else ""
    return f"{escape(exc.format_message())}{where}"


class KfsGroup(click.Group):
    """Turns every error into one line on stderr and the documented exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> NoReturn:
        # Not standalone, so that click's errors come back here to be one line.
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `kfs` alone: the help, as click prints it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            _fail(_usage_line(exc), EXIT_USAGE)
        except click.ClickException as exc:
            _fail(escape(exc.format_message()), exc.exit_code)
        except click.Abort:
            _fail("interrupted", EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KfsError as exc:
            _fail(escape(str(exc)), exc.exit_code)
        except Interrupted as exc:
            _fail(f"{exc}; teardown ran", EXIT_INTERRUPTED)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)


def exit_code(reports: list[ScenarioReport]) -> int:
    """1 if a story's verdict failed (or a control did not end as it must), else 3
    if a run could not be judged (error, undecided), else 0."""
    wrong = [r for r in reports if not r.as_expected]
    if any(r.verdict not in ("error", "undecided") for r in wrong):
        return EXIT_VERDICT_FAILED
    return EXIT_INFRASTRUCTURE if wrong else 0


@click.group(
    "kfs",
    cls=KfsGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.version_option(package_name="kube-failure-stories", prog_name="kfs")
def cli() -> None:
    """kube-failure-stories: published Kubernetes incidents as scenarios that prove
    the fault reproduces and the documented mitigation fixes it."""


@cli.command("list")
@output_option
@json_alias
def list_cmd(output: str) -> None:
    """List every scenario with its company, year and title (-o json|yaml: and source)."""
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
    if output != "table":
        emit(rows, output)
        return
    # kubectl's layout: no box, ids whole, only the title wraps (the sources are
    # long URLs: `kfs describe ID` and -o json show them).
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("COMPANY", no_wrap=True)
    table.add_column("YEAR", no_wrap=True)
    table.add_column("TITLE", overflow="fold", ratio=1)
    for r in rows:
        table.add_row(r["id"], r["company"], r["year"], r["title"])
    console.print(table)


@cli.command()
@click.argument("scenario_id", shell_complete=complete_scenario_ids)
@output_option
def describe(scenario_id: str, output: str) -> None:
    """Tell a story: what happened, the fault, the symptom, the fix, what is measured."""
    s = scenarios.get(scenario_id)
    m = s.meta
    if output != "table":
        emit(m.model_dump(mode="json"), output)
        return
    console.print(f"[bold]{m.title}[/bold] - {m.company}, {m.year}")
    console.print(f"source: {m.source}\n")
    for label, text in (
        ("Story", m.story),
        ("Fault", m.fault),
        ("The event that exposes it", m.event),
        ("Symptom", m.symptom),
        ("Mitigation", m.mitigation),
    ):
        if text:
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

    def __init__(self, out: Console | None = None) -> None:
        self.out = out or console

    def __call__(self, event: Event) -> None:
        console = self.out
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


def _summary(reports: list[ScenarioReport], console: Console = console) -> None:
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


@cli.command(epilog=EXIT_CODES)
@click.argument("scenario_ids", nargs=-1, shell_complete=complete_scenario_ids)
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
    help="Scenarios at once, on the one cluster they share. Stories that measure timing "
    "run alone and stories that share a node resource take turns, so results are unchanged.",
)
@output_option
@click.option(
    "--pushgateway",
    default=None,
    metavar="URL",
    help="Also push each story's verdict and measurements as Prometheus metrics to the "
    "Pushgateway at URL (job kfs, one group per scenario).",
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
    output: str,
    pushgateway: str | None,
    control: tuple[str, ...],
    with_controls: bool,
) -> None:
    """Run scenarios: prove each fault reproduces its symptom and each fix removes it.

    -o json|yaml prints the reports (or, with --dry-run, the plans) on stdout and
    the progress on stderr. Exit code 0 only if every story passed and every
    control ended with the verdict it must (no-fault: not-reproduced, no-fix:
    not-fixed)."""
    gateway = gateway_url(pushgateway) if pushgateway is not None else None
    if run_all and scenario_ids:
        raise click.UsageError("give scenario ids or --all, not both")
    if not run_all and not scenario_ids:
        raise click.UsageError("name at least one scenario (see `kfs list`) or pass --all")
    controls = _controls(control, with_controls)
    chosen = (
        list(scenarios.discover().values()) if run_all else [scenarios.get(i) for i in scenario_ids]
    )
    for s in chosen:
        s.check()  # a broken story is refused before any cluster is touched
    refuse_uncontrollable(chosen, controls)
    if dry_run:
        if output != "table":
            emit([plan(s, c) for s in chosen for c in controls], output)
        for s in chosen if output == "table" else ():
            for c in controls:
                print_plan(s, c)
        return
    out = console if output == "table" else err  # stdout stays one document
    prov = cluster.get(keep_cluster=keep_cluster)
    if jobs > 1 and not prov.shared_cluster:
        raise click.UsageError(
            f"--jobs needs a cluster every story shares; {prov.name} builds one per story"
        )
    ses = Session(
        prov,
        report_dir,
        keep=keep_cluster,
        listener=Progress(out),
        say=out.print,
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
                out.print(f"{key:<{width}} | {line}", markup=False, soft_wrap=True)

            ses.run_parallel(chosen, jobs, extra, say, controls=controls)
        else:
            ses.reach()
            for s in chosen:
                for c in controls:
                    what = f" ({c} control: must end {CONTROLS[c].expects})" if c else ""
                    out.print(f"[bold]{s.id}[/bold]: {s.meta.title}{what}")
                    ses.run(s, control=c)
    reports = ses.reports
    _summary(reports, out)
    out.print(f"reports: {report_dir}/")
    if output != "table":
        emit([r.to_json() for r in reports], output)
    code = exit_code(reports)
    if gateway is not None:
        try:
            out.print(f"pushed {push(reports, gateway)} stories' results to {gateway}")
        except KfsError as exc:
            # The verdict is the run's answer; a push that failed only adds to it.
            _fail(str(exc), code or EXIT_INFRASTRUCTURE)
    if code:
        sys.exit(code)


@cli.command()
@click.argument(
    "words", nargs=-1, required=True, metavar="ID | reveal ID", shell_complete=complete_scenario_ids
)
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
        ses.reach()
        rep = ses.run(s, hold_fault=drill.hold)
        rep.info["time_to_diagnosis_seconds"] = round(drill.time_to_diagnosis, 1)
        rep.info["hints_used"] = drill.hints_shown
        write_json(rep, report_dir)
    drill.debrief(rep)
    if code := exit_code([rep]):
        sys.exit(code)


@cli.command()
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Directory holding <id>.json reports.",
)
@click.option(
    "--compare",
    "compare_dirs",
    nargs=2,
    type=click.Path(path_type=Path),
    default=None,
    metavar="BASELINE_DIR CANDIDATE_DIR",
    help="Compare two runs' reports: verdict changes and each measurement's margin to "
    "its threshold; exits 1 if a story that passed in the baseline no longer does. "
    "The candidate's report.html shows the comparison.",
)
def report(report_dir: Path, compare_dirs: tuple[Path, Path] | None) -> None:
    """Regenerate junit.xml and report.html from the JSON reports in a directory,
    or compare two directories of reports (--compare)."""
    if compare_dirs is not None:
        _compare(*compare_dirs)
        return
    reports = _reports_in(report_dir, "--report-dir")
    for story in attach_controls(reports):  # controls run later, in another session
        write_json(story, report_dir)
    junit, page = write_junit(reports, report_dir), write_html(reports, report_dir)
    console.print(f"{len(reports)} reports -> {junit}, {page}")


def _reports_in(report_dir: Path, what: str) -> list[ScenarioReport]:
    try:
        reports = read_reports(report_dir) if report_dir.is_dir() else []
    except (ValueError, KeyError, TypeError) as exc:
        why = f"it has no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise click.UsageError(
            f"{what} {report_dir} holds a JSON file that is no kfs report ({why}): "
            "point it at a directory `kfs run` wrote"
        ) from None
    if not reports:
        raise click.UsageError(f"no <id>.json reports in {what} {report_dir}: run `kfs run` first")
    return reports


def _compare(baseline_dir: Path, candidate_dir: Path) -> None:
    baseline = _reports_in(baseline_dir, "BASELINE_DIR")
    candidate = _reports_in(candidate_dir, "CANDIDATE_DIR")
    _writable(candidate_dir, "CANDIDATE_DIR")  # its report.html shows the comparison
    result = compare(baseline, candidate, str(baseline_dir), str(candidate_dir))
    style = {"regressed": "bold red", "fixed": "bold green"}
    for story in result.stories:
        line = escape(story.describe())
        # One line per story and measurement, whatever the width: CI logs are grepped.
        console.print(
            f"[{style[story.status]}]{line}[/]" if story.status in style else line,
            soft_wrap=True,
        )
        for m in story.measurements:
            line = escape(m.describe(story.scenario))
            console.print(f"  [yellow]{line}[/]" if m.lost_margin else f"  {line}", soft_wrap=True)
    console.print(result.lines()[-1])
    page = write_html(candidate, candidate_dir, result)
    console.print(f"comparison -> {page}")
    if result.regressed:
        sys.exit(1)


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


def _writable(report_dir: Path, option: str = "--report-dir") -> None:
    """Refuse, before any cluster is touched, a report directory that cannot be written."""
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=report_dir, prefix=".kfs-write-test-"):
            pass
    except OSError as exc:
        why = "not a directory" if report_dir.exists() and not report_dir.is_dir() else None
        raise click.UsageError(
            f"cannot write reports to {report_dir} ({why or exc.strerror or exc}): "
            f"pass {option} a directory you can write"
        ) from None


def plan(s: scenarios.Scenario, control: str | None = None) -> dict[str, Any]:
    """The dry run: the declared changes per phase and the objects they apply."""
    withheld = CONTROLS[control].withholds if control else None
    event = s.meta.plan_for("expose")
    phases: dict[str, list[dict[str, Any]]] = {}
    for phase in scenarios.PHASES:
        if phase == withheld:
            phases[phase] = [{"step": f"withheld by the {control} control", "objects": []}]
            continue
        steps = s.meta.plan_for(phase)
        if phase in ("symptom", "verify") and event:
            steps = (*(f"the event: {e}" for e in event), *steps)
        if phase == "teardown":
            steps = (*steps, "delete the run's namespace and undo every change above")
        phases[phase] = [
            {
                "step": step,
                "objects": [
                    str(obj)
                    for name in scenarios.manifest_names(step)
                    if (s.manifests / name).is_file()
                    for obj in scenarios.manifest_objects(s.manifests / name)
                ],
            }
            for step in steps
        ]
    return {"scenario": s.id, "control": control, "dry_run": True, "phases": phases}


def print_plan(s: scenarios.Scenario, control: str | None = None) -> None:
    what = f", {control} control" if control else ""
    console.print(f"[bold]{s.id}[/bold] (dry run{what}: nothing is changed)")
    withheld = CONTROLS[control].withholds if control else None
    for phase, steps in plan(s, control)["phases"].items():
        if phase == withheld:
            console.print(f"  [cyan]{phase}[/cyan]: withheld by the {control} control")
            continue
        console.print(f"  [cyan]{phase}[/cyan]")
        for step in steps:
            console.print(f"    - {step['step']}", markup=False)
            for obj in step["objects"]:
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
@output_option
def status(cluster: ClusterOptions, output: str) -> None:
    """Show the nodes and the kubeconfig path (read-only). Exit code 3 when the
    cluster is not running."""
    st = cluster.get().status()
    if output == "table":
        _print_status(st)
    else:
        emit(
            {
                "provider": st.provider,
                "running": st.running,
                "kubeconfig": str(st.kubeconfig) if st.kubeconfig else None,
                "detail": st.detail,
                "nodes": st.nodes,
            },
            output,
        )
    if not st.running:
        sys.exit(EXIT_INFRASTRUCTURE)


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
cli.add_command(completion)


def main() -> None:
    cli(prog_name="kfs")


if __name__ == "__main__":
    main()
