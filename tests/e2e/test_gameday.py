"""`kfs gameday` driven the way people and scripts drive it, on the real cluster."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

from failure_stories.core.wait import wait_for

STORY = "moonlight-anti-affinity"
REPO = Path(__file__).resolve().parents[2]


def test_interactive_drill_in_a_terminal(kfs_provider, tmp_path: Path):
    session = f"kfs-gd-{uuid.uuid4().hex[:6]}"
    kfs = shlex.quote(str(Path(sys.executable).with_name("kfs")))
    cmd = (
        f"cd {shlex.quote(str(REPO))} && {kfs} gameday {STORY} "
        f"--report-dir {shlex.quote(str(tmp_path))}; echo EXIT=$?; sleep 300"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "50", cmd], check=True
    )

    def screen() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-S", "-400", "-t", session],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def keys(text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", session, text, "Enter"], check=True)

    try:
        wait_for(lambda: "GAME DAY" in screen(), what="the page", timeout=240)
        page = screen()
        assert "PAGE: web-api availability" in page
        assert "anti-affinity" not in page.split("GAME DAY")[1]  # never the root cause
        keys("h")
        wait_for(lambda: "Hint 1/3" in screen(), what="the first hint", timeout=20)
        keys("reveal")
        wait_for(lambda: "EXIT=" in screen(), what="the drill to end", timeout=240)
        out = screen()
        assert "EXIT=0" in out
        assert "DEBRIEF" in out and "Time to diagnosis" in out and "Takeaways" in out
        assert "outage_seconds:" in out
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, check=False)
    report = json.loads((tmp_path / f"{STORY}.json").read_text())
    assert report["verdict"] == "passed"
    assert report["info"]["hints_used"] == 1
    assert report["info"]["time_to_diagnosis_seconds"] > 0


def test_scripted_drill_is_revealed_from_another_command(kfs_provider, tmp_path: Path):
    kfs = str(Path(sys.executable).with_name("kfs"))
    log = tmp_path / "drill.log"
    with log.open("w") as out:
        drill = subprocess.Popen(
            [kfs, "gameday", STORY, "--report-dir", str(tmp_path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        wait_for(lambda: "No terminal" in log.read_text(), what="the held fault", timeout=240)
        assert "Commands:" not in log.read_text()  # no prompt without a terminal
        done = subprocess.run(
            [kfs, "gameday", "reveal", STORY], capture_output=True, text=True, check=False, cwd=REPO
        )
        assert done.returncode == 0, done.stderr
        assert drill.wait(timeout=240) == 0
    finally:
        if drill.poll() is None:
            drill.terminate()
            drill.wait(timeout=120)
    text = log.read_text()
    assert "DEBRIEF" in text and "Verdict: passed" in text
