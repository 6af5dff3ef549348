"""Ctrl-C or SIGTERM in the middle of a real run reverts its node-level fault and
deletes what it created, in every phase: checked on the MindTickle story, whose
fault is an iptables chain and whose outside world is a network namespace."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from failure_stories.contract.scenario import PHASES
from failure_stories.core.wait import wait_for
from failure_stories.host import netns
from failure_stories.providers import snat

STORY = "mindtickle-external-snat"


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """`kfs run STORY` as a user starts it, output to a log file."""
    log = tmp_path / "run.log"
    with log.open("w") as out:
        run = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("kfs")),
                "run",
                STORY,
                "--report-dir",
                str(tmp_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={"COLUMNS": "200", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    return run, log


OUTSIDE = "198.51.100.0/24"


def _snat_config(kube) -> str:
    owner = snat.find(kube)
    assert owner is not None
    return snat.read_config(kube, owner) or ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_symptom_reverts_everything(kfs_provider, kube, tmp_path: Path, sig):
    run, log = _start_run(tmp_path)
    try:
        wait_for(
            lambda: f"{STORY} symptom" in log.read_text(), what="the symptom phase", timeout=600
        )
        # The fault is in place when the signal lands: the SNAT owner's list names it.
        assert OUTSIDE in _snat_config(kube)
        run.send_signal(sig)
        assert run.wait(timeout=180) == 130
    finally:
        if run.poll() is None:
            run.kill()
    text = log.read_text()
    netns_name = re.search(r"netns (kfs-ext-\w+)", text).group(1)
    assert OUTSIDE not in _snat_config(kube)
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert netns_name not in netns
    report = json.loads((tmp_path / f"{STORY}.json").read_text())
    assert report["verdict"] == "error"
    symptom = next(p for p in report["phases"] if p["name"] == "symptom")
    assert symptom["error"] == f"interrupted by {sig.name}"
    with pytest.raises(ApiException) as gone:
        kube.core.read_namespace(report["info"]["namespace"])
    assert gone.value.status == 404
    assert "Traceback" not in text


@pytest.mark.parametrize("phase", ["setup", "inject", "mitigate", "verify"])
def test_sigterm_in_every_other_phase_reverts_everything(kfs_provider, kube, tmp_path: Path, phase):
    """The same promise in the phases before the fault, around it and after the fix."""
    run, log = _start_run(tmp_path)
    try:
        wait_for(
            lambda: f"{STORY} {phase}" in log.read_text(),
            what=f"the {phase} phase",
            timeout=600,
            interval=0.1,
        )
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=180) == 130
    finally:
        if run.poll() is None:
            run.kill()
    text = log.read_text()
    assert "Traceback" not in text
    assert OUTSIDE not in _snat_config(kube)
    assert not netns.leftovers()
    report = json.loads((tmp_path / f"{STORY}.json").read_text())
    assert report["verdict"] == "error"
    cut = [p["name"] for p in report["phases"] if p.get("error") == "interrupted by SIGTERM"]
    # A short phase may be over when the signal lands: then the next one is cut.
    assert len(cut) == 1 and PHASES.index(cut[0]) >= PHASES.index(phase)
    after = report["phases"][PHASES.index(cut[0]) + 1 : -1]
    assert all(p.get("skipped") for p in after)
    assert report["phases"][-1]["name"] == "teardown" and report["phases"][-1]["ok"]
    with pytest.raises(ApiException) as gone:
        kube.core.read_namespace(report["info"]["namespace"])
    assert gone.value.status == 404
