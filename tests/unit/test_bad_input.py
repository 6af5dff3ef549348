"""Every bad input is one line that says what to do, and exit code 2 (usage) or 3
(infrastructure): the real `kfs` in a subprocess, one row per input. None of them
reaches the shared local cluster: stories are refused before a cluster is touched,
the kubeconfigs point at a closed port on 127.0.0.1, and the cluster commands run
with their own KFS_STATE, KFS_LOCK_DIR and KFS_CACHE."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from failure_stories.host.commands import run as host_run
from failure_stories.providers.local import binaries

from .conftest import SCENARIO_YAML

# What a first `cluster up` builds into the cache: Kubernetes and every go install.
FULL_BUILD_MB = round(
    (binaries.K8S_BYTES + binaries.GO_INSTALL_BYTES * len(binaries.GO_INSTALLS)) / 2**20
)

STEPS = textwrap.dedent(
    """
    def symptom(ctx):
        return {"errors": 9}

    def verify(ctx):
        return {"errors": 0}
    """
)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Case:
    """``setup(tmp)`` returns the argv and extra environment; ``line`` is the one
    line expected, with {tmp} filled in."""

    setup: Callable[[Path], tuple[list[str], dict[str, str]]]
    code: int
    line: str


def story(tmp: Path, yaml_text: str | None = None, steps: str = STEPS, **files: str) -> Path:
    """A scenarios dir holding one story, ``bad``."""
    folder = tmp / "scenarios" / "bad"
    (folder / "manifests").mkdir(parents=True)
    (folder / "scenario.yaml").write_text(yaml_text or SCENARIO_YAML.format(id="bad"))
    (folder / "steps.py").write_text(steps)
    for name, text in files.items():
        (folder / "manifests" / name).write_text(text)
    return tmp / "scenarios"


def in_story(
    yaml_text: str | None = None, steps: str = STEPS, *argv: str
) -> Callable[..., tuple[list[str], dict[str, str]]]:
    def setup(tmp: Path) -> tuple[list[str], dict[str, str]]:
        root = story(tmp, yaml_text, steps)
        return [a.format(tmp=tmp) for a in argv], {"KFS_SCENARIOS_DIR": str(root)}

    return setup


def valid_with(extra: str = "", verify: str = "<= 1") -> str:
    """The conftest's valid story, with more keys or another verify threshold."""
    return SCENARIO_YAML.format(id="bad").replace('"<= 1"', f'"{verify}"') + extra


def kubeconfig(tmp: Path, text: str) -> Path:
    path = tmp / "kubeconfig"
    path.write_text(text)
    return path


