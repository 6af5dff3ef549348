"""A self-contained HTML page derived from the JSON reports (which stay the source
of truth): a summary table, and per story the phase timeline, the measurements
with the fault and with the fix, and inline SVG plots of the recorded series.
No scripts, fonts or styles are fetched: the page opens offline."""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from failure_stories.reporting.compare import Comparison
from failure_stories.reporting.model import ScenarioReport

W, H, PAD = 640, 220, 40
COLORS = ("#c0392b", "#2471a3", "#1e8449", "#7d3c98", "#b9770e")
VERDICT_COLOR = {
    "passed": "#1e8449",
    "not-reproduced": "#b9770e",
    "not-fixed": "#c0392b",
    "undecided": "#5d6d7e",
    "error": "#7d3c98",
}

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:980px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left;font-size:14px}th{background:#f3f3f3}.verdict{font-weight:bold;color:#fff;
padding:2px 8px;border-radius:4px}svg{background:#fcfcfc;border:1px solid #ddd;margin:.3em 0}
h2{border-bottom:2px solid #eee;padding-bottom:.2em;margin-top:2em}.bad{color:#c0392b}
.ok{color:#1e8449}figure{margin:0 0 1em}figcaption{font-size:13px;color:#555}
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def _verdict(v: str) -> str:
    return (
        f'<span class="verdict" style="background:{VERDICT_COLOR.get(v, "#555")}">{_esc(v)}</span>'
    )


def _scale(values: Iterable[float], lo_pad: float = 0.0) -> tuple[float, float]:
    vals = list(values)
    lo, hi = min(vals), max(vals)
    lo = min(lo, lo_pad)
    if hi == lo:
        hi = lo + 1
    return lo, hi


def _axes(x_label: str, y_label: str, xr: tuple[float, float], yr: tuple[float, float]) -> str:
    out = [
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#888"/>',
        f'<line x1="{PAD}" y1="10" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>',
        f'<text x="{W // 2}" y="{H - 8}" font-size="12" text-anchor="middle">'
        f"{_esc(x_label)}</text>",
        f'<text x="12" y="{H // 2}" font-size="12" transform="rotate(-90 12 {H // 2})" '
        f'text-anchor="middle">{_esc(y_label)}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = H - PAD - frac * (H - PAD - 10)
        val = yr[0] + frac * (yr[1] - yr[0])
        out.append(
            f'<text x="{PAD - 4}" y="{y + 4:.0f}" font-size="10" text-anchor="end">{val:g}</text>'
        )
        x = PAD + frac * (W - 10 - PAD)
        xv = xr[0] + frac * (xr[1] - xr[0])
        anchor = ("start", "middle", "end")[int(frac * 2)]
        out.append(
            f'<text x="{x:.0f}" y="{H - PAD + 14}" font-size="10" '
            f'text-anchor="{anchor}">{xv:.4g}</text>'
        )
    return "".join(out)


def _polyline(
    points: list[tuple[float, float]],
    xr: tuple[float, float],
    yr: tuple[float, float],
    color: str,
    step: bool,
) -> str:
    def px(x: float) -> float:
        return PAD + (x - xr[0]) / (xr[1] - xr[0]) * (W - 10 - PAD)

    def py(y: float) -> float:
        return H - PAD - (y - yr[0]) / (yr[1] - yr[0]) * (H - PAD - 10)

    coords: list[str] = []
    prev: tuple[float, float] | None = None
    for x, y in points:
        if step and prev is not None:
            coords.append(f"{px(x):.1f},{py(prev[1]):.1f}")
        coords.append(f"{px(x):.1f},{py(y):.1f}")
        prev = (x, y)
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(coords)}"/>'


def _legend(names: list[str]) -> str:
    return "".join(
        f'<text x="{W - 200}" y="{24 + 16 * i}" font-size="12" fill="{COLORS[i % len(COLORS)]}">'
        f"&#9632; {_esc(n)}</text>"
        for i, n in enumerate(names)
    )


def time_plot(title: str, series: dict[str, list[list[float]]], y_label: str) -> str:
    """Values over time since the run started (a step plot: samples hold until the next)."""
    allx = [p[0] for pts in series.values() for p in pts]
    ally = [p[1] for pts in series.values() for p in pts]
    xr, yr = _scale(allx), _scale(ally, 0.0)
    lines = "".join(
        _polyline([(p[0], p[1]) for p in pts], xr, yr, COLORS[i % len(COLORS)], True)
        for i, pts in enumerate(series.values())
    )
    return _figure(
        title,
        _axes("seconds since the run started", y_label, xr, yr) + lines + _legend(list(series)),
    )


def cdf_plot(title: str, samples: dict[str, list[float]], x_label: str) -> str:
    """Cumulative distributions side by side: the shape of the tail at a glance."""
    allx = [v for vals in samples.values() for v in vals]
    xr, yr = _scale(allx, 0.0), (0.0, 1.0)
    lines = ""
    for i, vals in enumerate(samples.values()):
        s = sorted(vals)
        pts = [(v, (k + 1) / len(s)) for k, v in enumerate(s)]
        lines += _polyline(pts, xr, yr, COLORS[i % len(COLORS)], False)
    return _figure(
        title, _axes(x_label, "share of requests", xr, yr) + lines + _legend(list(samples))
    )


def _figure(title: str, body: str) -> str:
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'role="img" aria-label="{_esc(title)}" class="plot">{body}</svg>'
        f"<figcaption>{_esc(title)}</figcaption></figure>"
    )


def plots(report: ScenarioReport) -> list[str]:
    out: list[str] = []
    series = report.series
    latency = {
        k.removeprefix("latency_ms_"): [p[1] for p in v]
        for k, v in series.items()
        if k.startswith("latency_ms_")
    }
    if latency:
        out.append(cdf_plot("Latency distribution per phase", latency, "latency (ms)"))
    rest = {k: v for k, v in series.items() if not k.startswith("latency_ms_") and v}
    # Series sharing a suffix (external_success, internal_success) belong on one plot.
    groups: dict[str, dict[str, list[list[float]]]] = {}
    for name, pts in rest.items():
        key = name.rsplit("_", 1)[-1] if name.endswith("_success") else name
        groups.setdefault(key, {})[name] = pts
    for key, members in groups.items():
        label = "success (1) or failure (0) per call" if key == "success" else key
        out.append(time_plot(key.replace("_", " ") + " over time", members, label))
    return out


def _timeline(report: ScenarioReport) -> str:
    total = sum(p.seconds for p in report.phases) or 1.0
    x = 0.0
    parts = []
    for p in report.phases:
        w = max(p.seconds / total * (W - 20), 1.0 if p.seconds else 0.0)
        color = "#bbb" if p.skipped else ("#7dcea0" if p.ok else "#f1948a")
        parts.append(
            f'<rect x="{10 + x:.1f}" y="10" width="{w:.1f}" height="24" fill="{color}" '
            f'stroke="#fff"><title>{_esc(p.name)}: {p.seconds:.1f}s</title></rect>'
        )
        if w > 40:
            parts.append(
                f'<text x="{10 + x + w / 2:.1f}" y="26" font-size="11" '
                f'text-anchor="middle">{_esc(p.name)}</text>'
            )
        x += w
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="44" class="timeline">'
        + "".join(parts)
        + "</svg>"
    )


def _columns(
    report: ScenarioReport | None, controls: dict[str, ScenarioReport]
) -> list[tuple[str, ScenarioReport, str]]:
    """The measured windows shown side by side: (heading, run, phase)."""
    cols: list[tuple[str, ScenarioReport, str]] = []
    if report is not None:
        cols += [("with the fault (symptom)", report, "symptom")]
        cols += [("with the fix (verify)", report, "verify")]
    if "no-fault" in controls:
        cols += [("without the fault (no-fault control)", controls["no-fault"], "symptom")]
    if "no-fix" in controls:
        cols += [("without the fix (no-fix control)", controls["no-fix"], "verify")]
    return cols


def _measurements(
    report: ScenarioReport | None, controls: dict[str, ScenarioReport] | None = None
) -> str:
    cols = [(h, r.phase(ph)) for h, r, ph in _columns(report, controls or {})]
    names: list[str] = []
    for _h, p in cols:
        for n in p.measurements if p else {}:
            if n not in names:
                names.append(n)
    rows = []
    for n in names:
        cells = []
        for _h, p in cols:
            m = p.measurements.get(n) if p else None
            if m is None:
                cells.append("<td></td>")
                continue
            mark = "" if m.ok is None else (' class="ok"' if m.ok else ' class="bad"')
            want = f" (want {_esc(m.threshold)})" if m.threshold else ""
            cells.append(f"<td{mark}>{m.value:g}{want}</td>")
        rows.append(f"<tr><td>{_esc(n)}</td>{''.join(cells)}</tr>")
    heads = "".join(f"<th>{_esc(h)}</th>" for h, _p in cols)
    return f"<table><tr><th>measurement</th>{heads}</tr>" + "".join(rows) + "</table>"


def _controls_table(controls: dict[str, ScenarioReport]) -> str:
    rows = []
    for name, c in controls.items():
        mark = ' class="ok"' if c.as_expected else ' class="bad"'
        why = c.reason or c.error or ""
        rows.append(
            f"<tr><td>{_esc(name)}</td><td>{_verdict(c.verdict)}</td>"
            f"<td{mark}>{'yes' if c.as_expected else 'no'} (must be {_esc(c.expected_verdict)})"
            f"</td><td>{c.seconds:.1f}</td><td>{_esc(why)}</td></tr>"
        )
    return (
        "<table><tr><th>control</th><th>verdict</th><th>as it must</th><th>seconds</th>"
        "<th>reason or error</th></tr>" + "".join(rows) + "</table>"
    )


def _group(reports: list[ScenarioReport]) -> dict[str, dict[str | None, ScenarioReport]]:
    """Runs per story: None for the story run, else the control's name."""
    out: dict[str, dict[str | None, ScenarioReport]] = {}
    for r in reports:
        out.setdefault(r.scenario, {})[r.control] = r
    return out


def _cell(r: ScenarioReport | None) -> str:
    if r is None:
        return "<td>-</td>"
    mark = "" if r.control is None else (" &#10003;" if r.as_expected else " &#10007;")
    return f"<td>{_verdict(r.verdict)}{mark}</td>"


def render(reports: list[ScenarioReport], comparison: Comparison | None = None) -> str:
    groups = _group(reports)
    any_controls = any(r.control for r in reports)
    control_heads = "<th>no-fault control</th><th>no-fix control</th>" if any_controls else ""
    summary = "".join(
        f'<tr><td><a href="#{_esc(sid)}">{_esc(sid)}</a></td>{_cell(runs.get(None))}'
        + ((_cell(runs.get("no-fault")) + _cell(runs.get("no-fix"))) if any_controls else "")
        + f"<td>{_esc(next(iter(runs.values())).provider)}</td>"
        f"<td>{sum(r.seconds for r in runs.values()):.1f}</td>"
        f"<td>{_esc(' '.join(r.reason or r.error or '' for r in runs.values()).strip())}</td>"
        "</tr>"
        for sid, runs in groups.items()
    )
    sections = []
    for sid, runs in groups.items():
        r = runs.get(None)
        controls = {k: v for k, v in runs.items() if k is not None}
        head = r if r is not None else next(iter(controls.values()))
        errors = "".join(
            f"<li>{_esc(run.key)} {_esc(p.name)}: {_esc(p.error or p.refused or p.undecided)}</li>"
            for run in runs.values()
            for p in run.phases
            if (p.error or p.refused or p.undecided) and not p.skipped
        )
        sections.append(
            f'<h2 id="{_esc(sid)}">{_esc(sid)} '
            + (_verdict(r.verdict) if r is not None else "")
            + "</h2>"
            f"<p>started {_esc(head.started_at)} on {_esc(head.provider)}, {head.seconds:.1f} s"
            + (
                f", artifacts in <code>{_esc(head.artifacts)}</code>"
                if head.artifacts and r is not None
                else ""
            )
            + "</p>"
            + ("<h3>Controls</h3>" + _controls_table(controls) if controls else "")
            + ("<h3>Phases</h3>" + _timeline(r) if r is not None else "")
            + "".join(
                f"<h3>Phases of the {_esc(name)} control</h3>{_timeline(c)}"
                for name, c in controls.items()
            )
            + (f"<ul>{errors}</ul>" if errors else "")
            + "<h3>Measurements</h3>"
            + _measurements(r, controls)
            + "".join(plots(r) if r is not None else [])
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>kube-failure-stories report</title>"
        f"<style>{CSS}</style></head><body><h1>kube-failure-stories report</h1>"
        f"<table><tr><th>scenario</th><th>verdict</th>{control_heads}<th>provider</th>"
        f"<th>seconds{' (all runs)' if any_controls else ''}</th><th>reason or error</th></tr>"
        f"{summary}</table>"
        + (_comparison(comparison) if comparison else "")
        + f"{''.join(sections)}</body></html>\n"
    )


def write_html(
    reports: list[ScenarioReport], report_dir: Path, comparison: Comparison | None = None
) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "report.html"
    path.write_text(render(reports, comparison))
    return path


# The comparison of two runs (`kfs report --compare`), shown above the stories.
def _comparison(comp: Comparison) -> str:
    """Verdict changes, then each judged measurement with its margin to the threshold
    in both runs; a regression or a lost margin is marked."""
    rows = []
    for st in comp.stories:
        before, after = st.verdicts
        mark = ' class="bad"' if st.regressed else (' class="ok"' if st.improved else "")
        rows.append(
            f"<tr><td>{_esc(st.scenario)}</td><td>{_verdict(before)}</td>"
            f"<td>{_verdict(after)}</td><td{mark}>{_esc(st.status)}</td></tr>"
        )
    mrows = []
    for st in comp.stories:
        for m in st.measurements:
            mb, ma = m.margins
            mark = ' class="bad"' if m.lost_margin else ""
            cells = [
                "" if m.before is None else f"{m.before.value:g}",
                "" if m.after is None else f"{m.after.value:g}",
                m.threshold or "",
                "" if mb is None else f"{mb:.3g}",
                "" if ma is None else f"{ma:.3g}",
            ]
            mrows.append(
                f"<tr><td>{_esc(st.scenario)}</td><td>{_esc(m.phase)}</td><td>{_esc(m.name)}</td>"
                + "".join(f"<td>{_esc(c)}</td>" for c in cells[:3])
                + f"<td>{_esc(cells[3])}</td><td{mark}>{_esc(cells[4])}</td></tr>"
            )
    regressed = len(comp.regressed)
    return (
        f'<h2 id="comparison">Compared with {_esc(comp.baseline)}</h2>'
        f'<p class="{"bad" if regressed else "ok"}">'
        + (
            f"{regressed} of {len(comp.stories)} runs regressed"
            if regressed
            else "no run regressed"
        )
        + "</p><table><tr><th>scenario</th><th>baseline</th><th>candidate</th>"
        "<th>change</th></tr>" + "".join(rows) + "</table>"
        "<table><tr><th>scenario</th><th>phase</th><th>measurement</th><th>baseline</th>"
        "<th>candidate</th><th>threshold</th><th>margin before</th><th>margin now</th></tr>"
        + "".join(mrows)
        + "</table>"
    )
