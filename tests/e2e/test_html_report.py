"""report.html renders in a real browser (Debian's headless Chromium), offline,
with its plots; it is derived from the JSON reports alone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from failure_stories.reporting.html import write_html
from failure_stories.reporting.model import read_reports

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def report_json(scenario: str, series: dict[str, list[list[float]]]) -> dict:
    phase = {"ok": True, "seconds": 1.0, "measurements": {}}
    phases = [dict(phase, name=n) for n in ("setup", "steady-state", "inject", "mitigate")]
    phases.insert(
        3,
        dict(
            phase,
            name="symptom",
            measurements={"outage_seconds": {"value": 6.5, "threshold": "> 0", "ok": True}},
        ),
    )
    phases.append(
        dict(
            phase,
            name="verify",
            measurements={"outage_seconds": {"value": 0.0, "threshold": "== 0", "ok": True}},
        )
    )
    phases.append(dict(phase, name="teardown"))
    return {
        "scenario": scenario,
        "verdict": "passed",
        "provider": "local",
        "started_at": "2026-11-28T23:00:00+00:00",
        "seconds": 7.0,
        "phases": phases,
        "series": series,
    }


@pytest.mark.skipif(CHROMIUM is None, reason="chromium missing: `make setup` installs it")
def test_report_renders_in_chromium_with_its_plots(tmp_path: Path):
    (tmp_path / "story-a.json").write_text(
        json.dumps(report_json("story-a", {"ready_endpoints": [[0, 3], [5, 0], [9, 3]]}))
    )
    (tmp_path / "story-b.json").write_text(
        json.dumps(
            report_json(
                "story-b",
                {
                    "latency_ms_with_limit": [[1, 150], [2, 190]],
                    "latency_ms_without_limit": [[3, 30], [4, 34]],
                    "external_success": [[1, 1], [2, 0]],
                    "internal_success": [[1, 1], [2, 1]],
                },
            )
        )
    )
    page = write_html(read_reports(tmp_path), tmp_path)
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # The browser parsed the page: both stories, their verdicts and three plots.
    assert dom.count('class="plot"') == 3
    assert len(re.findall(r"<polyline", dom)) == 5
    assert "story-a" in dom and "story-b" in dom
    assert "with the fault (symptom)" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1000,1800",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "http" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page.read_text())