def unreachable(tmp: Path) -> Path:
    return kubeconfig(
        tmp,
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Config
            current-context: lab
            clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{closed_port()}"}}}}]
            users: [{{name: u, user: {{token: t}}}}]
            contexts: [{{name: lab, context: {{cluster: c, user: u}}}}]
            """
        ),
    )


def plain(*argv: str, **env: str) -> Callable[[Path], tuple[list[str], dict[str, str]]]:
    return lambda tmp: (
        [a.format(tmp=tmp) for a in argv],
        {k: v.format(tmp=tmp) for k, v in env.items()},
    )


def reports_in(tmp: Path) -> Path:
    d = tmp / "base"
    d.mkdir()
    (d / "x.json").write_text(json.dumps({"scenario": "x"}))  # no verdict, no phases
    return d


MOON = "moonlight-anti-affinity"
USAGE, INFRA = 2, 3
WRITE_HINT = "pass --report-dir a directory you can write (see `kfs run -h`)"
SCHEMA = "; see scenarios/scenario.schema.json"

CASES: dict[str, Case] = {
    "report dir cannot be created": Case(
        plain("run", MOON, "--report-dir", "/proc/kfs-reports"),
        USAGE,
        f"cannot write reports to /proc/kfs-reports (No such file or directory): {WRITE_HINT}",
    ),
    "report dir is a file": Case(
        plain("run", MOON, "--report-dir", "/etc/hostname"),
        USAGE,
        f"cannot write reports to /etc/hostname (not a directory): {WRITE_HINT}",
    ),
    "report dir on a read-only filesystem": Case(
        plain("run", MOON, "--report-dir", "{tmp}/ro/reports"),
        USAGE,
        f"cannot write reports to {{tmp}}/ro/reports (Read-only file system): {WRITE_HINT}",
    ),
    "compare: candidate on a read-only filesystem": Case(
        plain("report", "--compare", "{tmp}/ro", "{tmp}/ro"),
        USAGE,
        "cannot write reports to {tmp}/ro (Read-only file system): pass CANDIDATE_DIR a "
        "directory you can write (see `kfs report -h`)",
    ),
    "compare: a JSON file that is no report": Case(
        lambda tmp: (["report", "--compare", str(reports_in(tmp)), str(tmp)], {}),
        USAGE,
        "BASELINE_DIR {tmp}/base holds a JSON file that is no kfs report (it has no "
        "'phases'): point it at a directory `kfs run` wrote (see `kfs report -h`)",
    ),
    "scenario.yaml: bad YAML": Case(
        in_story("id: bad\ntitle: [a story\nyear: 2020\n", STEPS, "describe", "bad"),
        USAGE,
        "{tmp}/scenarios/bad/scenario.yaml: line 3, column 5: expected ',' or ']', but got "
        "':' (not valid YAML)",
    ),
    "scenario.yaml: an unknown key": Case(
        in_story(valid_with("colour: red\n"), STEPS, "describe", "bad"),
        USAGE,
        "{tmp}/scenarios/bad/scenario.yaml: colour: Extra inputs are not permitted" + SCHEMA,
    ),
    "scenario.yaml: a bad threshold": Case(
        in_story(valid_with(verify="at most 1"), STEPS, "list"),
        USAGE,
        "{tmp}/scenarios/bad/scenario.yaml: checks.verify.errors: bad threshold 'at most 1': "
        "write an operator and a number, e.g. '>= 0.99'" + SCHEMA,
    ),
    "scenario.yaml: a threshold out of range": Case(
        in_story(valid_with(verify="<= 1e999"), STEPS, "list"),
        USAGE,
        "{tmp}/scenarios/bad/scenario.yaml: checks.verify.errors: bad threshold '<= 1e999': "
        "the number is too large for a float; write a finite one" + SCHEMA,
    ),
    "steps.py: a missing phase function": Case(
        in_story(None, "def symptom(ctx):\n    return {}\n", "run", "bad", "--dry-run"),
        USAGE,
        "bad: steps.py defines no verify function: a story must measure its symptom and its "
        "fix, or it proves nothing",
    ),
    "steps.py: a misspelt phase function": Case(
        in_story(None, STEPS + "\ndef mitigation(ctx):\n    pass\n", "run", "bad", "--dry-run"),
        USAGE,
        "bad: steps.py defines mitigation(), which is no phase and would never run: rename it "
        "mitigate(), or start it with _ if it is a helper",
    ),
    "a missing manifest": Case(
        in_story(
            valid_with("plan:\n  inject:\n    - apply fault.yaml (the fault)\n"),
            STEPS,
            "run",
            "bad",
            "--report-dir",
            "{tmp}/reports",
        ),
        USAGE,
        "bad: the plan's inject step 'apply fault.yaml (the fault)' names fault.yaml, which "
        "is not in {tmp}/scenarios/bad/manifests: add it or fix the name",
    ),
    "an unknown scenario": Case(
        plain("run", "moonlight-anti-afinity", "--dry-run"),
        USAGE,
        "unknown scenario 'moonlight-anti-afinity'; did you mean moonlight-anti-affinity, "
        "flant-redis-data-loss? (see `kfs list`)",
    ),
    "KUBECONFIG is garbage": Case(
        lambda tmp: (
            ["cluster", "status", "--provider", "existing"],
            {"KUBECONFIG": str(kubeconfig(tmp, "\x00\x01garbage: [\n"))},
        ),
        USAGE,
        "no usable kubeconfig at {tmp}/kubeconfig (unacceptable character #x0000: special "
        "characters are not allowed): it must be a kubeconfig YAML file as `kubectl config "
        "view --raw` prints one; pass --kubeconfig PATH or fix KUBECONFIG",
    ),
    "KUBECONFIG is YAML but no kubeconfig": Case(
        lambda tmp: (
            ["audit", "--kubeconfig", str(kubeconfig(tmp, "- just\n- a list\n"))],
            {},
        ),
        USAGE,
        "no usable kubeconfig at {tmp}/kubeconfig ({tmp}/kubeconfig holds a YAML list, not a "
        "mapping): "
        "it must be a kubeconfig YAML file as `kubectl config view --raw` prints one; pass "
        "--kubeconfig PATH or fix KUBECONFIG",
    ),
    "KUBECONFIG's server is unreachable (run)": Case(
        lambda tmp: (
            [
                "run",
                MOON,
                "--provider",
                "existing",
                "--allow-context",
                "lab",
                "--report-dir",
                str(tmp / "r"),
            ],
            {"KUBECONFIG": str(unreachable(tmp))},
        ),
        INFRA,
        "the API server of lab does not answer: MaxRetryError at https://127.0.0.1:{port}: "
        "check that the cluster runs and that the kubeconfig's server address is right",
    ),
    "KUBECONFIG's server is unreachable (cluster up)": Case(
        lambda tmp: (
            ["cluster", "up", "--provider", "existing"],
            {"KUBECONFIG": str(unreachable(tmp))},
        ),
        INFRA,
        "the API server of lab does not answer: MaxRetryError at https://127.0.0.1:{port}: "
        "check that the cluster runs and that the kubeconfig's server address is right",
    ),
    "an unknown --provider (run)": Case(
        plain("run", MOON, "--provider", "minikube"),
        USAGE,
        "Invalid value for '--provider': 'minikube' is not one of 'local', 'kind', "
        "'existing'. (see `kfs run -h`)",
    ),
    "an unknown --provider (cluster up)": Case(
        plain("cluster", "up", "--provider", "docker"),
        USAGE,
        "Invalid value for '--provider': 'docker' is not one of 'local', 'kind', "
        "'existing'. (see `kfs cluster up -h`)",
    ),
    "an unknown -o value": Case(
        plain("list", "-o", "xml"),
        USAGE,
        "Invalid value for '-o' / '--output': 'xml' is not one of 'table', 'json', "
        "'yaml'. (see `kfs list -h`)",
    ),
    "a --pushgateway that is no address": Case(
        plain("run", MOON, "--pushgateway", "ftp://127.0.0.1:9091"),
        USAGE,
        "--pushgateway 'ftp://127.0.0.1:9091' is not an address: give http://HOST:PORT "
        "(a Pushgateway listens on 9091 by default)",
    ),
    "a full disk under KFS_CACHE": Case(
        plain(
            "cluster",
            "up",
            KFS_CACHE="{tmp}/full",
            KFS_STATE="{tmp}/state",
            KFS_LOCK_DIR="{tmp}/locks",
        ),
        INFRA,
        "not enough space under KFS_CACHE {tmp}/full for the embedded cluster's binaries "
        f"(0 MB free, about {FULL_BUILD_MB} MB needed): free some space or point KFS_CACHE at "
        "a larger disk",
    ),
}


def mount_tmpfs(path: Path, *options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    host_run(["mount", "-t", "tmpfs", "-o", ",".join(("size=1m", *options)), "tmpfs", str(path)])


A_REPORT = {
    "scenario": "x",
    "verdict": "passed",
    "provider": "stub",
    "started_at": "2026-12-02T00:00:00+00:00",
    "seconds": 1.0,
    "phases": [],
}


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    """A temp dir with a read-only tmpfs at ro/ (holding one report) and a full one at
    full/, unmounted after."""
    mounts = [tmp_path / "ro", tmp_path / "full"]
    mount_tmpfs(mounts[0])
    (mounts[0] / "x.json").write_text(json.dumps(A_REPORT))
    host_run(["mount", "-o", "remount,ro", str(mounts[0])])
    mount_tmpfs(mounts[1])
    with (mounts[1] / "filler").open("wb") as f, pytest.raises(OSError, match="No space left"):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    try:
        yield tmp_path
    finally:
        for m in mounts:
            host_run(["umount", str(m)])


def kfs(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "failure_stories", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "400", **env},
    )


def test_every_bad_input_is_one_line_and_a_documented_code(tmp: Path):
    # All at once: each is a fresh Python process, and the table stays quick.
    started = {}
    for name, case in CASES.items():
        where = tmp / name.replace(" ", "-").replace(":", "").replace("(", "").replace(")", "")
        where.mkdir()
        for mount in ("ro", "full"):
            (where / mount).symlink_to(tmp / mount)
        argv, env = case.setup(where)
        started[name] = (where, env, kfs(argv, env))
    failures = []
    for name, (where, env, proc) in started.items():
        out, errout = proc.communicate(timeout=120)
        case = CASES[name]
        port = env.get("KUBECONFIG", "")
        if port and Path(port).is_file() and "127.0.0.1:" in Path(port).read_text():
            port = Path(port).read_text().split("127.0.0.1:")[1].split('"')[0]
        want = "kfs: error: " + case.line.format(tmp=where, port=port)
        lines = (out + errout).strip().splitlines()
        if proc.returncode != case.code or lines != [want]:
            failures.append(
                f"{name}: exit {proc.returncode} (want {case.code})\n"
                f"  got  {lines}\n  want {[want]}"
            )
    assert not failures, "\n".join(failures)


def test_sigint_while_cluster_up_waits_is_one_line_and_130(tmp_path: Path):
    """SIGINT during `kfs cluster up`, at the point where it waits for another
    process creating the cluster (the test holds that lock). Its own KFS_STATE and
    KFS_LOCK_DIR keep it away from the shared cluster: it never gets the lock, so
    it never looks at a cluster at all."""
    import fcntl

    from failure_stories.providers.local import CLUSTER_LOCK

    locks, state = tmp_path / "locks", tmp_path / "state"
    locks.mkdir()
    lock = locks / f"{CLUSTER_LOCK}.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = kfs(["cluster", "up"], {"KFS_STATE": str(state), "KFS_LOCK_DIR": str(locks)})
        try:
            assert proc.stderr is not None
            waiting = proc.stderr.readline()  # blocks until it says it waits
            assert waiting == (
                "kfs: waiting for another kfs process creating or deleting the local cluster\n"
            )
            proc.send_signal(signal.SIGINT)
            out, errout = proc.communicate(timeout=30)
        finally:
            # Failed before its SIGINT, it would take the lock once the test lets
            # go of it and bring a cluster up in the test's state directory.
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert proc.returncode == 130, errout
    assert (out + errout).strip().splitlines() == ["kfs: error: interrupted"]  # no traceback
    assert not state.exists()  # it created nothing
